package audit

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// logLimiter lets one loss report through per second; the counters carry
// the totals, the log line the first cause.
type logLimiter struct{ last atomic.Int64 }

func (l *logLimiter) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(time.Second) && l.last.CompareAndSwap(last, now)
}

// spillEvents writes events that the writers' sinks missed to the spill
// sink, and counts their fate per sink and per reason.
func (p *Pipeline) spillEvents(events []Event, reason string, cause error, missed ...*writer) {
	n := float64(len(events))
	var err error
	switch {
	case p.spill == nil:
		err = errors.New("no spill sink configured")
	case p.spillWriter != nil && !slices.Contains(missed, p.spillWriter):
		// The spill sink is a sink too, and its writer has these events:
		// it writes them, or spills them itself if it cannot. Writing
		// them here as well put every event another sink missed in the
		// audit file twice.
	default:
		ctx, cancel := context.WithTimeout(context.Background(), p.o.SinkTimeout)
		err = p.spill.Write(ctx, events)
		cancel()
	}
	if reason == ReasonShutdown {
		if err == nil {
			p.shutdownSpilled.Add(int64(len(events) * len(missed)))
		} else {
			p.shutdownDropped.Add(int64(len(events) * len(missed)))
		}
	}
	if err == nil {
		p.m.spilled.WithLabelValues(reason).Add(n)
		for _, w := range missed {
			w.m.spilled.Add(n)
		}
		if p.spillLog.allow() {
			p.log.Warn("audit: events spilled", zap.String("reason", reason), zap.Int("events", len(events)),
				zap.Strings("sinks", sinkNames(missed)), zap.NamedError("cause", cause))
		}
		return
	}
	p.m.dropped.WithLabelValues(reason).Add(n)
	for _, w := range missed {
		w.m.dropped.Add(n)
	}
	if p.dropLog.allow() {
		p.log.Error("audit: events dropped: the spill sink failed too", zap.String("reason", reason),
			zap.Int("events", len(events)), zap.Strings("sinks", sinkNames(missed)),
			zap.String("first_id", events[0].ID), zap.NamedError("cause", cause), zap.Error(err))
	}
}

// sameSink reports whether a and b are the same sink. Comparing two
// interfaces whose common dynamic type is not comparable would panic.
func sameSink(a, b Sink) bool {
	return a != nil && b != nil && reflect.TypeOf(a).Comparable() && a == b
}

func sinkNames(ws []*writer) []string {
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.name
	}
	return names
}
