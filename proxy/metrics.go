package proxy

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// durationBuckets reach down to half a millisecond: most of what this
// proxy adds is far below prometheus.DefBuckets' 5 ms floor.
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// maxCode bounds the status codes whose counter children are cached;
// net/http only reads three-digit codes.
const maxCode = 1000

type boundCounter struct{ prometheus.Counter }

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upstream prometheus.Histogram
	inFlight prometheus.Gauge

	// refused counts refusals of keys the store knows, by
	// keystore.Identity.Refusal; refusedBy holds its children, bound at
	// start.
	refused   *prometheus.CounterVec
	refusedBy map[string]prometheus.Counter

	durationBy [numOutcomes]prometheus.Observer
	// counters caches children by outcome and status code: a label lookup
	// hashes and locks, a cached child is one atomic load.
	counters [numOutcomes][maxCode]atomic.Pointer[boundCounter]
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_http_requests_total",
			Help: "Data-plane requests by response status code and outcome.",
		}, []string{"code", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyproxy_http_request_duration_seconds",
			Help:    "Time from receiving a data-plane request to handing back its response, by outcome.",
			Buckets: durationBuckets,
		}, []string{"outcome"}),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyproxy_upstream_duration_seconds",
			Help:    "Time until the backend's response headers (or failure).",
			Buckets: durationBuckets,
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyproxy_http_requests_in_flight",
			Help: "Data-plane requests being served.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_auth_refused_keys_total",
			Help: "Requests refused with a key the store knows, by reason (revoked, expired, owner_inactive, owner_moved); unknown and malformed keys are the rest of outcome invalid_key.",
		}, []string{"reason"}),
	}
	// keystore.Identity.Refusal's answers, exported from the first scrape.
	m.refusedBy = map[string]prometheus.Counter{}
	for _, r := range []string{"revoked", "expired", "owner_inactive", "owner_moved"} {
		m.refusedBy[r] = m.refused.WithLabelValues(r)
	}
	for o := range numOutcomes {
		m.durationBy[o] = m.duration.WithLabelValues(o.String())
	}
	// The refusals' codes are known: bind them now so they are exported
	// from the first scrape and rate() sees their first increment.
	for _, c := range []struct {
		o    outcome
		code int
	}{
		{outcomeMissingKey, 401}, {outcomeInvalidKey, 401}, {outcomeInactiveTeam, 403},
		{outcomeRateLimited, 429}, {outcomeUnavailable, 503},
		{outcomeUpstreamError, 502}, {outcomeUpstreamError, 504},
		{outcomeThrottled, 429}, {outcomeMethodRefused, 405}, {outcomeBadBody, 400},
	} {
		m.counter(c.o, c.code)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.upstream, m.inFlight, m.refused} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("proxy: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) counter(o outcome, code int) prometheus.Counter {
	if code < 0 || code >= maxCode {
		return m.requests.WithLabelValues(strconv.Itoa(code), o.String())
	}
	slot := &m.counters[o][code]
	if c := slot.Load(); c != nil {
		return c.Counter
	}
	// Racing first uses store the same child: WithLabelValues is idempotent.
	c := &boundCounter{m.requests.WithLabelValues(strconv.Itoa(code), o.String())}
	slot.Store(c)
	return c.Counter
}

// countRefused counts a refusal of a key the store knows under reason.
func (m *metrics) countRefused(reason string) {
	if c, ok := m.refusedBy[reason]; ok {
		c.Inc()
	}
}

func (m *metrics) observe(o outcome, code int, d time.Duration) {
	m.counter(o, code).Inc()
	m.durationBy[o].Observe(d.Seconds())
}
