package keystore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// redisCacheMetrics are, with their series:
//
//	keyproxy_auth_cache_requests_total{layer="redis",result="hit|miss|error|skipped"}
//	    skipped: Redis failed within the probe interval, the store answered
//	keyproxy_redis_cache_writebacks_total{result="stored|superseded|skipped|error"}
//	    superseded: an invalidation raced the fill and won (the guard working)
//	    skipped: the fill was too slow, or its hash's invalidation is pending
//	keyproxy_redis_cache_pending_invalidations
//	    invalidations waiting for Redis to come back
type redisCacheMetrics struct {
	hit, miss, errors, skipped                              prometheus.Counter
	writeStored, writeSuperseded, writeSkipped, writeErrors prometheus.Counter
}

func newRedisCacheMetrics(reg prometheus.Registerer, pending func() float64) (redisCacheMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "keyproxy_auth_cache_requests_total",
		Help:        CacheRequestsHelp,
		ConstLabels: prometheus.Labels{"layer": "redis"},
	}, []string{"result"})
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyproxy_redis_cache_writebacks_total",
		Help: "Identities read from the store and written back to Redis, by result (stored, superseded by an invalidation, skipped, error).",
	}, []string{"result"})
	pendingG := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyproxy_redis_cache_pending_invalidations",
		Help: "Key invalidations waiting for Redis to be reachable again.",
	}, pending)
	m := redisCacheMetrics{
		hit: requests.WithLabelValues("hit"), miss: requests.WithLabelValues("miss"),
		errors: requests.WithLabelValues("error"), skipped: requests.WithLabelValues("skipped"),
		writeStored: writes.WithLabelValues("stored"), writeSuperseded: writes.WithLabelValues("superseded"),
		writeSkipped: writes.WithLabelValues("skipped"), writeErrors: writes.WithLabelValues("error"),
	}
	if err := registerAll(reg, requests, writes, pendingG); err != nil {
		return redisCacheMetrics{}, fmt.Errorf("keystore: redis cache metrics: %w", err)
	}
	return m, nil
}

// registerAll registers every collector or none: a half-registered set
// would make the retry after a fixed wiring error fail too.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}
