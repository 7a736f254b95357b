package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

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
