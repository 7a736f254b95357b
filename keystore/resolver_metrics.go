package keystore

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Help texts are shared with the other cache layers, which register the
// same metric names under their own layer label: a registry refuses one
// name with two help texts.
const (
	CacheRequestsHelp = "Key identity lookups by cache layer and result (hit, negative_hit, miss)."
	CacheEntriesHelp  = "Key identities held by a cache layer."
)

// initMetrics creates the counters (always, so the hit path never checks
// for nil) and registers them when reg is set. The layer is a constant
// label so a Redis layer can register the same names beside this one.
func (r *Resolver) initMetrics(reg prometheus.Registerer) error {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "keyproxy_auth_cache_requests_total",
		Help:        CacheRequestsHelp,
		ConstLabels: prometheus.Labels{"layer": "local"},
	}, []string{"result"})
	r.hits = requests.WithLabelValues("hit")
	r.negativeHits = requests.WithLabelValues("negative_hit")
	r.misses = requests.WithLabelValues("miss")
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "keyproxy_auth_cache_entries",
		Help:        CacheEntriesHelp,
		ConstLabels: prometheus.Labels{"layer": "local"},
	}, func() float64 { return float64(r.pos.EstimatedSize()) })
	if reg == nil {
		return nil
	}
	if err := reg.Register(requests); err != nil {
		return registerError(err)
	}
	if err := reg.Register(entries); err != nil {
		reg.Unregister(requests)
		return registerError(err)
	}
	return nil
}

func registerError(err error) error {
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return fmt.Errorf("keystore: resolver metrics already registered (one Resolver per registry): %w", err)
	}
	return fmt.Errorf("keystore: registering resolver metrics: %w", err)
}
