package audit

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// LogSink writes one JSON line per event through a zap core, the event
// encoded by Event.MarshalLogObject (no reflection). It writes to the core
// directly rather than through Logger.Check: Check applies the logger's
// level and sampling (sampling is on in zap's production config), which
// would silently thin out an audit trail, and Core.Write reports the
// output's errors, which the pipeline counts. It is safe for concurrent
// use, so it can also be the pipeline's spill sink.
type LogSink struct {
	core zapcore.Core
	name string
	bare bool // the line is the event itself, not a log entry holding it
}

// NewLogSink writes events through an ordinary logger, such as the
// operational log: each line is the logger's entry (its level, time and
// message keys) with the event as an object under "event", so the event's
// own "time" can never collide with the logger's keys.
func NewLogSink(l *zap.Logger) *LogSink { return &LogSink{core: l.Core(), name: l.Name()} }

// NewEventLogSink writes lines that are exactly the event and nothing else
// to w: the form for a dedicated audit file or stdout stream. Writes to w
// are serialised, so lines never interleave.
func NewEventLogSink(w zapcore.WriteSyncer) *LogSink {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{LineEnding: zapcore.DefaultLineEnding})
	return &LogSink{core: zapcore.NewCore(enc, zapcore.Lock(w), zapcore.InfoLevel), bare: true}
}

// Name implements Sink.
func (s *LogSink) Name() string { return "log" }

// Write implements Sink.
func (s *LogSink) Write(_ context.Context, batch []Event) error {
	ent := zapcore.Entry{Level: zapcore.InfoLevel, LoggerName: s.name, Message: "audit event", Time: time.Now()}
	fields := make([]zapcore.Field, 1)
	y := newYielder()
	for i := range batch {
		if i > 0 {
			y.step()
		}
		// A copy: a core may keep its fields after Write (zap's observer
		// does), and the pipeline reuses the batch.
		e := batch[i]
		if s.bare {
			fields[0] = zap.Inline(&e)
		} else {
			fields[0] = zap.Object("event", &e)
		}
		if err := s.core.Write(ent, fields); err != nil {
			return fmt.Errorf("audit: log sink: %w", err)
		}
	}
	return nil
}
