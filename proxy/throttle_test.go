package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/wevion/keyproxy/ratelimit"
)

func TestThrottle_BudgetRefillsAndMemoryStaysBounded(t *testing.T) {
	th := newThrottle(ratelimit.Limit{Requests: 10, Per: time.Second, Burst: 3}, throttleShards*4)
	a := netip.MustParseAddr("192.0.2.1")
	now := th.epoch
	for i := range 3 {
		if _, blocked := th.blocked(a, now); blocked {
			t.Fatalf("blocked after %d failures, burst is 3", i)
		}
		th.fail(a, now)
	}
	wait, blocked := th.blocked(a, now)
	if !blocked || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("after the burst: blocked %v, wait %s (want ≤ one interval, 100ms)", blocked, wait)
	}
	if _, blocked := th.blocked(a, now.Add(wait)); blocked {
		t.Fatal("still blocked once the wait it announced is over")
	}
	if _, blocked := th.blocked(netip.MustParseAddr("192.0.2.2"), now); blocked {
		t.Fatal("another address is blocked")
	}

	// A flood of distinct addresses: memory stays bounded.
	for i := range 100_000 {
		th.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	n := 0
	for i := range th.shards {
		n += len(th.shards[i].tat)
	}
	if n > throttleShards*4 {
		t.Errorf("%d addresses remembered, bound %d", n, throttleShards*4)
	}
}

func TestThrottleKey_IPv6CountsPer64(t *testing.T) {
	a := throttleKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1"))
	b := throttleKey(netip.MustParseAddr("2001:db8:1:2:bbbb::2"))
	c := throttleKey(netip.MustParseAddr("2001:db8:1:3::1"))
	if a != b || a == c {
		t.Errorf("keys %s %s %s: want one per /64", a, b, c)
	}
	if k := throttleKey(netip.MustParseAddr("::ffff:192.0.2.1")); k != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("mapped IPv4 keyed as %s", k)
	}
}

func BenchmarkThrottle(b *testing.B) {
	th := newThrottle(ratelimit.Limit{Requests: 60, Per: time.Minute, Burst: 30}, 0)
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	th.fail(a, now)
	b.Run("blocked check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			th.blocked(a, now)
		}
	})
	b.Run("new address when full", func(b *testing.B) {
		small := newThrottle(ratelimit.Limit{Requests: 60, Per: time.Minute, Burst: 30}, throttleShards*16)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			small.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
		}
	})
}
