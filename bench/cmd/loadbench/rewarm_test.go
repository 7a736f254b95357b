package main

import (
	"context"
	"testing"
	"time"

	"github.com/wevion/keyproxy/bench/loadgen"
)

// recordingGen answers every run at once and notes how long it was asked
// to run; each result's Requests is the run's number, so a test can tell
// which run's figures it got.
type recordingGen struct{ runs []time.Duration }

func (g *recordingGen) name() string { return "recording" }

func (g *recordingGen) run(_ context.Context, _ string, _ []string, d time.Duration) (loadgen.Result, error) {
	g.runs = append(g.runs, d)
	return loadgen.Result{Requests: len(g.runs), Elapsed: d}, nil
}

func TestMeasured_ReWarmsBeforeTheRunAndReportsOnlyTheRun(t *testing.T) {
	for _, tt := range []struct {
		name   string
		rewarm time.Duration
		want   []time.Duration
	}{
		{"rewarm", time.Second, []time.Duration{time.Second, 5 * time.Second}},
		{"off", 0, []time.Duration{5 * time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p, err := startProc(dir, "idle", "", nil, "sleep", "60")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.stop(5 * time.Second) })
			b := &bench{o: options{rewarm: tt.rewarm}, dir: dir}
			g := &recordingGen{}
			m, err := b.measured(context.Background(), g, &target{name: "idle", proc: p}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(g.runs) != len(tt.want) {
				t.Fatalf("runs %v, want %v", g.runs, tt.want)
			}
			for i := range tt.want {
				if g.runs[i] != tt.want[i] {
					t.Fatalf("runs %v, want %v", g.runs, tt.want)
				}
			}
			if m.res.Requests != len(tt.want) {
				t.Errorf("reported run %d's figures, want the last run's (%d)", m.res.Requests, len(tt.want))
			}
		})
	}
}
