package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// storeStats is what the store collector asks of the store of record.
type storeStats interface {
	Ping(ctx context.Context) error
	CountActiveKeys(ctx context.Context) (int64, error)
}

const (
	// storeStatsMaxAge bounds how often a scrape reaches the store: several
	// Prometheus servers scraping every few seconds cost one count per
	// interval, not one per scrape.
	storeStatsMaxAge = 15 * time.Second
	// storeStatsTimeout bounds one refresh, well under the usual scrape
	// timeout (10 s), so a hung store shows as keyproxy_store_up 0 instead
	// of a failed scrape.
	storeStatsTimeout = 2 * time.Second
)

var (
	storeUpDesc = prometheus.NewDesc("keyproxy_store_up",
		"1 if the store of record answered its last check (at most 15 s old), else 0.", nil, nil)
	keysActiveDesc = prometheus.NewDesc("keyproxy_keys_active",
		"Unrevoked, unexpired API keys in the store (at most 15 s old); absent while the store cannot be counted.", nil, nil)
)

// storeCollector exports keyproxy_store_up and keyproxy_keys_active. It
// refreshes at scrape time when its figures are older than maxAge, so it
// needs no goroutine of its own and costs nothing when nobody scrapes.
type storeCollector struct {
	store   storeStats
	log     *zap.Logger
	now     func() time.Time
	maxAge  time.Duration
	timeout time.Duration

	mu      sync.Mutex // serialises refreshes: concurrent scrapes share one
	checked time.Time
	up      bool
	active  int64
	counted bool // active is from the last refresh
}

func newStoreCollector(s storeStats, logger *zap.Logger) *storeCollector {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &storeCollector{store: s, log: logger, now: time.Now, maxAge: storeStatsMaxAge, timeout: storeStatsTimeout}
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeUpDesc
	ch <- keysActiveDesc
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.checked.IsZero() || now.Sub(c.checked) >= c.maxAge {
		c.refresh()
		c.checked = now
	}
	up := 0.0
	if c.up {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, up)
	if c.counted {
		ch <- prometheus.MustNewConstMetric(keysActiveDesc, prometheus.GaugeValue, float64(c.active))
	}
}

func (c *storeCollector) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := c.store.Ping(ctx); err != nil {
		c.up, c.counted = false, false
		c.log.Warn("store check failed", zap.Error(err))
		return
	}
	c.up = true
	n, err := c.store.CountActiveKeys(ctx)
	if err != nil {
		c.counted = false
		c.log.Warn("counting active keys failed", zap.Error(err))
		return
	}
	c.active, c.counted = n, true
}

// reloadMetrics say whether the running configuration is the file's. A
// SIGHUP whose file is refused leaves the old settings in force and only a
// log line says so; keyproxy_config_last_reload_successful 0 lets an alert
// catch it, as Prometheus and Alertmanager do for their own files.
type reloadMetrics struct {
	ok, at prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer, now time.Time) (*reloadMetrics, error) {
	m := &reloadMetrics{
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyproxy_config_last_reload_successful",
			Help: "1 if the last configuration load (start or SIGHUP) was applied whole, 0 if it was refused or applied in part.",
		}),
		at: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyproxy_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last configuration load (start or SIGHUP) applied whole.",
		}),
	}
	m.record(true, now) // the configuration the process started with
	if reg != nil {
		for _, c := range []prometheus.Collector{m.ok, m.at} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering reload metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *reloadMetrics) record(ok bool, now time.Time) {
	if !ok {
		m.ok.Set(0)
		return
	}
	m.ok.Set(1)
	m.at.Set(float64(now.UnixNano()) / 1e9)
}
