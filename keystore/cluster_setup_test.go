package keystore_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// clRedisClient is a client as the binary builds one: context deadlines
// bound every call.
func clRedisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr: addr, ContextTimeoutEnabled: true,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
	})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func clStore(t testing.TB) *keystore.SQLite {
	t.Helper()
	s, err := keystore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// clKey stores a new key and returns it.
func clKey(t testing.TB, s keystore.Store, team, user string) keystore.Key {
	t.Helper()
	f, _ := keystore.NewFormat("wev_")
	raw, err := f.Generate()
	if err != nil {
		t.Fatal(err)
	}
	id, err := keystore.NewID()
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(context.Background(), keystore.NewKey{
		ID: id, Hash: keystore.HashKey(raw), Start: f.Start(raw), Name: "k", UserID: user, TeamID: team,
		Role: "owner", MaxActivePerTeam: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// switchBackend passes reads to a store until it is switched off, then
// fails them as a store that went away does.
type switchBackend struct {
	next  keystore.Backend
	down  atomic.Bool
	calls atomic.Int64
}

func (b *switchBackend) Resolve(ctx context.Context, h keystore.Hash) (keystore.Identity, error) {
	b.calls.Add(1)
	if b.down.Load() {
		return keystore.Identity{}, errors.New("connection refused")
	}
	return b.next.Resolve(ctx, h)
}

// gateBackend, when armed, holds the next read after it has read the
// store, until the test lets it go: a store read that a revocation
// overtakes. Later reads pass.
type gateBackend struct {
	next    keystore.Backend
	armed   atomic.Bool
	read    chan struct{}
	release chan struct{}
}

func newGate(next keystore.Backend) *gateBackend {
	return &gateBackend{next: next, read: make(chan struct{}, 1), release: make(chan struct{})}
}

func (b *gateBackend) Resolve(ctx context.Context, h keystore.Hash) (keystore.Identity, error) {
	id, err := b.next.Resolve(ctx, h)
	if b.armed.CompareAndSwap(true, false) {
		b.read <- struct{}{}
		<-b.release
	}
	return id, err
}

// replica is one keyproxy replica's key path: in-process cache, Redis
// cache, store, and the cluster fan-out.
type replica struct {
	res     *keystore.Resolver
	rc      *keystore.RedisCache
	cl      *keystore.Cluster
	reg     *prometheus.Registry
	backend *switchBackend
	local   *recordingLocal
}

type replicaOpts struct {
	ttl          time.Duration // cache.ttl, default 10s
	ackTimeout   time.Duration
	heartbeat    time.Duration
	heartbeatTTL time.Duration
	id           string
	logger       *zap.Logger
}

func startReplica(t testing.TB, addr string, store keystore.Backend, o replicaOpts) *replica {
	t.Helper()
	if o.ttl == 0 {
		o.ttl = 10 * time.Second
	}
	if o.heartbeat == 0 {
		o.heartbeat = 200 * time.Millisecond
	}
	r := &replica{reg: prometheus.NewRegistry(), backend: &switchBackend{next: store}}
	rdb := clRedisClient(t, addr)
	var err error
	if r.rc, err = keystore.NewRedisCache(rdb, r.backend, keystore.RedisCacheOptions{TTL: o.ttl, Registerer: r.reg}); err != nil {
		t.Fatal(err)
	}
	if r.res, err = keystore.NewResolver(r.rc, keystore.ResolverOptions{TTL: o.ttl, Registerer: r.reg}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.res.Close)
	r.local = &recordingLocal{Resolver: r.res}
	if r.cl, err = keystore.NewCluster(rdb, r.local, r.rc, keystore.ClusterOptions{
		ReplicaID: o.id, AckTimeout: o.ackTimeout, HeartbeatInterval: o.heartbeat, HeartbeatTTL: o.heartbeatTTL,
		Registerer: r.reg, Logger: o.logger,
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.cl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cl.Close() })
	// Start waits for the first subscription attempt only that long: on a
	// loaded machine it can time out, and the replica then listens and
	// registers a heartbeat later. The tests count replicas from the start.
	for !r.cl.Healthy() || rdb.ZScore(ctx, keystore.DefaultReplicasKey, r.cl.ReplicaID()).Err() != nil {
		if ctx.Err() != nil {
			t.Fatalf("replica %s not subscribed and registered within 5s", r.cl.ReplicaID())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// recordingLocal is the replica's Resolver, noting when each hash was
// dropped so a test can time propagation where it happens.
type recordingLocal struct {
	*keystore.Resolver
	mu      sync.Mutex
	dropped map[keystore.Hash]time.Time
	flushes atomic.Int64
}

func (l *recordingLocal) Invalidate(hashes ...keystore.Hash) {
	l.Resolver.Invalidate(hashes...)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped == nil {
		l.dropped = make(map[keystore.Hash]time.Time)
	}
	for _, h := range hashes {
		l.dropped[h] = now
	}
}

func (l *recordingLocal) Flush() {
	l.Resolver.Flush()
	l.flushes.Add(1)
}

func (l *recordingLocal) droppedAt(h keystore.Hash) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.dropped[h]
	return at, ok
}

// status resolves h on r as the proxy would decide it.
func (r *replica) status(t testing.TB, h keystore.Hash) keystore.Status {
	t.Helper()
	id, err := r.res.Resolve(context.Background(), h)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return id.Check(time.Now())
}

func (r *replica) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// eventually polls cond until it holds or d passes, and reports how long
// it took.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func redisCtx(t testing.TB) context.Context { return testserver.Context(t) }
