package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// measure runs the rounds (throughput, then latency at half the bare
// peak) and prints the report to w.
func (b *bench) measure(ctx context.Context, w io.Writer) error {
	o := b.o
	fmt.Fprintln(w, "keyproxy load benchmark,", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintln(w, "machine:", machine())
	fmt.Fprintf(w, "layout: proxies on CPU %s with GOMAXPROCS=1; %s, backend and redis-server on CPU %s\n", o.proxyCPUs, b.gen.name(), o.genCPUs)
	fmt.Fprintf(w, "load: %d keys of %d users (10 per team), GET /v1/projects/42, %d keep-alive connections; per-user limit %d/min (every request decided by the limiter, none refused)\n",
		o.keys, o.keys, o.conns, o.perUser)
	fmt.Fprintf(w, "method: %d rounds; each round runs every target in turn; ratios are to the bare proxy of the same round, the median of rounds is reported\n", o.rounds)
	if o.rewarm > 0 {
		fmt.Fprintf(w, "each measured run follows %s of unmeasured load at its own rate, so no target starts cold after waiting its turn\n", o.rewarm)
	}
	if b.nginxOff != "" {
		fmt.Fprintln(w, "nginx-auth not measured:", b.nginxOff)
	}
	if b.redisOff != "" {
		fmt.Fprintln(w, "Redis mode not measured:", b.redisOff)
	}
	for _, t := range b.targets {
		fmt.Fprintf(w, "  %-17s %s\n", t.name, t.desc)
	}

	fmt.Fprintf(os.Stderr, "warming up (%s per target) ...\n", o.warmup)
	for _, t := range b.targets {
		if _, err := b.once(ctx, b.gen, t, max(o.warmup, time.Second)); err != nil {
			return err
		}
	}
	bare := b.find("bare")
	for r := range o.rounds {
		fmt.Fprintf(os.Stderr, "throughput round %d/%d ...\n", r+1, o.rounds)
		for _, t := range b.targets {
			m, err := b.measured(ctx, b.gen, t, o.duration)
			if err != nil {
				return err
			}
			t.thr = append(t.thr, m)
		}
		if bare != nil {
			for _, t := range b.targets {
				t.thr[r].ratio = t.thr[r].res.Throughput() / bare.thr[r].res.Throughput()
				if t.thr[r].cpuPerReq > 0 {
					t.thr[r].cpuRatio = float64(bare.thr[r].cpuPerReq) / float64(t.thr[r].cpuPerReq)
				}
			}
		}
	}
	printThroughput(w, b.targets, b.gen.name(), o.duration)

	if bare == nil {
		fmt.Fprintln(w, "\n(no bare target: latency at half its peak not measured)")
		return b.finish(w)
	}
	peak := median(collect(bare.thr, func(m measurement) float64 { return m.res.Throughput() }))
	rate := peak / 2
	lat := &goGen{conns: o.conns, rate: rate}
	// The floor: the generator straight to the backend, no proxy. What it
	// shows is the noise of the machine and generator themselves.
	var direct []measurement
	for r := range o.rounds {
		fmt.Fprintf(os.Stderr, "latency round %d/%d at %.0f req/s ...\n", r+1, o.rounds, rate)
		res, err := lat.run(ctx, b.upAddr, bare.keys, o.latencyDur)
		if err != nil {
			return err
		}
		direct = append(direct, measurement{res: res, held: res.Throughput() >= minHeld*rate})
		for _, t := range b.targets {
			m, err := b.measured(ctx, lat, t, o.latencyDur)
			if err != nil {
				return err
			}
			t.lat = append(t.lat, m)
		}
		for _, t := range b.targets {
			t.lat[r].held = t.lat[r].res.Throughput() >= minHeld*rate
		}
		for _, t := range b.targets {
			m := &t.lat[r]
			m.added = m.held && bare.lat[r].held
			m.addP50 = m.res.P50 - bare.lat[r].res.P50
			m.addP99 = m.res.P99 - bare.lat[r].res.P99
		}
	}
	printLatency(w, b.targets, rate, o.latencyDur)
	if held := filter(direct, func(m measurement) bool { return m.held }); len(held) > 0 {
		d := func(f func(measurement) time.Duration) string {
			return fmtDur(time.Duration(median(collect(held, func(m measurement) float64 { return float64(f(m)) }))))
		}
		fmt.Fprintf(w, "floor, generator straight to the backend at the same rate: p50 %s, p90 %s, p99 %s\n",
			d(func(m measurement) time.Duration { return m.res.P50 }), d(func(m measurement) time.Duration { return m.res.P90 }),
			d(func(m measurement) time.Duration { return m.res.P99 }))
	}
	printTargets(w, b.targets)
	return b.finish(w)
}

// measured is once after the re-warm-up. While the other targets take
// their turns a target gets no requests: in a full run that is longer than
// keyproxy's cache TTL, so its first 1000 requests would each read the
// store (refresh-ahead re-reads only keys that are being used). That is a
// cold start every run, which steady traffic does not have and the bare
// proxy has nothing like; on 2026-11-27 it was about 0.7 ms of keyproxy's
// added p99 in runs of four targets.
func (b *bench) measured(ctx context.Context, gen generator, t *target, d time.Duration) (measurement, error) {
	if b.o.rewarm > 0 {
		if _, err := b.once(ctx, gen, t, b.o.rewarm); err != nil {
			return measurement{}, err
		}
	}
	return b.once(ctx, gen, t, d)
}

// minHeld is the share of the scheduled rate a latency run must achieve:
// below it the target (or, for bare, the generator) was over capacity,
// requests queued without bound, and the latencies measure the queue.
const minHeld = 0.97

// printTargets checks DESIGN.md's performance targets: throughput ratios
// of 0.90 (single node) and 0.75 (Redis), and at most 1 ms added p99 at
// half the bare peak.
func printTargets(w io.Writer, ts []*target) {
	fmt.Fprintln(w, "\ntargets (DESIGN.md, \"Performance targets\")")
	var pair *target
	for _, t := range ts {
		if t.pair != nil {
			pair = t
		}
	}
	noisy := controlNoise(ts)
	for _, t := range ts {
		if t.name == "bare" || t.pair != nil || t.control {
			continue
		}
		want := 0.90
		if len(t.extra) > 0 {
			want = 0.75
		}
		ratio := median(collect(t.thr, func(m measurement) float64 { return m.ratio }))
		latency := "not measured"
		if added := filter(t.lat, func(m measurement) bool { return m.added }); len(added) > 0 {
			p99 := time.Duration(median(collect(added, func(m measurement) float64 { return float64(m.addP99) })))
			over, n := roundsOver(t.lat, time.Millisecond)
			v := verdict(p99 <= time.Millisecond)
			if noisy != "" {
				v = "UNDECIDED, " + noisy
			}
			latency = fmt.Sprintf("%s, over 1 ms in %d of %d rounds (target ≤ 1 ms): %s", fmtDur(p99), over, n, v)
		} else if len(filter(t.lat, func(m measurement) bool { return !m.held })) > 0 {
			latency = "MISSED: over capacity at that rate"
		}
		fmt.Fprintf(w, "  %-17s throughput %.3f of bare (target ≥ %.2f): %s; added p99 %s\n",
			t.name, ratio, want, thrVerdict(ratio, want, thrNoise(ts)), latency)
	}
	if pair != nil {
		printStretch(w, ts, pair)
	}
	printBaseline(w, ts)
	printControl(w, ts)
}

// thrNoise is how far the control's median throughput ratio strayed from
// 1: it is the bare proxy again, so that much of any ratio in this run is
// the machine's. 0 without a control.
func thrNoise(ts []*target) float64 {
	for _, t := range ts {
		if t.control && len(t.thr) > 0 {
			return math.Abs(median(collect(t.thr, func(m measurement) float64 { return m.ratio })) - 1)
		}
	}
	return 0
}

// thrVerdict judges a throughput ratio against its target, unless the
// control strayed at least as far as the ratio is from the target: a short
// run (QUICK=1, one round) once put the control at 0.725 of bare, and
// keyproxy's 0.814 was then no more "missed" than the control was.
func thrVerdict(ratio, want, noise float64) string {
	if math.Abs(ratio-want) <= noise {
		return fmt.Sprintf("UNDECIDED, within the control's distance from bare (%.3f)", noise)
	}
	return verdict(ratio >= want)
}

// controlNoise says why this run cannot judge a 1 ms added p99, or ""
// when it can (or has no control to tell). The control is the bare proxy
// run again, so its added p99 is the machine's noise alone; a run resolves
// 1 ms only if the control stays within ±1 ms of bare in at least two
// thirds of its rounds. On a busy day the control swings by tens of
// milliseconds, and a keyproxy median of −5 ms then is no more "met" than
// +5 ms is "missed".
func controlNoise(ts []*target) string {
	for _, t := range ts {
		if !t.control {
			continue
		}
		within, n := 0, 0
		for _, m := range t.lat {
			if !m.added {
				continue
			}
			n++
			if m.addP99.Abs() <= time.Millisecond {
				within++
			}
		}
		if n == 0 {
			return "the control held the rate in no round"
		}
		if need := (2*n + 2) / 3; within < need {
			return fmt.Sprintf("the control was within ±1 ms of bare in %d of %d rounds (needs %d)", within, n, need)
		}
	}
	return ""
}

// printControl states what the second bare proxy "added": the same binary
// as bare, so every figure it shows is the machine's noise in this run. An
// added p99 of keyproxy's within that spread says nothing either way.
func printControl(w io.Writer, ts []*target) {
	for _, t := range ts {
		if !t.control {
			continue
		}
		ratio := median(collect(t.thr, func(m measurement) float64 { return m.ratio }))
		fmt.Fprintf(w, "control (%s, the same bare proxy again): throughput %.3f of bare", t.name, ratio)
		if added := filter(t.lat, func(m measurement) bool { return m.added }); len(added) > 0 {
			p99 := collect(added, func(m measurement) float64 { return float64(m.addP99) })
			over, n := roundsOver(t.lat, time.Millisecond)
			fmt.Fprintf(w, "; added p99 %s, over 1 ms in %d of %d rounds, from %s to %s",
				fmtDur(time.Duration(median(p99))), over, n, fmtDur(time.Duration(slices.Min(p99))), fmtDur(time.Duration(slices.Max(p99))))
		}
		fmt.Fprintln(w, ": noise, since nothing differs")
	}
}

// printBaseline compares keyproxy with the -baseline build round by round,
// each round's pair measured minutes apart at most.
func printBaseline(w io.Writer, ts []*target) {
	var kp, base *target
	for _, t := range ts {
		switch t.name {
		case "keyproxy":
			kp = t
		case "baseline":
			base = t
		}
	}
	if kp == nil || base == nil {
		return
	}
	var thr, cpu, p99 []float64
	for r := range min(len(kp.thr), len(base.thr)) {
		if b := base.thr[r].res.Throughput(); b > 0 {
			thr = append(thr, kp.thr[r].res.Throughput()/b)
		}
		if c := kp.thr[r].cpuPerReq; c > 0 {
			cpu = append(cpu, float64(base.thr[r].cpuPerReq)/float64(c))
		}
	}
	for r := range min(len(kp.lat), len(base.lat)) {
		if kp.lat[r].held && base.lat[r].held {
			p99 = append(p99, float64(kp.lat[r].res.P99-base.lat[r].res.P99))
		}
	}
	fmt.Fprintf(w, "keyproxy against baseline, medians of the rounds: throughput %.3f×, CPU ratio %.3f×", median(thr), median(cpu))
	if len(p99) > 0 {
		fmt.Fprintf(w, ", p99 %+.0f µs (%d rounds)", median(p99)/1e3, len(p99))
	}
	fmt.Fprintln(w)
}

// printStretch compares each single-node keyproxy with the nginx pair,
// round by round: the stretch target is at least the pair's throughput.
func printStretch(w io.Writer, ts []*target, pair *target) {
	fmt.Fprintf(w, "stretch: at least the throughput of %s (%.3f of bare)\n", pair.name,
		median(collect(pair.thr, func(m measurement) float64 { return m.ratio })))
	for _, t := range ts {
		if t.name == "bare" || t.pair != nil || len(t.extra) > 0 || t.control {
			continue
		}
		var rs []float64
		for r := range min(len(t.thr), len(pair.thr)) {
			if p := pair.thr[r].res.Throughput(); p > 0 {
				rs = append(rs, t.thr[r].res.Throughput()/p)
			}
		}
		if len(rs) == 0 {
			continue
		}
		x := median(rs)
		fmt.Fprintf(w, "  %-17s %.3f × %s: %s\n", t.name, x, pair.name, thrVerdict(x, 1, thrNoise(ts)))
	}
}

// roundsOver counts the rounds whose added p99 exceeds limit, of those
// where it was measured. A single round swings by milliseconds on a shared
// machine; the count shows whether the median stands for most rounds.
func roundsOver(ms []measurement, limit time.Duration) (over, n int) {
	for _, m := range ms {
		if !m.added {
			continue
		}
		n++
		if m.addP99 > limit {
			over++
		}
	}
	return over, n
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (b *bench) finish(w io.Writer) error {
	problems := false
	for _, t := range b.targets {
		var non2xx, errs, n int
		for _, m := range append(slices.Clone(t.thr), t.lat...) {
			non2xx, errs, n = non2xx+m.res.Non2xx, errs+m.res.Errors, n+m.res.Requests
		}
		switch {
		case non2xx > 0:
			fmt.Fprintf(w, "WARNING: %s answered %d of %d requests with a non-2xx status: those runs did not measure the admitted path\n", t.name, non2xx, n)
			problems = true
		case errs > 0:
			fmt.Fprintf(w, "note: %s had %d connection errors or timeouts in %d requests (an over-capacity latency run times out requests)\n", t.name, errs, n)
			problems = true
		}
		if t.adminURL != "" {
			if s, d, err := auditLosses(t.adminURL); err == nil && s+d > 0 {
				fmt.Fprintf(w, "note: %s spilled %.0f and dropped %.0f audit event writes (keyproxy_audit_spilled_total / _dropped_total)\n", t.name, s, d)
			}
		}
	}
	if !problems {
		fmt.Fprintln(w, "\nevery response was 2xx; no connection errors.")
	}
	return nil
}

func (b *bench) find(name string) *target {
	for _, t := range b.targets {
		if t.name == name {
			return t
		}
	}
	return nil
}

func printThroughput(w io.Writer, ts []*target, gen string, d time.Duration) {
	fmt.Fprintf(w, "\nthroughput (closed loop, %s, %s per run)\n", gen, d)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\treq/s\tratio to bare\trounds\tproxy CPU/req\tCPU ratio\tredis CPU/req\tlog B/req\tproxy core busy\tgen core busy\t")
	for _, t := range ts {
		med := func(f func(measurement) float64) float64 { return median(collect(t.thr, f)) }
		ratios := collect(t.thr, func(m measurement) float64 { return m.ratio })
		var rs []string
		for _, r := range ratios {
			rs = append(rs, fmt.Sprintf("%.3f", r))
		}
		redis := "-"
		if len(t.extra) > 0 {
			redis = fmtMicros(med(func(m measurement) float64 { return float64(m.extraCPU) }))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%s\t%s\t%.3f\t%s\t%.0f\t%.0f%%\t%.0f%%\t\n", t.name,
			med(func(m measurement) float64 { return m.res.Throughput() }),
			median(ratios), strings.Join(rs, " "),
			fmtMicros(med(func(m measurement) float64 { return float64(m.cpuPerReq) })),
			med(func(m measurement) float64 { return m.cpuRatio }), redis,
			med(func(m measurement) float64 { return m.logPerReq }),
			100*med(func(m measurement) float64 { return m.proxyCore }),
			100*med(func(m measurement) float64 { return m.genCore }))
	}
	tw.Flush()
	fmt.Fprintln(w, "(CPU ratio: bare's CPU per response ÷ the target's, in the same round: the throughput ratio on a dedicated core, and steadier than req/s when other work shares the machine)")
}

func printLatency(w io.Writer, ts []*target, rate float64, d time.Duration) {
	fmt.Fprintf(w, "\nlatency at half the bare peak: %.0f req/s (open loop, latency from each request's scheduled time, %s per run)\n", rate, d)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\treq/s\tp50\tp90\tp99\tadded p50\tadded p99\tadded p99 by round\t")
	for _, t := range ts {
		med := func(ms []measurement, f func(measurement) time.Duration) string {
			if len(ms) == 0 {
				return "n/a"
			}
			return fmtDur(time.Duration(median(collect(ms, func(m measurement) float64 { return float64(f(m)) }))))
		}
		held := filter(t.lat, func(m measurement) bool { return m.held })
		added := filter(t.lat, func(m measurement) bool { return m.added })
		var rs []string
		for _, m := range t.lat {
			switch {
			case m.added:
				rs = append(rs, fmtDur(m.addP99))
			case !m.held:
				rs = append(rs, "over-capacity")
			default:
				rs = append(rs, "bare-failed")
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.name,
			median(collect(t.lat, func(m measurement) float64 { return m.res.Throughput() })),
			med(held, func(m measurement) time.Duration { return m.res.P50 }),
			med(held, func(m measurement) time.Duration { return m.res.P90 }),
			med(held, func(m measurement) time.Duration { return m.res.P99 }),
			med(added, func(m measurement) time.Duration { return m.addP50 }),
			med(added, func(m measurement) time.Duration { return m.addP99 }),
			strings.Join(rs, " "))
	}
	tw.Flush()
	fmt.Fprintf(w, "(a run that did not reach %.0f%% of the rate was over capacity: its latencies measure a growing queue and are left out; \"bare-failed\": the generator or machine could not hold the rate in that round)\n", 100*minHeld)
}

func filter(ms []measurement, keep func(measurement) bool) []measurement {
	var out []measurement
	for _, m := range ms {
		if keep(m) {
			out = append(out, m)
		}
	}
	return out
}

func collect(ms []measurement, f func(measurement) float64) []float64 {
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = f(m)
	}
	return out
}

// median of v (the mean of the middle two for an even count); 0 if empty.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func fmtMicros(ns float64) string { return fmt.Sprintf("%.1f µs", ns/1e3) }

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond || d <= -10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
}

// machine describes the CPU, core count, kernel and Go version.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cores := 0
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		cores = len(parseProcStat(b))
	}
	return fmt.Sprintf("%s, %d cores, Linux %s, %s", model, cores, strings.TrimSpace(string(kernel)), runtime.Version())
}
