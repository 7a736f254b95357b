package audit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// overlapSink counts how many of the pipeline's sink writes run at once.
type overlapSink struct {
	name         string
	active, most *atomic.Int32
	written      atomic.Int32
}

func (s *overlapSink) Name() string { return s.name }

func (s *overlapSink) Write(_ context.Context, batch []Event) error {
	n := s.active.Add(1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	// A write that takes a while, as encoding a batch does: without the
	// turn both writers, handed the same batch at once, would be inside.
	time.Sleep(2 * time.Millisecond)
	s.active.Add(-1)
	s.written.Add(int32(len(batch)))
	return nil
}

func TestPipeline_SinksWriteOneAtATime(t *testing.T) {
	var active, most atomic.Int32
	a := &overlapSink{name: "log", active: &active, most: &most}
	b := &overlapSink{name: "store", active: &active, most: &most}
	p := newTestPipeline(t, Options{BatchSize: 8, FlushInterval: time.Millisecond}, a, b)
	for range 160 {
		p.Record(Event{Type: TypeAPIRequest})
	}
	eventually(t, "both sinks to get all 160 events", func() bool { return a.written.Load() == 160 && b.written.Load() == 160 })
	if n := most.Load(); n != 1 {
		t.Errorf("%d sink writes ran at once, want 1", n)
	}
}

// TestTurn_AStalledHolderDelaysTheNextOnlyBriefly: the turn is a courtesy,
// not a lock: a writer stuck in its sink (TestPipeline_AStalledSinkDoes-
// NotHoldBackTheOthers shows it end to end) holds another up for turnWait
// at most.
func TestTurn_AStalledHolderDelaysTheNextOnlyBriefly(t *testing.T) {
	tr := newTurn()
	if !tr.take(context.Background()) {
		t.Fatal("a free turn was not taken")
	}
	start := time.Now()
	if tr.take(context.Background()) {
		t.Fatal("a held turn was taken twice")
	}
	if d := time.Since(start); d < turnWait || d > 10*time.Second {
		t.Errorf("waited %s for a held turn, want about %s", d, turnWait)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if tr.take(ctx) {
		t.Error("a held turn was taken after the context ended")
	}
	tr.give()
	if !tr.take(context.Background()) {
		t.Error("a given-back turn was not taken")
	}
}
