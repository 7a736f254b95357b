package audit

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// LogSink writes one JSON line per event through a zap logger's core: the
// event's fields at the top level, encoded by Event.MarshalLogObject. It
// writes to the core directly rather than through Logger.Check, because
// Check applies the logger's level and sampling (sampling is on by default
// in zap's production config), which would silently thin out an audit
// trail; and because
// Core.Write reports the output's errors, which the pipeline counts. It is
// safe for concurrent use, so it can also be the pipeline's spill sink.
type LogSink struct {
	core zapcore.Core
	name string
}

// NewLogSink writes events through l. Give it NewEventLogger for lines
// that hold exactly the event; any other logger adds its own level,
// timestamp and message keys (and any fields it was built With).
func NewLogSink(l *zap.Logger) *LogSink { return &LogSink{core: l.Core(), name: l.Name()} }

// NewEventLogger returns a logger for LogSink whose JSON lines carry no
// level, timestamp, message or caller: only the event's fields. Writes to
// w are serialised, so lines from the sink's writer and from spills never
// interleave.
func NewEventLogger(w zapcore.WriteSyncer) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{LineEnding: zapcore.DefaultLineEnding})
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(w), zapcore.InfoLevel))
}

// Name implements Sink.
func (s *LogSink) Name() string { return "log" }

// Write implements Sink.
func (s *LogSink) Write(_ context.Context, batch []Event) error {
	ent := zapcore.Entry{Level: zapcore.InfoLevel, LoggerName: s.name, Message: "audit event", Time: time.Now()}
	fields := make([]zapcore.Field, 1)
	for i := range batch {
		// A copy: a core may keep its fields after Write (zap's observer
		// does), and the pipeline reuses the batch.
		e := batch[i]
		fields[0] = zap.Inline(&e)
		if err := s.core.Write(ent, fields); err != nil {
			return fmt.Errorf("audit: log sink: %w", err)
		}
	}
	return nil
}
