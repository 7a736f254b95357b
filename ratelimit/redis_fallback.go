package ratelimit

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// probeDue lets one caller per ProbeInterval try Redis while degraded: a
// request or the prober, whichever comes first.
func (r *Redis) probeDue() bool {
	now := time.Now().UnixNano()
	next := r.nextProbe.Load()
	return now >= next && r.nextProbe.CompareAndSwap(next, now+int64(r.probe))
}

func (r *Redis) degrade(err error) {
	if r.degraded.Load() {
		return
	}
	// The next probe is set before the flag, so no caller probes at once.
	r.nextProbe.Store(time.Now().Add(r.probe).UnixNano())
	if !r.degraded.CompareAndSwap(false, true) {
		return
	}
	r.degradedG.Set(1)
	r.log.Warn("rate limiting falls back to the local limiter: redis failed or timed out",
		zap.Error(err), zap.Duration("probe_interval", r.probe))
	r.startProber()
}

func (r *Redis) restore() {
	if !r.degraded.Load() || !r.degraded.CompareAndSwap(true, false) {
		return
	}
	r.degradedG.Set(0)
	r.log.Info("rate limiting is back on redis")
}

// startProber starts the goroutine that probes Redis while degraded: the
// probes of requests alone would leave a replica without traffic degraded
// for good, and its alert firing.
func (r *Redis) startProber() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.prober || r.closed {
		return
	}
	r.prober = true
	r.probers.Add(1)
	go r.probeLoop()
}

// probeLoop tries Redis at each probe time no request has taken, until the
// limiter is healthy again or closed.
func (r *Redis) probeLoop() {
	defer r.probers.Done()
	timer := time.NewTimer(r.probe)
	defer timer.Stop()
	for r.stillDegraded() {
		timer.Reset(time.Until(time.Unix(0, r.nextProbe.Load())))
		select {
		case <-r.stop:
			r.mu.Lock()
			r.prober = false
			r.mu.Unlock()
			return
		case <-timer.C:
		}
		if !r.degraded.Load() || !r.probeDue() {
			continue
		}
		if err := r.probeScript(); err != nil {
			r.redisErrors.Inc()
			continue
		}
		r.restore()
	}
}

// probeKey is where the prober runs the script, one request a second with
// a burst of one: '#' is in no user id, so a probe spends no one's budget,
// and its state expires a second later.
const probeKey = "#probe"

// probeScript runs the script itself, not a PING: a Redis that answers
// PING but refuses the script (out of memory under noeviction, a replica
// left read-only by a failover) would otherwise be declared healthy once
// a second and fail the next request's decision, a flap of two log lines
// a second.
func (r *Redis) probeScript() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	return r.script.Run(ctx, r.rdb, []string{r.prefix + probeKey}, time.Second.Microseconds(), 1).Err()
}

// stillDegraded reports whether the prober must go on, and when it must
// not, marks it stopped in the same step: a degrade that races with its
// exit then starts a new one.
func (r *Redis) stillDegraded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.degraded.Load() {
		return true
	}
	r.prober = false
	return false
}
