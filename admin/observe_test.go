package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
)

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func TestSecrets_NeverInLogsEventsMetricsOrErrors(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	e.do("GET", "/admin/v1/keys/"+k.ID, "")
	e.do("GET", "/admin/v1/keys?team_id=t1", "")
	e.do("PATCH", "/admin/v1/keys/"+k.ID, `{"name":"b"}`)
	// The key pasted where an id, a field, a parameter or the token belongs.
	for _, w := range []*httptest.ResponseRecorder{
		e.do("GET", "/admin/v1/keys/"+k.Key, ""),
		e.do("DELETE", "/admin/v1/keys/"+k.Key, ""),
		e.do("GET", "/admin/v1/keys/x"+k.Key+"x/y", ""),
		e.do("PATCH", "/admin/v1/keys/"+k.ID, `{"name":"`+k.Key+`","x":1}`),
		e.do("POST", "/admin/v1/keys", `{"`+k.Key+`":1}`),
		e.do("GET", "/admin/v1/keys?team_id=t1", "", "Authorization", "Bearer "+k.Key),
		e.do("GET", "/admin/v1/keys?"+k.Key+"=1&team_id=t1", ""),
		// As an unknown field or parameter name, whose problem quotes it.
		e.do("GET", "/admin/v1/audit?"+testToken+"=1", ""),
		e.do("GET", "/admin/v1/audit?x"+k.Key+"=1", ""),
		e.do("POST", "/admin/v1/keys", `{"`+testToken+`":1}`),
		// As an id or a name, which would be stored and recorded verbatim.
		e.do("POST", "/admin/v1/keys", `{"name":"n","user_id":"`+k.Key+`","team_id":"t1","role":"owner"}`),
		e.do("POST", "/admin/v1/keys", `{"name":"n","user_id":"u1","team_id":"t-`+testToken+`","role":"owner"}`),
		e.do("POST", "/admin/v1/keys", `{"name":"`+k.Key+`","user_id":"u1","team_id":"t1","role":"owner"}`),
		e.do("PUT", "/admin/v1/users/"+k.Key, `{"team_id":"t1","role":"owner","active":true}`),
		e.do("PUT", "/admin/v1/users/u1", `{"team_id":"`+testToken+`","role":"owner","active":true}`),
		e.do("PUT", "/admin/v1/teams/"+testToken, `{"active":true}`),
	} {
		if w.Code < 400 || containsAny(w.Body.String(), k.Key[len(e.format.Prefix()):len(k.Key)-6], testToken) {
			t.Errorf("status %d, body %s", w.Code, w.Body)
		}
	}
	// A name that only starts like a key is a name.
	if w := e.do("PATCH", "/admin/v1/keys/"+k.ID, `{"name":"wev_production"}`); w.Code != 200 {
		t.Errorf("PATCH name wev_production: %d %s", w.Code, w.Body)
	}
	e.do("DELETE", "/admin/v1/keys/"+k.ID, "")
	metrics := e.do("GET", "/metrics", "").Body.String()

	secrets := []string{k.Key, k.Key[len(e.format.Prefix())+4:], testToken}
	if e.logs.Len() < 10 {
		t.Fatalf("%d log lines, want one per request", e.logs.Len())
	}
	for _, en := range e.logs.All() {
		if line := fmt.Sprint(en.Message, en.ContextMap()); containsAny(line, secrets...) {
			t.Errorf("log line holds a secret: %s", line)
		}
	}
	var types []string
	for _, ev := range e.events.all() {
		types = append(types, ev.Type)
	}
	// Created, updated twice, revoked; and one admin.failed for each
	// refused change (10) and for the key offered as the admin token.
	if want := 4 + 11; len(types) != want || slices.Index(types, audit.TypeAdminFailed) != 2 {
		t.Fatalf("events %v, want %d: 4 actions and 11 admin.failed", types, want)
	}
	for _, ev := range e.events.all() {
		if containsAny(fmt.Sprintf("%+v", ev), secrets...) {
			t.Errorf("event holds a secret: %+v", ev)
		}
	}
	if !strings.Contains(metrics, "keyproxy_admin_requests_total") || containsAny(metrics, secrets...) {
		t.Errorf("metrics: %s", metrics)
	}
}

func TestLogs_OneLinePerRequestWithActorAndRequestID(t *testing.T) {
	e := newEnv(t)
	w := e.do("GET", "/admin/v1/keys?team_id=t1", "", "X-Actor-Id", "erin", "X-Request-Id", "req-42")
	e.do("GET", "/healthz", "", "Authorization", "")
	lines := e.logs.FilterMessage("admin request").All()
	if w.Code != 200 || len(lines) != 2 {
		t.Fatalf("status %d, %d lines", w.Code, len(lines))
	}
	got := lines[0].ContextMap()
	want := map[string]any{"method": "GET", "path": "/admin/v1/keys", "route": "GET /admin/v1/keys", "status": int64(200),
		"request_id": "req-42", "actor": "erin", "client_ip": "192.0.2.1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if _, ok := got["duration"]; !ok {
		t.Error("no duration")
	}
	if lines[0].Level.String() != "info" || lines[1].Level.String() != "debug" {
		t.Errorf("levels %s, %s: want info for /admin, debug for probes", lines[0].Level, lines[1].Level)
	}
}

