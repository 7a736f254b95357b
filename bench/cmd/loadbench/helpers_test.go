package main

import (
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/bench/loadgen"
)

func TestParseWrk_ReadsTheScriptSummary(t *testing.T) {
	out := []byte("Running 10s test @ http://127.0.0.1:1/v1\n  1 threads and 64 connections\n" +
		`WRKJSON {"requests":1000,"duration_us":2000000,"connect":1,"read":2,"write":3,"status":7,"timeout":4,"p50_us":150,"p90_us":300,"p99_us":900,"max_us":5000}` + "\n")
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 1000 || r.Non2xx != 7 || r.Errors != 10 || r.Throughput() != 500 ||
		r.P50 != 150*time.Microsecond || r.P99 != 900*time.Microsecond || r.Max != 5*time.Millisecond {
		t.Fatalf("parsed %+v", r)
	}
	if _, err := parseWrk([]byte("Requests/sec: 1\n")); err == nil {
		t.Fatal("output without the summary accepted")
	}
}

func TestParseProcStat_PerCoreBusyExcludesIdleAndIOWait(t *testing.T) {
	before := parseProcStat([]byte("cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\nintr 1 2 3\n"))
	after := parseProcStat([]byte("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 35 0 15 90 10 0 0 0 0 0\ncpu1 105 0 5 50 0 0 0 0 0 0\n"))
	if len(after) != 2 {
		t.Fatalf("cores %v", after)
	}
	// core 0: busy +40 of +90 total; core 1: +100 of +100.
	if got := busyShare(before, after, 0); got < 0.444 || got > 0.445 {
		t.Errorf("core 0 busy %.3f, want 0.444", got)
	}
	if got := busyShare(before, after, 1); got != 1 {
		t.Errorf("core 1 busy %.3f, want 1", got)
	}
	if got := busyShare(after, before, 1); got != 0 {
		t.Errorf("counters going back gave %.3f", got)
	}
}

