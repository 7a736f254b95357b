// Package loadgen is the benchmark's own HTTP/1.1 load generator: the
// fallback when wrk is not installed, and the open-loop (constant-rate)
// generator that wrk lacks, used to compare latency at a fixed rate.
//
// It speaks just enough HTTP/1.1 over keep-alive connections to drive a
// proxy: prepared request bytes are written as they are, the response is
// read to its end (Content-Length or chunked) and only the status is kept.
// That costs far less CPU than net/http's client, so on a shared core the
// generator disturbs the measurement less.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options describe one run.
type Options struct {
	// Addr is the host:port to connect to.
	Addr string
	// Requests are complete HTTP/1.1 requests (see NewRequests); connection
	// c sends Requests[(c + i*Conns) % len] in turn, so a run spreads over
	// all of them.
	Requests [][]byte
	// Conns is the number of keep-alive connections (default 64).
	Conns int
	// Duration of the measured run.
	Duration time.Duration
	// Rate, when positive, sends that many requests per second in total
	// whatever the responses take (open loop), and measures each latency
	// from the moment its request was due, so a stall is charged to every
	// request it delayed (no coordinated omission). Zero: closed loop, each
	// connection sends its next request when the last answer arrived.
	Rate float64
	// Timeout bounds one request (default 5s).
	Timeout time.Duration
}

// Result is what a run measured.
type Result struct {
	Requests int           // responses received in the measured window
	Non2xx   int           // of those, status outside 200-299
	Errors   int           // connection failures, timeouts, malformed responses
	Elapsed  time.Duration // the measured window
	// Latency percentiles of the responses received.
	P50, P90, P99, Max time.Duration
}

// Throughput is responses per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

func (r Result) String() string {
	return fmt.Sprintf("%.0f req/s, p50 %s, p99 %s, max %s, non-2xx %d, errors %d",
		r.Throughput(), r.P50, r.P99, r.Max, r.Non2xx, r.Errors)
}

// Run drives opts.Addr until opts.Duration has passed or ctx ends.
func Run(ctx context.Context, o Options) (Result, error) {
	if len(o.Requests) == 0 {
		return Result{}, errors.New("loadgen: no requests")
	}
	if o.Duration <= 0 {
		return Result{}, errors.New("loadgen: Duration must be positive")
	}
	if o.Conns <= 0 {
		o.Conns = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	start := time.Now()
	end := start.Add(o.Duration)
	var (
		seq     atomic.Int64 // open loop: the next request slot
		wg      sync.WaitGroup
		workers = make([]worker, o.Conns)
	)
	for c := range workers {
		w := &workers[c]
		w.lat = make([]time.Duration, 0, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx, &o, c, start, end, &seq)
		}()
	}
	wg.Wait()
	elapsed := min(time.Since(start), o.Duration)

	var res Result
	var all []time.Duration
	for i := range workers {
		w := &workers[i]
		res.Non2xx += w.non2xx
		res.Errors += w.errors
		all = append(all, w.lat...)
	}
	res.Requests = len(all)
	res.Elapsed = elapsed
	res.P50, res.P90, res.P99, res.Max = percentiles(all)
	return res, nil
}

// percentiles returns the 50th, 90th, 99th percentile and maximum of d,
// sorting it in place (nearest rank).
func percentiles(d []time.Duration) (p50, p90, p99, mx time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.5) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return rank(0.50), rank(0.90), rank(0.99), d[len(d)-1]
}

// worker owns one connection; its counters are its own until Run has
// waited for it.
type worker struct {
	lat            []time.Duration
	non2xx, errors int
}

func (w *worker) run(ctx context.Context, o *Options, c int, start, end time.Time, seq *atomic.Int64) {
	var (
		conn  *conn
		err   error
		next  = c // index into o.Requests
		timer *time.Timer
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	for ctx.Err() == nil {
		due := time.Now()
		if interval > 0 {
			// Take the next slot of the schedule and wait for it. A worker
			// that fell behind sends at once and its latency counts from
			// the slot's time.
			due = start.Add(time.Duration(seq.Add(1)-1) * interval)
			if !due.Before(end) {
				return
			}
			if d := time.Until(due); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					return
				}
			}
		}
		if conn == nil {
			if conn, err = dial(ctx, o.Addr); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.errors++
				time.Sleep(10 * time.Millisecond) // do not spin on a refused port
				continue
			}
		}
		req := o.Requests[next%len(o.Requests)]
		next += o.Conns
		deadline := time.Now().Add(o.Timeout)
		if deadline.After(end) {
			deadline = end // a request still unanswered at the end is not counted
		}
		status, closeAfter, err := conn.roundTrip(req, deadline)
		done := time.Now()
		if err != nil {
			if ctx.Err() != nil || done.After(end) {
				return // cut off by the end of the run, not a failure
			}
			w.errors++
			conn.Close()
			conn = nil
			continue
		}
		if done.After(end) {
			return
		}
		w.lat = append(w.lat, done.Sub(due))
		if status < 200 || status > 299 {
			w.non2xx++
		}
		if closeAfter {
			conn.Close()
			conn = nil
		}
	}
}

func dial(ctx context.Context, addr string) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newConn(nc), nil
}