// logSinkRecorder writes each event through a real audit.LogSink, so a test
// sees the "audit event" lines production writes.
type logSinkRecorder struct {
	mu   sync.Mutex
	next admin.Recorder
	sink *audit.LogSink
	out  bytes.Buffer
}

func newLogSinkRecorder(next admin.Recorder) *logSinkRecorder {
	r := &logSinkRecorder{next: next}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), lockedWriter{r}, zapcore.InfoLevel)
	r.sink = audit.NewLogSink(zap.New(core).Named("audit"))
	return r
}

func (r *logSinkRecorder) Record(ev audit.Event) {
	r.next.Record(ev)
	_ = r.sink.Write(context.Background(), []audit.Event{ev})
}

func (r *logSinkRecorder) lines() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

type lockedWriter struct{ r *logSinkRecorder }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.r.out.Write(b)
}

func (lockedWriter) Sync() error { return nil }

// TestSecrets_ActorUserAgentAndPathRedacted: a key or an admin token in
// X-Actor-Id, the user agent or the path reaches neither the audit event,
// nor the "audit event" line, nor the admin request line.
func TestSecrets_ActorUserAgentAndPathRedacted(t *testing.T) {
	key := newEnv(t).create("a", "u1", "t1", "owner").Key
	tests := []struct {
		name, method, path string
		hdr                []string
		wantActor, wantUA  string // in the event; "" when none is recorded
		wantLogPath        string
	}{
		{"actor is a key", "PUT", "/admin/v1/teams/team_actor", []string{"X-Actor-Id", key}, "[redacted]", "", "/admin/v1/teams/team_actor"},
		{"actor is the admin token", "PUT", "/admin/v1/teams/team_actor", []string{"X-Actor-Id", testToken}, "[redacted]", "", "/admin/v1/teams/team_actor"},
		{"actor holds the other admin token", "PUT", "/admin/v1/teams/team_actor", []string{"X-Actor-Id", "by " + otherToken}, "by [redacted]", "", "/admin/v1/teams/team_actor"},
		{"user agent holds a key and a token", "PUT", "/admin/v1/teams/team_actor", []string{"User-Agent", "ua " + key + " " + testToken},
			"", "ua [redacted] [redacted]", "/admin/v1/teams/team_actor"},
		{"path holds the admin token", "GET", "/admin/v1/keys/" + testToken, nil, "", "", "/admin/v1/keys/[redacted]"},
		{"path holds a key", "GET", "/admin/v1/keys/" + key, nil, "", "", "/admin/v1/keys/[redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec *logSinkRecorder
			e := newEnv(t, func(c *admin.Config) { rec = newLogSinkRecorder(c.Recorder); c.Recorder = rec })
			body := ""
			if tt.method == "PUT" {
				body = `{"active":true}`
			}
			w := e.do(tt.method, tt.path, body, tt.hdr...)
			if strings.Contains(w.Body.String(), key) || strings.Contains(w.Body.String(), testToken) {
				t.Errorf("the response holds a secret: %s", w.Body)
			}
			secrets := []string{key, key[len(e.format.Prefix())+4:], testToken, otherToken}
			if tt.method == "PUT" {
				if w.Code != 200 {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				ev := e.events.last(t)
				if ev.Actor != tt.wantActor {
					t.Errorf("event actor %q, want %q", ev.Actor, tt.wantActor)
				}
				if tt.wantUA != "" && ev.UserAgent != tt.wantUA {
					t.Errorf("event user agent %q, want %q", ev.UserAgent, tt.wantUA)
				}
				if containsAny(fmt.Sprintf("%+v", ev), secrets...) {
					t.Errorf("event holds a secret: %+v", ev)
				}
				if out := rec.lines(); !strings.Contains(out, `"audit event"`) || containsAny(out, secrets...) {
					t.Errorf("audit event lines hold a secret or none was written: %s", out)
				}
			}
			lines := e.logs.FilterMessage("admin request").All()
			if len(lines) != 1 {
				t.Fatalf("%d admin request lines, want 1", len(lines))
			}
			got := lines[0].ContextMap()
			if got["path"] != tt.wantLogPath {
				t.Errorf("logged path %v, want %q", got["path"], tt.wantLogPath)
			}
			if tt.wantActor != "" && got["actor"] != tt.wantActor {
				t.Errorf("logged actor %v, want %q", got["actor"], tt.wantActor)
			}
			for _, en := range e.logs.All() {
				if line := fmt.Sprint(en.Message, en.ContextMap()); containsAny(line, secrets...) {
					t.Errorf("log line holds a secret: %s", line)
				}
			}
		})
	}
}

// The admin token as X-Request-Id is replaced: the id is logged and audited.
func TestSecrets_AdminTokenAsRequestIDReplaced(t *testing.T) {
	e := newEnv(t)
	w := e.do("PUT", "/admin/v1/teams/t1", `{"active":true}`, "X-Request-Id", testToken)
	if w.Code != 200 || strings.Contains(w.Header().Get("X-Request-Id"), testToken) {
		t.Fatalf("status %d, X-Request-Id %q", w.Code, w.Header().Get("X-Request-Id"))
	}
	if ev := e.events.last(t); strings.Contains(ev.RequestID, testToken) {
		t.Errorf("event request id %q", ev.RequestID)
	}
}
