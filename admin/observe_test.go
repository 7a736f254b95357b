package admin_test

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
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
	} {
		if w.Code < 400 || strings.Contains(w.Body.String(), k.Key) {
			t.Errorf("status %d, body %s", w.Code, w.Body)
		}
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
	if n := len(e.events.all()); n != 3 {
		t.Fatalf("%d events, want created, updated, revoked", n)
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
