package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newLogger builds the process logger on w (stderr in production). The level
// is an AtomicLevel so SIGHUP can change it without rebuilding the logger.
// Sampling is off: access lines and audit spills must all be written.
// With flush > 0 lines are buffered (256 KiB) and written at least every
// flush: one write(2) per access line cost more than the rest of the
// request's authentication. stop flushes and ends the flusher.
func newLogger(level, format string, w io.Writer, flush time.Duration) (_ *zap.Logger, _ zap.AtomicLevel, stop func(), _ error) {
	lvl, err := zap.ParseAtomicLevel(level)
	if err != nil {
		return nil, lvl, nil, fmt.Errorf("log.level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "time"
	encCfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	encCfg.EncodeDuration = millisFloat
	scratch := &sync.Pool{New: func() any { return new([]byte) }}
	encCfg.NewReflectedEncoder = func(w io.Writer) zapcore.ReflectedEncoder {
		return &reflectedEncoder{w: w, scratch: scratch}
	}
	var enc zapcore.Encoder
	switch format {
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		if f, ok := w.(*os.File); !ok || !isTerminal(f) {
			encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	var out zapcore.WriteSyncer = zapcore.Lock(zapcore.AddSync(w))
	stop = func() { _ = out.Sync() }
	if flush > 0 {
		// The buffer's flush loop calls Sync every interval: on a log file
		// that is an fsync, tens of milliseconds on a busy disk during which
		// the runtime's only P (GOMAXPROCS=1) serves no request. The buffer
		// is written out, not synced: the kernel has the lines either way.
		buf := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(writeOnly{w}), Size: 256 << 10, FlushInterval: flush}
		out, stop = buf, func() { _ = buf.Stop() }
	}
	core := lineCore{Core: zapcore.NewCore(enc, out, lvl), enc: enc, out: out}
	return zap.New(core, zap.ErrorOutput(out)), lvl, stop, nil
}

// lineCore is the process log's core, which hands the audit log sink its
// encoder and output (audit.LineCore) so the sink writes its lines in
// chunks. A logger derived With fields has zap's own core, without this.
type lineCore struct {
	zapcore.Core
	enc zapcore.Encoder
	out zapcore.WriteSyncer
}

func (c lineCore) LineEncoder() (zapcore.Encoder, zapcore.WriteSyncer) { return c.enc, c.out }

// jsonAppender is a value that encodes itself as JSON without reflection:
// audit.Event, which the audit log sink hands the logger as a Reflect field.
type jsonAppender interface{ AppendJSON([]byte) []byte }

// reflectedEncoder encodes zap's Reflect fields: a jsonAppender by its own
// method (an audit event costs the log sink 1.5 µs of CPU so, 2.0 µs with
// zap's field-by-field encoder: BenchmarkAuditLogSink), anything else as
// zap's default encoder does.
type reflectedEncoder struct {
	w       io.Writer
	scratch *sync.Pool // *[]byte
	std     *json.Encoder
}

func (r *reflectedEncoder) Encode(v any) error {
	if a, ok := v.(jsonAppender); ok {
		p := r.scratch.Get().(*[]byte)
		*p = a.AppendJSON((*p)[:0])
		_, err := r.w.Write(*p)
		if cap(*p) <= 64<<10 {
			r.scratch.Put(p)
		}
		return err
	}
	if r.std == nil {
		r.std = json.NewEncoder(r.w)
		r.std.SetEscapeHTML(false)
	}
	return r.std.Encode(v)
}

// writeOnly hides an *os.File's Sync from zapcore.AddSync.
type writeOnly struct{ io.Writer }

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// millisFloat writes durations as fractional milliseconds: whole
// milliseconds would show most proxied requests as 0.
func millisFloat(d time.Duration, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendFloat64(float64(d) / float64(time.Millisecond))
}
