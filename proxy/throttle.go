package proxy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/wevion/keyproxy/ratelimit"
)

// throttleShards spreads client addresses over independently locked maps,
// so concurrent requests from different clients rarely contend.
const throttleShards = 64

// DefaultThrottleClients bounds the client addresses the invalid-key
// throttle remembers when Config.ThrottleClients is zero.
const DefaultThrottleClients = 100_000

// throttle limits, per client address, how many unknown keys that passed
// the format check a client may present. Such a key costs a cache miss and
// a store query, and random well-formed keys are cheap to make (the
// checksum is not a secret), so without it a flood of them would become a
// flood of store queries. A client over its budget is refused before any
// lookup until the budget refills.
//
// It is GCRA over one int64 per client: the theoretical arrival time of the
// next failure, in nanoseconds since the throttle's epoch (monotonic).
type throttle struct {
	interval  int64 // ns per failure at the sustained rate
	tolerance int64 // (burst-1) intervals: how far ahead tat may run
	perShard  int
	epoch     time.Time
	shards    [throttleShards]throttleShard
}

type throttleShard struct {
	mu  sync.Mutex
	tat map[netip.Addr]int64
	_   [40]byte // keep neighbouring shards' locks off one cache line
}

// newThrottle returns nil (no throttling) for a zero Limit.
func newThrottle(l ratelimit.Limit, clients int) *throttle {
	if l.Requests <= 0 || l.Per <= 0 || l.Burst <= 0 {
		return nil
	}
	if clients <= 0 {
		clients = DefaultThrottleClients
	}
	interval := int64(l.Per) / int64(l.Requests)
	t := &throttle{
		interval:  max(interval, 1),
		tolerance: int64(l.Burst-1) * max(interval, 1),
		perShard:  max(clients/throttleShards, 1),
		epoch:     time.Now(),
	}
	for i := range t.shards {
		t.shards[i].tat = make(map[netip.Addr]int64)
	}
	return t
}

// throttleKey is the unit a client is counted by: its IPv4 address, or its
// IPv6 /64, which one subscriber usually holds whole.
func throttleKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (t *throttle) shard(a netip.Addr) *throttleShard {
	var h uint64
	for _, c := range a.As16() {
		h = h*31 + uint64(c)
	}
	return &t.shards[h%throttleShards]
}

// blocked reports whether a is over its budget at now and, if so, how long
// until it may present a key again.
func (t *throttle) blocked(a netip.Addr, now time.Time) (time.Duration, bool) {
	n := int64(now.Sub(t.epoch))
	s := t.shard(a)
	s.mu.Lock()
	tat, ok := s.tat[a]
	s.mu.Unlock()
	if !ok || tat-n <= t.tolerance {
		return 0, false
	}
	return time.Duration(tat - n - t.tolerance), true
}

// fail charges one unknown key to a.
func (t *throttle) fail(a netip.Addr, now time.Time) {
	n := int64(now.Sub(t.epoch))
	s := t.shard(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	tat, ok := s.tat[a]
	if !ok && len(s.tat) >= t.perShard {
		s.sweep(n, t.perShard)
	}
	s.tat[a] = max(tat, n) + t.interval
}

// sweepScan bounds the entries one sweep looks at, so a flood of new
// addresses costs each insert a constant amount of work.
const sweepScan = 64

// sweep makes room: among up to sweepScan entries (map order is random, so
// a client cannot choose which), those whose budget has refilled go, since
// they carry no state; if that freed nothing, the first one looked at goes.
func (s *throttleShard) sweep(now int64, limit int) {
	var first netip.Addr
	seen := 0
	for a, tat := range s.tat {
		if seen == 0 {
			first = a
		}
		if tat <= now {
			delete(s.tat, a)
		}
		if seen++; seen == sweepScan {
			break
		}
	}
	if len(s.tat) >= limit {
		delete(s.tat, first)
	}
}
