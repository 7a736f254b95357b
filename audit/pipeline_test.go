package audit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestPipeline_DeliversEveryEventToEverySinkUnderConcurrentLoad(t *testing.T) {
	a, b := newMemSink("a"), newMemSink("b")
	// Back-pressure waits a minute, not 100 ms, before it spills: the
	// producers here outrun the sinks by design, and on a loaded CI machine
	// under -race the batcher stalled past 100 ms (17568 of 20000 events
	// delivered, the rest dropped for want of a spill sink). Delivery is
	// what this test is about; spilling has its own tests.
	p := newTestPipeline(t, Options{BatchSize: 64, QueueSize: 1024, MaxWait: time.Minute}, a, b)
	const workers, each = 8, 2500
	var (
		mu   sync.Mutex
		want []string
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]string, 0, each)
			for i := range each {
				id := fmt.Sprintf("evt_w%d_%d", w, i)
				p.Record(Event{ID: id, Type: TypeAPIRequest})
				mine = append(mine, id)
			}
			mu.Lock()
			want = append(want, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	closePipeline(t, p)
	assertSameIDs(t, "sink a", a.snapshot(), want)
	assertSameIDs(t, "sink b", b.snapshot(), want)
	for _, s := range []string{"a", "b"} {
		if got := counterValue(t, p.m.events, s, "written"); got != workers*each {
			t.Errorf("written{sink=%s} = %d, want %d", s, got, workers*each)
		}
	}
	for _, n := range a.batches {
		if n > 64 {
			t.Fatalf("a batch of %d events exceeds BatchSize 64", n)
		}
	}
}

func TestPipeline_FlushesAPartialBatchAfterFlushInterval(t *testing.T) {
	sink := newMemSink("mem")
	p := newTestPipeline(t, Options{FlushInterval: 20 * time.Millisecond}, sink)
	for range 3 {
		p.Record(Event{Type: TypeAPIRequest})
	}
	eventually(t, "3 events written without Close", func() bool { return sink.count() == 3 })
}

func TestPipeline_RetriesAFailedBatchUntilItSucceeds(t *testing.T) {
	sink := newMemSink("flaky")
	sink.fail = func(attempt int) error {
		if attempt <= 2 {
			return errBackendDown
		}
		return nil
	}
	spill := newMemSink("spill")
	p := newTestPipeline(t, Options{RetryBackoff: time.Millisecond, Spill: spill}, sink)
	for range 10 {
		p.Record(Event{Type: TypeAPIRequest})
	}
	closePipeline(t, p)
	if sink.count() != 10 || spill.count() != 0 {
		t.Fatalf("sink has %d, spill %d; want 10 and 0", sink.count(), spill.count())
	}
	if got := counterValue(t, p.m.events, "flaky", "written"); got != 10 {
		t.Fatalf("written = %d, want 10", got)
	}
}

func TestPipeline_SpillsAndCountsWhatAFailingSinkCannotTake(t *testing.T) {
	broken, healthy, spill := newMemSink("broken"), newMemSink("healthy"), newMemSink("spill")
	broken.fail = alwaysFail
	core, logs := observer.New(zapcore.InfoLevel)
	p := newTestPipeline(t, Options{RetryBackoff: time.Millisecond, Spill: spill, Logger: zap.New(core), BatchSize: 10}, broken, healthy)
	want := recordEvents(p, 95)
	closePipeline(t, p)

	assertSameIDs(t, "healthy sink", healthy.snapshot(), want)
	assertSameIDs(t, "spill", spill.snapshot(), want)
	assertEventCounts(t, p, map[string]int{"broken/spilled": 95, "broken/written": 0, "healthy/written": 95, "healthy/spilled": 0})
	if got := counterValue(t, p.m.spilled, ReasonSinkError); got != 95 {
		t.Errorf("spilled_total{reason=sink_error} = %d, want 95", got)
	}
	if logs.FilterMessage("audit: sink failing, spilling its batches").Len() == 0 {
		t.Error("the sink's failure was not logged")
	}
	// Once failing, a sink gets one attempt per batch, not 1+Retries:
	// 10 batches, the first with 3 attempts.
	broken.mu.Lock()
	attempts := broken.attempts
	broken.mu.Unlock()
	if attempts != 12 {
		t.Errorf("%d attempts on the failing sink, want 12 (3 for the first batch, 1 for each later one)", attempts)
	}
}

