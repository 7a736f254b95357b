package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wevion/keyproxy/internal/testserver"
)

func newRedisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialTimeout:           200 * time.Millisecond,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// streamEvents reads the whole stream back, checking each entry's shape.
func streamEvents(t *testing.T, c *redis.Client, stream string) []Event {
	t.Helper()
	entries, err := c.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE: %v", err)
	}
	events := make([]Event, 0, len(entries))
	for _, m := range entries {
		raw, ok := m.Values["event"].(string)
		if !ok || len(m.Values) != 1 {
			t.Fatalf("entry %s has fields %v, want only \"event\"", m.ID, m.Values)
		}
		var e Event
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			t.Fatalf("entry %s is not an event: %v", m.ID, err)
		}
		events = append(events, e)
	}
	return events
}

func TestRedisSink_AddsOneEntryPerEventHoldingItsJSON(t *testing.T) {
	srv := testserver.StartRedis(t)
	c := newRedisClient(t, srv.Addr)
	sink := NewRedisSink(c, RedisSinkOptions{})
	batch := []Event{fullEvent(), {ID: "evt_2", Time: time.Unix(5, 0).UTC(), Type: TypeKeyRevoked, Actor: "act_<1>"}}
	if err := sink.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	got := streamEvents(t, c, "keyproxy:audit")
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2", len(got))
	}
	for i := range batch {
		if got[i] != batch[i] {
			t.Fatalf("entry %d\n got %+v\nwant %+v", i, got[i], batch[i])
		}
	}
}

func TestRedisSink_TrimsTheStreamApproximately(t *testing.T) {
	srv := testserver.StartRedis(t)
	c := newRedisClient(t, srv.Addr)
	sink := NewRedisSink(c, RedisSinkOptions{Stream: "audit:test", MaxLen: 100})
	for i := range 20 {
		batch := make([]Event, 50)
		for j := range batch {
			batch[j] = fixedEvent(i*50+j, time.Now().UTC())
		}
		if err := sink.Write(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	n, err := c.XLen(context.Background(), "audit:test").Result()
	if err != nil {
		t.Fatal(err)
	}
	// "~" trims whole stream nodes (100 entries by default), so the
	// length lands between MaxLen and MaxLen plus a node.
	if n < 100 || n > 300 {
		t.Fatalf("XLEN = %d after 1000 adds with MAXLEN ~ 100", n)
	}
}

// recordAll records n events with ids prefix_i and returns the ids.
func recordAll(p *Pipeline, prefix string, n int) []string {
	var want []string
	for i := range n {
		id := fmt.Sprintf("evt_%s_%d", prefix, i)
		want = append(want, id)
		p.Record(Event{ID: id, Time: time.Now(), Type: TypeAPIRequest})
	}
	return want
}

func TestPipeline_RedisPausedSpillsAndCounts(t *testing.T) {
	srv := testserver.StartRedis(t)
	c := newRedisClient(t, srv.Addr)
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	mem, spill := newMemSink("mem"), newMemSink("spill")
	p := newTestPipeline(t, Options{
		BatchSize: 50, FlushInterval: 10 * time.Millisecond, SinkTimeout: 100 * time.Millisecond,
		Retries: 1, RetryBackoff: 10 * time.Millisecond, Spill: spill,
	}, NewRedisSink(c, RedisSinkOptions{}), mem)

	if reply, err := srv.Do("CLIENT", "PAUSE", "1500", "WRITE"); err != nil || !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("CLIENT PAUSE: %q, %v", reply, err)
	}
	want := recordAll(p, "paused", 500)
	eventually(t, "spills while Redis is paused", func() bool { return spill.count() > 0 })
	closePipeline(t, p)

	written := counterValue(t, p.m.events, "redis", "written")
	spilled := counterValue(t, p.m.events, "redis", "spilled")
	if spilled == 0 || written+spilled != len(want) {
		t.Fatalf("redis: written %d + spilled %d, want %d with some spilled", written, spilled, len(want))
	}
	assertSameIDs(t, "the healthy sink", mem.snapshot(), want)
	// A write that timed out may still have landed once the pause ended
	// (at least once), so the stream and the spill together cover every
	// event, and the spill holds exactly what was counted.
	if spill.count() != spilled {
		t.Fatalf("spill holds %d events, counted %d", spill.count(), spilled)
	}
	covered := map[string]bool{}
	for _, e := range append(streamEvents(t, c, "keyproxy:audit"), spill.snapshot()...) {
		covered[e.ID] = true
	}
	for _, id := range want {
		if !covered[id] {
			t.Fatalf("event %s is neither in the stream nor spilled", id)
		}
	}
}

func TestPipeline_RedisKilledSpillsThenRecovers(t *testing.T) {
	srv := testserver.StartRedis(t)
	c := newRedisClient(t, srv.Addr)
	spill := newMemSink("spill")
	p := newTestPipeline(t, Options{
		BatchSize: 50, FlushInterval: 10 * time.Millisecond, SinkTimeout: 200 * time.Millisecond,
		RetryBackoff: 5 * time.Millisecond, Spill: spill,
	}, NewRedisSink(c, RedisSinkOptions{}))

	srv.Kill()
	during := recordAll(p, "down", 200)
	eventually(t, "every event recorded during the outage to be spilled", func() bool { return spill.count() == len(during) })
	assertSameIDs(t, "spill", spill.snapshot(), during)

	srv.Start()
	after := recordAll(p, "up", 200)
	eventually(t, "writes to resume", func() bool {
		n, err := c.XLen(context.Background(), "keyproxy:audit").Result()
		return err == nil && n == int64(len(after))
	})
	closePipeline(t, p)
	assertSameIDs(t, "stream after the restart", streamEvents(t, c, "keyproxy:audit"), after)
	if got := counterValue(t, p.m.events, "redis", "spilled"); got != len(during) {
		t.Fatalf("spilled = %d, want %d", got, len(during))
	}
	if got := counterValue(t, p.m.events, "redis", "written"); got != len(after) {
		t.Fatalf("written = %d, want %d", got, len(after))
	}
}
