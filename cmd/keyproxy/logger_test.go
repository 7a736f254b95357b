package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/audit"
)

func TestLogger_EncodesAuditEventsWithTheirOwnEncoder(t *testing.T) {
	var buf bytes.Buffer
	logger, _, stop, err := newLogger("info", "json", &buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	ev := audit.Event{
		ID: "evt_1", Time: time.Date(2026, 11, 26, 10, 0, 0, 5, time.UTC), Type: audit.TypeAPIRequest,
		KeyID: "key_1", Method: "GET", Path: "/a<b>&c\u2028", Status: 200, DurationMS: 0.25,
		UserAgent: "bot \"quoted\" é", Outcome: audit.OutcomeAllowed,
	}
	if err := audit.NewLogSink(logger.Named("audit")).Write(context.Background(), []audit.Event{ev}); err != nil {
		t.Fatal(err)
	}
	logger.Info("other", zap.Reflect("plain", map[string]string{"html": "<b>"}))
	stop()

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	var entry struct {
		Level, Logger, Msg string
		Event              map[string]any
	}
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatalf("%s: %v", lines[0], err)
	}
	var want map[string]any
	if err := json.Unmarshal(ev.AppendJSON(nil), &want); err != nil {
		t.Fatal(err)
	}
	if entry.Level != "info" || entry.Logger != "audit" || entry.Msg != "audit event" || !reflect.DeepEqual(entry.Event, want) {
		t.Fatalf("entry %+v\nwant the event %v", entry, want)
	}
	// Only the event's own encoder escapes '<' (zap's leaves it): the fast
	// path was taken.
	if !strings.Contains(lines[0], `\u003cb\u003e`) {
		t.Errorf("event not encoded by Event.AppendJSON: %s", lines[0])
	}
	// Other Reflect values are encoded as zap's default encoder does.
	if !strings.Contains(lines[1], `"plain":{"html":"<b>"}`) {
		t.Errorf("plain Reflect field: %s", lines[1])
	}
}

// chunkRecorder keeps each Write's bytes apart.
type chunkRecorder struct{ writes []string }

func (w *chunkRecorder) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// The process logger lets the audit log sink write its lines in chunks
// (audit.LineCore), and those lines are the ones zap's core would write.
func TestLogger_AuditLinesAreTheCoresInChunks(t *testing.T) {
	entryTime := map[string]*regexp.Regexp{
		"json":    regexp.MustCompile(`(?m)^\{"level":"info","time":"[^"]*"`),
		"console": regexp.MustCompile(`(?m)^[^\t\n]*\t`),
	}
	events := make([]audit.Event, 200)
	for i := range events {
		events[i] = audit.Event{ID: fmt.Sprintf("evt_%03d", i), Time: time.Unix(int64(i), 0).UTC(),
			Type: audit.TypeAPIRequest, Path: "/a<b>&\"c\"", Status: 200, Outcome: audit.OutcomeAllowed}
	}
	for format, stamp := range entryTime {
		t.Run(format, func(t *testing.T) {
			var w chunkRecorder
			logger, _, stop, err := newLogger("info", format, &w, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			if _, ok := logger.Core().(audit.LineCore); !ok {
				t.Fatalf("the process logger's core %T is not an audit.LineCore", logger.Core())
			}
			if err := audit.NewLogSink(logger.Named("audit")).Write(context.Background(), events); err != nil {
				t.Fatal(err)
			}
			if len(w.writes) != 1 {
				t.Fatalf("%d writes for %d events, want one chunk", len(w.writes), len(events))
			}
			got := w.writes[0]
			w.writes = nil
			plain := logger.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return c.(lineCore).Core }))
			if err := audit.NewLogSink(plain.Named("audit")).Write(context.Background(), events); err != nil {
				t.Fatal(err)
			}
			if len(w.writes) != len(events) {
				t.Fatalf("zap's core wrote %d times for %d events", len(w.writes), len(events))
			}
			want := strings.Join(w.writes, "")
			if n := len(stamp.FindAllString(want, -1)); n != len(events) {
				t.Fatalf("%d entry times found in %d lines: %.200q", n, len(events), want)
			}
			if got, want := stamp.ReplaceAllString(got, "T"), stamp.ReplaceAllString(want, "T"); got != want {
				t.Fatalf("lines differ from the core's:\n got %.300q\nwant %.300q", got, want)
			}
		})
	}
}
