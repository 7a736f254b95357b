package audit

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Why an event did not reach a sink the normal way. Bounded: these are the
// only values of the reason label.
const (
	ReasonQueueFull   = "queue_full"   // Record waited MaxWait for room in the queue
	ReasonSinkBacklog = "sink_backlog" // the sink's own backlog stayed full for MaxWait
	ReasonSinkError   = "sink_error"   // the sink failed every attempt
	ReasonClosed      = "closed"       // Record after Close
	ReasonShutdown    = "shutdown"     // Close's context ended before the sink caught up
)

var reasons = []string{ReasonQueueFull, ReasonSinkBacklog, ReasonSinkError, ReasonClosed, ReasonShutdown}

type metrics struct {
	events   *prometheus.CounterVec   // sink, result
	spilled  *prometheus.CounterVec   // reason
	dropped  *prometheus.CounterVec   // reason
	duration *prometheus.HistogramVec // sink
}

// sinkMetrics are one sink's children, resolved once so that counting on
// the write path is a single atomic add, not a label lookup.
type sinkMetrics struct {
	written, spilled, dropped prometheus.Counter
	duration                  prometheus.Observer
}

func newMetrics() *metrics {
	return &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_audit_events_total",
			Help: "Audit events by sink and fate: written to the sink, spilled to the spill sink instead, or dropped because the spill sink failed too.",
		}, []string{"sink", "result"}),
		spilled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_audit_spilled_total",
			Help: "Audit events written to the spill sink, by reason.",
		}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_audit_dropped_total",
			Help: "Audit events lost because even the spill sink failed, by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyproxy_audit_batch_duration_seconds",
			Help:    "Time of one attempt to write a batch to a sink.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"sink"}),
	}
}

func (m *metrics) forSink(name string) sinkMetrics {
	return sinkMetrics{
		written:  m.events.WithLabelValues(name, "written"),
		spilled:  m.events.WithLabelValues(name, "spilled"),
		dropped:  m.events.WithLabelValues(name, "dropped"),
		duration: m.duration.WithLabelValues(name),
	}
}

// register publishes the collectors; reasons start at zero so that an
// alert on increase() fires on the first loss, not the second.
func (m *metrics) register(r prometheus.Registerer, queueLength prometheus.Collector) error {
	for _, reason := range reasons {
		m.spilled.WithLabelValues(reason)
		m.dropped.WithLabelValues(reason)
	}
	if r == nil {
		return nil
	}
	cs := []prometheus.Collector{m.events, m.spilled, m.dropped, m.duration, queueLength}
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			// Leave the registry as it was, so the caller can retry
			// or fail without a half-registered pipeline.
			for _, done := range cs[:i] {
				r.Unregister(done)
			}
			return fmt.Errorf("audit: registering metrics: %w", err)
		}
	}
	return nil
}