// keyproxy's log sink is both a sink and the spill sink: with audit.file
// set, both write the same file. An event another sink missed is then in
// that file once, written by the log sink's own writer, not twice.
func TestPipeline_ASpillSinkThatIsAlsoASinkGetsEachEventOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		logFails bool
		wantLog  int // events the log sink holds at the end
	}{
		{"the log sink works", false, 95},
		// Its own writer fails too: the events are lost once, counted as
		// dropped under the log sink; the redis sink's are counted as
		// handed to it.
		{"the log sink fails too", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken, logSink := newMemSink("redis"), newMemSink("log")
			broken.fail = alwaysFail
			if tc.logFails {
				logSink.fail = alwaysFail
			}
			p := newTestPipeline(t, Options{Retries: -1, Spill: logSink, BatchSize: 10}, logSink, broken)
			want := recordEvents(p, 95)
			closePipeline(t, p)
			if tc.logFails {
				if got := logSink.count(); got != 0 {
					t.Fatalf("the failing log sink holds %d events", got)
				}
				assertEventCounts(t, p, map[string]int{"log/dropped": 95, "redis/spilled": 95, "redis/dropped": 0})
				if got := counterValue(t, p.m.dropped, ReasonSinkError); got != 95 {
					t.Errorf("dropped_total{sink_error} = %d, want 95: each lost event once", got)
				}
				return
			}
			assertSameIDs(t, "log sink", logSink.snapshot(), want)
			assertEventCounts(t, p, map[string]int{"redis/spilled": 95, "log/written": 95, "log/spilled": 0})
		})
	}
}

func TestPipeline_CountsAndLogsDropsWhenTheSpillSinkFailsToo(t *testing.T) {
	broken, spill := newMemSink("broken"), newMemSink("spill")
	broken.fail, spill.fail = alwaysFail, alwaysFail
	core, logs := observer.New(zapcore.InfoLevel)
	p := newTestPipeline(t, Options{Retries: -1, Spill: spill, Logger: zap.New(core)}, broken)
	for range 7 {
		p.Record(Event{Type: TypeAPIRequest})
	}
	closePipeline(t, p)
	if got := counterValue(t, p.m.events, "broken", "dropped"); got != 7 {
		t.Errorf("events_total{broken,dropped} = %d, want 7", got)
	}
	if got := counterValue(t, p.m.dropped, ReasonSinkError); got != 7 {
		t.Errorf("dropped_total{sink_error} = %d, want 7", got)
	}
	if logs.FilterLevelExact(zapcore.ErrorLevel).Len() == 0 {
		t.Error("the drop was not logged at error level")
	}
}

func TestPipeline_AStalledSinkDoesNotHoldBackTheOthers(t *testing.T) {
	stalled, healthy, spill := newMemSink("stalled"), newMemSink("healthy"), newMemSink("spill")
	stalled.gate = make(chan struct{})
	// A sink timeout longer than the wait below: the stall must not end
	// before the healthy sink is checked.
	p := newTestPipeline(t, Options{BatchSize: 50, FlushInterval: 10 * time.Millisecond, Spill: spill, SinkTimeout: time.Minute}, stalled, healthy)
	for range 500 {
		p.Record(Event{Type: TypeAPIRequest})
	}
	eventually(t, "the healthy sink to get all 500 events", func() bool { return healthy.count() == 500 })
	if stalled.count() != 0 {
		t.Fatalf("the stalled sink wrote %d events", stalled.count())
	}
	close(stalled.gate)
	closePipeline(t, p)
	if stalled.count() != 500 || spill.count() != 0 {
		t.Fatalf("after the stall: stalled sink %d, spill %d; want 500 and 0 (its backlog holds them)", stalled.count(), spill.count())
	}
}

