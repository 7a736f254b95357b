package audit

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// testLineCore is a LineCore over an ordinary core.
type testLineCore struct {
	zapcore.Core
	enc zapcore.Encoder
	out zapcore.WriteSyncer
}

func (c testLineCore) LineEncoder() (zapcore.Encoder, zapcore.WriteSyncer) { return c.enc, c.out }

// appendingEncoder encodes Reflect fields that have AppendJSON by it, as
// keyproxy's process logger does.
type appendingEncoder struct{ w io.Writer }

func (a appendingEncoder) Encode(v any) error {
	j, ok := v.(interface{ AppendJSON([]byte) []byte })
	if !ok {
		return fmt.Errorf("appendingEncoder: %T", v)
	}
	_, err := a.w.Write(j.AppendJSON(nil))
	return err
}

func logEncoders() map[string]zapcore.Encoder {
	cfg := zap.NewProductionEncoderConfig()
	// One time for every line, so two sinks' lines compare byte for byte.
	cfg.EncodeTime = func(_ time.Time, enc zapcore.PrimitiveArrayEncoder) { enc.AppendString("T") }
	withAppend := cfg
	withAppend.NewReflectedEncoder = func(w io.Writer) zapcore.ReflectedEncoder { return appendingEncoder{w} }
	return map[string]zapcore.Encoder{
		"json":    zapcore.NewJSONEncoder(withAppend),
		"console": zapcore.NewConsoleEncoder(withAppend),
		// zap's encoding/json encoder turns the mark into {}: the sink
		// must notice and go through the core.
		"json, zap's reflected encoder": zapcore.NewJSONEncoder(cfg),
	}
}

func TestLogSink_LineCoreWritesWhatTheCoreWrites(t *testing.T) {
	events := make([]Event, 300)
	for i := range events {
		events[i] = fullEvent()
		events[i].ID = fmt.Sprintf("evt_%04d", i)
		events[i].Path = fmt.Sprintf("/v1/a<b>&\"c\"/\u2028/%d", i)
	}
	for name, enc := range logEncoders() {
		t.Run(name, func(t *testing.T) {
			var viaCore, viaLines writeRecorder
			plain := NewLogSink(zap.New(zapcore.NewCore(enc, zapcore.AddSync(&viaCore), zapcore.InfoLevel)).Named("audit"))
			out := zapcore.AddSync(&viaLines)
			lc := testLineCore{Core: zapcore.NewCore(enc, out, zapcore.InfoLevel), enc: enc, out: out}
			fast := NewLogSink(zap.New(lc).Named("audit"))
			for range 2 { // the second batch reuses the sink's buffer
				viaCore.writes, viaLines.writes = nil, nil
				if err := plain.Write(context.Background(), events); err != nil {
					t.Fatal(err)
				}
				if err := fast.Write(context.Background(), events); err != nil {
					t.Fatal(err)
				}
				want, got := joined(viaCore.writes), joined(viaLines.writes)
				if got != want {
					t.Fatalf("lines differ from the core's; first line\n got %.300q\nwant %.300q", got, want)
				}
				if !strings.Contains(want, `"id":"evt_0299"`) || strings.Count(want, "\n") != len(events) {
					t.Fatalf("the core's lines are not the %d events: %.300q", len(events), want)
				}
				chunked := len(viaLines.writes) < len(events)/10
				if wantChunks := !strings.Contains(name, "zap's"); chunked != wantChunks {
					t.Fatalf("%d writes for %d events; want chunks: %v", len(viaLines.writes), len(events), wantChunks)
				}
			}
		})
	}
}

func joined(writes [][]byte) string {
	var b strings.Builder
	for _, w := range writes {
		b.Write(w)
	}
	return b.String()
}

func TestLogSink_LineCoreReportsWriteFailures(t *testing.T) {
	enc := logEncoders()["json"]
	out := zapcore.AddSync(failingWriter{})
	sink := NewLogSink(zap.New(testLineCore{Core: zapcore.NewCore(enc, out, zapcore.InfoLevel), enc: enc, out: out}))
	if err := sink.Write(context.Background(), []Event{fullEvent()}); err == nil {
		t.Fatal("Write succeeded on a failing output")
	}
}
