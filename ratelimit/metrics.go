package ratelimit

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// decisionCounters are the two series of keyproxy_ratelimit_decisions_total
// one backend writes, resolved once so the hot path only increments.
type decisionCounters struct {
	allowed, limited prometheus.Counter
}

func (d decisionCounters) count(allowed bool) {
	if allowed {
		d.allowed.Inc()
	} else {
		d.limited.Inc()
	}
}

func newDecisionCounters(reg prometheus.Registerer, backend string) decisionCounters {
	vec := decisionsVec(reg)
	return decisionCounters{
		allowed: vec.WithLabelValues(backend, "allowed"),
		limited: vec.WithLabelValues(backend, "limited"),
	}
}

// newShareCounter counts the requests a Redis limiter admitted from a
// user's share (share.go): a share never refuses, Redis does.
func newShareCounter(reg prometheus.Registerer) prometheus.Counter {
	return decisionsVec(reg).WithLabelValues("share", "allowed")
}

func decisionsVec(reg prometheus.Registerer) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyproxy_ratelimit_decisions_total",
		Help: "Rate-limit decisions by the backend that made them and their result.",
	}, []string{"backend", "result"}))
}

// register registers c, or returns the collector already registered under
// its name: a Local and the Redis limiter in front of it share the
// decisions counter on one registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// A conflicting descriptor is a wiring bug, found at start-up.
		panic(err)
	}
	return c
}