func TestClose_UnderLoadLosesNothing(t *testing.T) {
	sink, spill := newMemSink("slow"), newMemSink("spill")
	sink.fail = func(int) error { time.Sleep(time.Millisecond); return nil }
	p := newTestPipeline(t, Options{BatchSize: 32, Spill: spill}, sink)
	var (
		stop   atomic.Bool
		mu     sync.Mutex
		want   []string
		wg     sync.WaitGroup
		issued atomic.Int64
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []string
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("evt_w%d_%d", w, i)
				p.Record(Event{ID: id, Type: TypeAPIRequest})
				mine = append(mine, id)
				issued.Add(1)
			}
			mu.Lock()
			want = append(want, mine...)
			mu.Unlock()
		}()
	}
	eventually(t, "load to build up", func() bool { return issued.Load() > 5000 })
	closePipeline(t, p)
	stop.Store(true)
	wg.Wait()

	// Every event is in the sink (recorded before Close) or the spill
	// (recorded after), exactly once.
	assertSameIDs(t, "sink and spill together", append(sink.snapshot(), spill.snapshot()...), want)
	if got := counterValue(t, p.m.spilled, ReasonClosed); got != spill.count() {
		t.Fatalf("spilled_total{closed} = %d, spill holds %d", got, spill.count())
	}
}

func TestClose_WhenTheContextEndsSpillsTheBacklogAndSaysSo(t *testing.T) {
	stalled, spill := newMemSink("stalled"), newMemSink("spill")
	stalled.gate = make(chan struct{}) // never opened: honours only ctx
	p := newTestPipeline(t, Options{BatchSize: 10, Spill: spill}, stalled)
	want := recordEvents(p, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "100 event writes spilled") {
		t.Fatalf("Close = %v, want a deadline error reporting 100 spilled", err)
	}
	assertSameIDs(t, "spill", spill.snapshot(), want)
	if got := counterValue(t, p.m.spilled, ReasonShutdown); got != 100 {
		t.Fatalf("spilled_total{shutdown} = %d, want 100", got)
	}
	if got := counterValue(t, p.m.events, "stalled", "spilled"); got != 100 {
		t.Fatalf("events_total{stalled,spilled} = %d, want 100", got)
	}
}

func TestClose_IsIdempotent(t *testing.T) {
	p := newTestPipeline(t, Options{}, newMemSink("mem"))
	closePipeline(t, p)
	closePipeline(t, p)
}

func TestNewPipeline_RejectsBadSinks(t *testing.T) {
	tests := []struct {
		name  string
		sinks []Sink
	}{
		{"no sink", nil},
		{"nil sink", []Sink{nil}},
		{"duplicate names", []Sink{newMemSink("x"), newMemSink("x")}},
		{"empty name", []Sink{newMemSink("")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := NewPipeline(Options{}, tt.sinks...); err == nil {
				_ = p.Close(context.Background())
				t.Fatal("NewPipeline accepted it")
			}
		})
	}
}

func TestNewPipeline_RefusesToRegisterItsMetricsTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	newTestPipeline(t, Options{Registerer: reg}, newMemSink("mem"))
	if p, err := NewPipeline(Options{Registerer: reg}, newMemSink("mem")); err == nil {
		_ = p.Close(context.Background())
		t.Fatal("a second pipeline registered the same metrics")
	}
	// The failed attempt left the registry as it was.
	if n, err := testutil.GatherAndCount(reg, "keyproxy_audit_events_total"); err != nil || n == 0 {
		t.Fatalf("first pipeline's metrics: %d series, %v", n, err)
	}
}

