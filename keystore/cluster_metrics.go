package keystore

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// clusterMetrics are, with their series:
//
//	keyproxy_revocation_propagation_seconds   from Evict's start to the last replica's ack,
//	                                           for evictions every live replica confirmed
//	keyproxy_revocation_acks_total{result="confirmed|timeout"}
//	                                           per other replica and eviction
//	keyproxy_redis_up                         1 if the last heartbeat reached Redis
//	keyproxy_cluster_replicas                 live replicas at the last heartbeat
//	keyproxy_cluster_subscribed               1 while the eviction subscription is confirmed
//	keyproxy_cluster_resubscribes_total       subscriptions restored (each flushed the local cache)
//	keyproxy_cluster_invalid_messages_total   eviction or ack messages that failed to parse
type clusterMetrics struct {
	propagation     prometheus.Histogram
	acks            struct{ confirmed, timeout prometheus.Counter }
	redisUp         prometheus.Gauge
	replicas        prometheus.Gauge
	subscribed      prometheus.Gauge
	resubscribes    prometheus.Counter
	invalidMessages prometheus.Counter
}

func newClusterMetrics(reg prometheus.Registerer) (clusterMetrics, error) {
	var m clusterMetrics
	m.propagation = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyproxy_revocation_propagation_seconds",
		Help:    "Time from an eviction's start until every live replica confirmed it.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	acks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyproxy_revocation_acks_total",
		Help: "Eviction acknowledgements expected from other replicas, by result (confirmed, timeout).",
	}, []string{"result"})
	m.acks.confirmed = acks.WithLabelValues("confirmed")
	m.acks.timeout = acks.WithLabelValues("timeout")
	m.redisUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keyproxy_redis_up",
		Help: "1 if this replica's last heartbeat reached Redis, else 0.",
	})
	m.replicas = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keyproxy_cluster_replicas",
		Help: "Live replicas registered in Redis at the last heartbeat.",
	})
	m.subscribed = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keyproxy_cluster_subscribed",
		Help: "1 while this replica's eviction subscription is confirmed, else 0.",
	})
	m.resubscribes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyproxy_cluster_resubscribes_total",
		Help: "Eviction subscriptions restored after a loss; each flushed the local cache.",
	})
	m.invalidMessages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyproxy_cluster_invalid_messages_total",
		Help: "Eviction or acknowledgement messages that could not be parsed.",
	})
	if err := registerAll(reg, m.propagation, acks, m.redisUp, m.replicas, m.subscribed, m.resubscribes, m.invalidMessages); err != nil {
		return clusterMetrics{}, fmt.Errorf("keystore: cluster metrics: %w", err)
	}
	return m, nil
}