func TestParseProcStatCPU_NameWithSpacesAndParentheses(t *testing.T) {
	stat := []byte("4242 (key proxy (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0")
	got, err := parseProcStatCPU(stat)
	if err != nil || got != 3*time.Second {
		t.Fatalf("got %v, %v; want 3s", got, err)
	}
	if _, err := parseProcStatCPU([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRoundsOver_CountsOnlyRoundsWithAnAddedFigure(t *testing.T) {
	ms := []measurement{
		{added: true, addP99: 2 * time.Millisecond},
		{added: true, addP99: time.Millisecond}, // at the limit: not over
		{added: true, addP99: -3 * time.Millisecond},
		{added: false, addP99: 9 * time.Millisecond}, // over capacity: not counted
		{added: true, addP99: 1500 * time.Microsecond},
	}
	if over, n := roundsOver(ms, time.Millisecond); over != 2 || n != 4 {
		t.Errorf("roundsOver = %d of %d, want 2 of 4", over, n)
	}
}

func TestSumMetric_AddsEveryLabelSetOfThatMetricOnly(t *testing.T) {
	expo := "# HELP keyproxy_audit_spilled_total x\n" +
		"keyproxy_audit_spilled_total{reason=\"queue_full\"} 3\n" +
		"keyproxy_audit_spilled_total{reason=\"sink_error\"} 2\n" +
		"keyproxy_audit_spilled_total_other 100\n" +
		"keyproxy_audit_dropped_total 1\n"
	if got := sumMetric(expo, "keyproxy_audit_spilled_total"); got != 5 {
		t.Fatalf("spilled %v, want 5", got)
	}
	if got := sumMetric(expo, "keyproxy_audit_dropped_total"); got != 1 {
		t.Fatalf("dropped %v, want 1", got)
	}
}

func TestPrintBaseline_RoundByRoundMedians(t *testing.T) {
	thr := func(reqs int, cpu time.Duration) measurement {
		return measurement{res: loadgen.Result{Requests: reqs, Elapsed: time.Second}, cpuPerReq: cpu}
	}
	lat := func(p99 time.Duration, held bool) measurement {
		return measurement{res: loadgen.Result{P99: p99}, held: held}
	}
	kp := &target{name: "keyproxy",
		thr: []measurement{thr(1100, 90*time.Microsecond), thr(900, 100*time.Microsecond), thr(1000, 80*time.Microsecond)},
		lat: []measurement{lat(3*time.Millisecond, true), lat(50*time.Millisecond, false), lat(2*time.Millisecond, true)}}
	base := &target{name: "baseline",
		thr: []measurement{thr(1000, 99*time.Microsecond), thr(1000, 100*time.Microsecond), thr(1000, 100*time.Microsecond)},
		lat: []measurement{lat(4*time.Millisecond, true), lat(time.Millisecond, true), lat(4*time.Millisecond, true)}}
	var out strings.Builder
	printBaseline(&out, []*target{{name: "bare"}, kp, base})
	// Throughput 1.1, 0.9, 1.0; CPU 1.1, 1.0, 1.25; p99 -1 and -2 ms
	// (round 2 was over capacity for keyproxy: left out).
	want := "keyproxy against baseline, medians of the rounds: throughput 1.000×, CPU ratio 1.100×, p99 -1500 µs (2 rounds)\n"
	if out.String() != want {
		t.Errorf("got  %q\nwant %q", out.String(), want)
	}
	out.Reset()
	printBaseline(&out, []*target{kp})
	if out.Len() != 0 {
		t.Errorf("printed %q without a baseline", out.String())
	}
}

func TestPrintControl_StatesTheNoiseSpread(t *testing.T) {
	ctl := &target{name: "bare-again", control: true,
		thr: []measurement{{ratio: 0.9}, {ratio: 1.2}, {ratio: 1.0}},
		lat: []measurement{
			{added: true, addP99: 3 * time.Millisecond},
			{added: true, addP99: -2 * time.Millisecond},
			{added: false, addP99: 40 * time.Millisecond}, // over capacity: left out
			{added: true, addP99: 500 * time.Microsecond},
		}}
	var out strings.Builder
	printControl(&out, []*target{{name: "bare"}, {name: "keyproxy"}, ctl})
	want := "control (bare-again, the same bare proxy again): throughput 1.000 of bare; added p99 500 µs, over 1 ms in 1 of 3 rounds, from -2000 µs to 3000 µs: noise, since nothing differs\n"
	if out.String() != want {
		t.Errorf("got  %q\nwant %q", out.String(), want)
	}
}

func TestPrintTargets_P99VerdictNeedsAQuietControl(t *testing.T) {
	rounds := func(p99s ...time.Duration) []measurement {
		var ms []measurement
		for _, d := range p99s {
			ms = append(ms, measurement{added: true, held: true, addP99: d})
		}
		return ms
	}
	ms := time.Millisecond
	kp := &target{name: "keyproxy", thr: []measurement{{ratio: 1.1}}, lat: rounds(-5*ms, -4*ms, -6*ms)}
	slow := &target{name: "slow", thr: []measurement{{ratio: 1.1}}, lat: rounds(3*ms, 2*ms, 4*ms)}
	for _, tt := range []struct {
		name      string
		control   *target
		undecided bool
		want      []string
	}{
		{"no control: the medians decide", nil, false, []string{
			"keyproxy          throughput 1.100 of bare (target ≥ 0.90): met; added p99 -5000 µs, over 1 ms in 0 of 3 rounds (target ≤ 1 ms): met\n",
			"slow              throughput 1.100 of bare (target ≥ 0.90): met; added p99 3000 µs, over 1 ms in 3 of 3 rounds (target ≤ 1 ms): MISSED\n",
		}},
		{"quiet control: within ±1 ms in 2 of 3", &target{name: "bare-again", control: true, lat: rounds(-ms, 500*time.Microsecond, 9*ms)}, false, []string{
			"(target ≤ 1 ms): met\n",
			"(target ≤ 1 ms): MISSED\n",
		}},
		{"noisy control: within ±1 ms in 1 of 3", &target{name: "bare-again", control: true, lat: rounds(-20*ms, 0, 30*ms)}, true, []string{
			"over 1 ms in 0 of 3 rounds (target ≤ 1 ms): UNDECIDED, the control was within ±1 ms of bare in 1 of 3 rounds (needs 2)\n",
			"over 1 ms in 3 of 3 rounds (target ≤ 1 ms): UNDECIDED, the control was within ±1 ms of bare in 1 of 3 rounds (needs 2)\n",
		}},
		{"control never held the rate", &target{name: "bare-again", control: true, lat: []measurement{{held: false}}}, true, []string{
			"UNDECIDED, the control held the rate in no round\n",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := []*target{{name: "bare"}, kp, slow}
			if tt.control != nil {
				ts = append(ts, tt.control)
			}
			var out strings.Builder
			printTargets(&out, ts)
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if got := strings.Count(out.String(), "UNDECIDED"); tt.undecided != (got > 0) || (tt.undecided && got != 2) {
				t.Errorf("%d verdicts UNDECIDED, want %v for both targets:\n%s", got, tt.undecided, out.String())
			}
		})
	}
}

// A throughput verdict needs the ratio farther from its target than the
// control (bare again) strayed from bare.
func TestPrintTargets_ThroughputVerdictNeedsTheControlCloser(t *testing.T) {
	thr := func(r float64) []measurement { return []measurement{{ratio: r}} }
	near := &target{name: "near", thr: thr(0.814)}
	far := &target{name: "far", thr: thr(1.300)}
	low := &target{name: "low", thr: thr(0.500)}
	for _, tt := range []struct {
		name    string
		control float64
		want    []string
	}{
		{"quiet control", 0.98, []string{
			"near              throughput 0.814 of bare (target ≥ 0.90): MISSED;",
			"far               throughput 1.300 of bare (target ≥ 0.90): met;",
		}},
		{"control 0.725 of bare", 0.725, []string{
			"near              throughput 0.814 of bare (target ≥ 0.90): UNDECIDED, within the control's distance from bare (0.275);",
			"far               throughput 1.300 of bare (target ≥ 0.90): met;",
			"low               throughput 0.500 of bare (target ≥ 0.90): MISSED;",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := []*target{{name: "bare"}, near, far, low, {name: "bare-again", control: true, thr: thr(tt.control)}}
			var out strings.Builder
			printTargets(&out, ts)
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
