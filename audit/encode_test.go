package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func fullEvent() Event {
	return Event{
		ID: "evt_01HZY3J8Q4W7XK2N5B6C7D8E9F", Time: time.Date(2025, 3, 4, 5, 6, 7, 891011000, time.UTC),
		Type: TypeAPIRequest, RequestID: "req-1", KeyID: "key_abc", KeyStart: "wev_7Hk2", UserID: "usr_1",
		TeamID: "team_1", Role: "admin", Actor: "act_9", Method: "POST", Path: "/v1/reports",
		Status: 201, DurationMS: 12.5, ClientIP: "203.0.113.7", UserAgent: "curl/8.5", Outcome: OutcomeAllowed,
	}
}

func TestAppendJSON_MatchesEncodingJSON(t *testing.T) {
	tests := []struct {
		name string
		e    Event
	}{
		{"every field", fullEvent()},
		{"only required fields", Event{ID: "evt_1", Time: time.Unix(0, 0).UTC(), Type: TypeKeyRevoked}},
		{"zero event", Event{}},
		{"escapes quotes, controls and html", Event{Path: "/a\"b\\c\n\t\r\b\f\x01<script>&", UserAgent: "\u2028\u2029"}},
		{"invalid utf-8", Event{UserAgent: "bad \xff\xfe bytes", Path: "/\xc3"}},
		{"non-ascii", Event{Actor: "Zoë 日本 🚀"}},
		{"tiny and huge durations", Event{DurationMS: 1e-7, Status: -1}},
		{"huge duration", Event{DurationMS: 1e22}},
		{"negative duration", Event{DurationMS: -0.25}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := json.Marshal(tt.e)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.e.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("AppendJSON\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestAppendJSON_OmitsNonFiniteDuration(t *testing.T) {
	for _, d := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		e := Event{ID: "evt_1", DurationMS: d}
		var back Event
		if err := json.Unmarshal(e.AppendJSON(nil), &back); err != nil {
			t.Fatalf("duration %v: output is not JSON: %v", d, err)
		}
		if back.DurationMS != 0 {
			t.Fatalf("duration %v encoded as %v", d, back.DurationMS)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("evt_1", int64(1700000000123456), "/v1/x", "curl/8", "key_1", 200, 1.5)
	f.Add("", int64(0), "/\xff\x00<>&\u2028", "\"\\", "", 0, 0.0)
	f.Add("e", int64(-62135596800000000), "\t\n", "Zoë", "k", -7, 1e-9)
	f.Fuzz(func(t *testing.T, id string, micros int64, path, ua, key string, status int, dur float64) {
		at := time.UnixMicro(micros).UTC()
		if at.Year() < 0 || at.Year() > 9999 {
			t.Skip("encoding/json cannot marshal this year")
		}
		if math.IsNaN(dur) || math.IsInf(dur, 0) {
			t.Skip("encoding/json refuses non-finite numbers")
		}
		e := Event{ID: id, Time: at, Type: TypeAPIRequest, Path: path, UserAgent: ua, KeyID: key, Status: status, DurationMS: dur}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON\n got %s\nwant %s", got, want)
		}
	})
}

func TestLogSink_WritesOneLinePerEventWithExactlyItsFields(t *testing.T) {
	var buf bytes.Buffer
	sink := NewEventLogSink(zapcore.AddSync(&buf))
	events := []Event{fullEvent(), {ID: "evt_2", Time: time.Unix(1, 0).UTC(), Type: TypeTeamUpdated, Actor: "a<b>&\"c\""}}
	if err := sink.Write(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(events) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(events), buf.String())
	}
	for i, line := range lines {
		var got, want map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		b, _ := json.Marshal(events[i])
		_ = json.Unmarshal(b, &want)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("line %d\n got %v\nwant %v", i, got, want)
		}
	}
}

// writeRecorder keeps each Write's bytes apart.
type writeRecorder struct{ writes [][]byte }

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func TestEventLogSink_WritesWholeLinesInChunks(t *testing.T) {
	var w writeRecorder
	sink := NewEventLogSink(zapcore.AddSync(&w))
	events := make([]Event, 1000)
	for i := range events {
		events[i] = fullEvent()
		events[i].ID = fmt.Sprintf("evt_%04d", i)
	}
	for range 2 { // the second batch reuses the sink's buffer
		w.writes = nil
		if err := sink.Write(context.Background(), events); err != nil {
			t.Fatal(err)
		}
		if n := len(w.writes); n < 2 || n > len(events)/10 {
			t.Fatalf("%d writes for %d events: want a few chunks", n, len(events))
		}
		var ids []string
		for i, chunk := range w.writes {
			if len(chunk) == 0 || chunk[len(chunk)-1] != '\n' || len(chunk) > lineChunk+1024 {
				t.Fatalf("write %d: %d bytes, last %q: want whole lines, about %d bytes", i, len(chunk), chunk[len(chunk)-1:], lineChunk)
			}
			for _, line := range strings.Split(strings.TrimSuffix(string(chunk), "\n"), "\n") {
				var got Event
				if err := json.Unmarshal([]byte(line), &got); err != nil {
					t.Fatalf("write %d: line is not an event: %v\n%s", i, err, line)
				}
				ids = append(ids, got.ID)
			}
		}
		if len(ids) != len(events) || ids[0] != "evt_0000" || ids[len(ids)-1] != "evt_0999" {
			t.Fatalf("%d events written, first %s, last %s", len(ids), ids[0], ids[len(ids)-1])
		}
	}
}

// An audit trail must not be thinned out by the logger's sampling or its
// level: those are for operational logs.
func TestLogSink_NestsTheEventInAnOrdinaryLogEntry(t *testing.T) {
	var buf bytes.Buffer
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{TimeKey: "time", MessageKey: "msg", EncodeTime: zapcore.RFC3339NanoTimeEncoder})
	sink := NewLogSink(zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.InfoLevel)))
	e := fullEvent()
	if err := sink.Write(context.Background(), []Event{e}); err != nil {
		t.Fatal(err)
	}
	var line struct {
		Msg   string `json:"msg"`
		Event Event  `json:"event"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String())
	}
	if line.Msg != "audit event" || line.Event != e {
		t.Fatalf("line %s\ndecodes to %+v", buf.String(), line)
	}
	if strings.Count(buf.String(), `"time"`) != 2 {
		t.Fatalf("want the entry's time and the event's, apart: %s", buf.String())
	}
}

func TestLogSink_IgnoresTheLoggersSamplingAndLevel(t *testing.T) {
	var buf bytes.Buffer
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.ErrorLevel)
	sampled := zapcore.NewSamplerWithOptions(core, time.Minute, 1, 0)
	sink := NewLogSink(zap.New(sampled))
	batch := make([]Event, 50)
	for i := range batch {
		batch[i] = Event{ID: "evt_x", Type: TypeAPIRequest}
	}
	if err := sink.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != len(batch) {
		t.Fatalf("%d lines written, want %d", n, len(batch))
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestLogSink_ReportsWriteFailures(t *testing.T) {
	sink := NewEventLogSink(zapcore.AddSync(failingWriter{}))
	if err := sink.Write(context.Background(), []Event{fullEvent()}); err == nil {
		t.Fatal("Write succeeded on a failing output")
	}
}
