package audit

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// writer feeds one sink from its own backlog, so a slow sink delays only
// itself (and the others by at most turnWait a batch: turn.go).
type writer struct {
	p       *Pipeline
	sink    Sink
	name    string
	m       sinkMetrics
	batches chan *batch

	overflowing bool // batcher goroutine only: the backlog stayed full for MaxWait
	failing     bool // writer goroutine only: the last batch failed every attempt
}

// enqueue puts b on the backlog. A full backlog gets MaxWait to make room
// (back-pressure on the batcher and so on Record); once that has run out,
// batches are spilled at once until the backlog has room again, so an
// outage costs the request path one wait, not one per batch. While
// draining for Close there is no request path to protect: it waits until
// Close's context ends.
func (w *writer) enqueue(b *batch, draining bool) {
	select {
	case w.batches <- b:
		w.overflowing = false
		return
	default:
	}
	p := w.p
	if draining {
		select {
		case w.batches <- b:
		case <-p.root.Done():
			w.giveUp(b, ReasonShutdown, nil)
		}
		return
	}
	if w.overflowing || p.o.MaxWait < 0 {
		w.giveUp(b, ReasonSinkBacklog, nil)
		return
	}
	t := time.NewTimer(p.o.MaxWait)
	defer t.Stop()
	select {
	case w.batches <- b:
	case <-t.C:
		w.overflowing = true
		w.giveUp(b, ReasonSinkBacklog, nil)
	case <-p.root.Done():
		w.giveUp(b, ReasonShutdown, nil)
	}
}

// giveUp spills b for this sink and releases this sink's share of it.
func (w *writer) giveUp(b *batch, reason string, cause error) {
	w.p.spillEvents(b.events, reason, cause, w)
	w.p.release(b)
}

func (w *writer) run() {
	for b := range w.batches {
		w.write(b)
	}
}

// write tries the sink, retrying with backoff, and spills the batch if
// every attempt fails or Close's context ends.
func (w *writer) write(b *batch) {
	p := w.p
	attempts := 1 + p.o.Retries
	if w.failing {
		attempts = 1
	}
	backoff := p.o.RetryBackoff
	var err error
	for i := range attempts {
		if p.root.Err() != nil {
			w.giveUp(b, ReasonShutdown, err)
			return
		}
		if i > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-p.root.Done():
				t.Stop()
				w.giveUp(b, ReasonShutdown, err)
				return
			}
			backoff *= 2
		}
		held := p.turn.take(p.root)
		ctx, cancel := context.WithTimeout(p.root, p.o.SinkTimeout)
		start := time.Now()
		err = w.sink.Write(ctx, b.events)
		cancel()
		if held {
			p.turn.give()
		}
		w.m.duration.Observe(time.Since(start).Seconds())
		if err == nil {
			w.m.written.Add(float64(len(b.events)))
			if w.failing {
				w.failing = false
				p.log.Info("audit: sink recovered", zap.String("sink", w.name))
			}
			p.release(b)
			return
		}
	}
	reason := ReasonSinkError
	if p.root.Err() != nil {
		reason = ReasonShutdown
	}
	if !w.failing {
		w.failing = true
		p.log.Warn("audit: sink failing, spilling its batches", zap.String("sink", w.name), zap.Error(err))
	}
	w.giveUp(b, reason, err)
}