func TestPipeline_ExposesItsMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	broken, spill := newMemSink("broken"), newMemSink("spill")
	broken.fail = alwaysFail
	p := newTestPipeline(t, Options{Registerer: reg, Retries: -1, Spill: spill}, broken, newMemSink("mem"))
	for range 3 {
		p.Record(Event{Type: TypeAPIRequest})
	}
	closePipeline(t, p)
	want := `
# HELP keyproxy_audit_events_total Audit events by sink and fate: written to the sink, spilled to the spill sink instead, or dropped because the spill sink failed too.
# TYPE keyproxy_audit_events_total counter
keyproxy_audit_events_total{result="dropped",sink="broken"} 0
keyproxy_audit_events_total{result="dropped",sink="mem"} 0
keyproxy_audit_events_total{result="spilled",sink="broken"} 3
keyproxy_audit_events_total{result="spilled",sink="mem"} 0
keyproxy_audit_events_total{result="written",sink="broken"} 0
keyproxy_audit_events_total{result="written",sink="mem"} 3
# HELP keyproxy_audit_dropped_total Audit events lost because even the spill sink failed, by reason.
# TYPE keyproxy_audit_dropped_total counter
keyproxy_audit_dropped_total{reason="closed"} 0
keyproxy_audit_dropped_total{reason="queue_full"} 0
keyproxy_audit_dropped_total{reason="shutdown"} 0
keyproxy_audit_dropped_total{reason="sink_backlog"} 0
keyproxy_audit_dropped_total{reason="sink_error"} 0
# HELP keyproxy_audit_spilled_total Audit events written to the spill sink, by reason.
# TYPE keyproxy_audit_spilled_total counter
keyproxy_audit_spilled_total{reason="closed"} 0
keyproxy_audit_spilled_total{reason="queue_full"} 0
keyproxy_audit_spilled_total{reason="shutdown"} 0
keyproxy_audit_spilled_total{reason="sink_backlog"} 0
keyproxy_audit_spilled_total{reason="sink_error"} 3
# HELP keyproxy_audit_queue_length Audit events recorded and not yet handed to the sinks' writers.
# TYPE keyproxy_audit_queue_length gauge
keyproxy_audit_queue_length 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"keyproxy_audit_events_total", "keyproxy_audit_dropped_total", "keyproxy_audit_spilled_total", "keyproxy_audit_queue_length"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "keyproxy_audit_batch_duration_seconds"); err != nil || n != 2 {
		t.Fatalf("batch duration histograms: %d, %v; want one per sink", n, err)
	}
}

func TestPipeline_SpillsToTheLoggerByDefault(t *testing.T) {
	broken := newMemSink("broken")
	broken.fail = alwaysFail
	core, logs := observer.New(zapcore.InfoLevel)
	p := newTestPipeline(t, Options{Retries: -1, Logger: zap.New(core)}, broken)
	p.Record(Event{ID: "evt_spilled", Type: TypeAPIRequest})
	closePipeline(t, p)
	found := false
	for _, e := range logs.FilterMessage("audit event").All() {
		if ev, ok := e.ContextMap()["event"].(*Event); ok && ev.ID == "evt_spilled" {
			found = true
		}
	}
	if !found {
		t.Fatal("the spilled event is not in the log")
	}
}

// Batches are reused however many collections pass between a release and
// the next batch (sync.Pool, used before, dropped them at the second).
func TestPipeline_ReusesBatchesAcrossCollections(t *testing.T) {
	p := newTestPipeline(t, Options{BatchSize: 8}, newMemSink("a"))
	b := p.newBatch()
	b.events = append(b.events, Event{Type: TypeAPIRequest, Path: "/kept?"})
	p.recycle(b)
	runtime.GC()
	runtime.GC()
	got := p.newBatch()
	if got != b {
		t.Fatal("a released batch was not reused after two collections")
	}
	if len(got.events) != 0 || cap(got.events) != 8 {
		t.Fatalf("reused batch has %d events, capacity %d; want 0 and 8", len(got.events), cap(got.events))
	}
	if e := got.events[:1][0]; e != (Event{}) {
		t.Fatalf("reused batch still holds %+v: its strings stay reachable", e)
	}
}
