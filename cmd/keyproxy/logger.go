package main

import (
	"fmt"
	"io"
	"os"
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
	core := zapcore.NewCore(enc, out, lvl)
	return zap.New(core, zap.ErrorOutput(out)), lvl, stop, nil
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
