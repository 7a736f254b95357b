package proxy_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

func TestAuditEvents(t *testing.T) {
	valid := func(t *testing.T, e *env) (string, keystore.Identity) { return e.validKey, e.identity }
	spec := func(s keySpec) func(t *testing.T, e *env) (string, keystore.Identity) {
		return func(t *testing.T, e *env) (string, keystore.Identity) { return e.newKey(t, s) }
	}
	tests := []struct {
		name string
		opts []option
		// key returns the key to send ("" for none) and its identity.
		key     func(t *testing.T, e *env) (string, keystore.Identity)
		typ     string
		outcome string
		status  int
		named   bool // the event carries the key's identity
		ids     bool // the event names the key and its owner, without a role
		start   bool // the event carries the key's display start
	}{
		{name: "admitted request", key: valid, typ: audit.TypeAPIRequest, outcome: audit.OutcomeAllowed, status: 200, named: true},
		{name: "missing key", key: func(*testing.T, *env) (string, keystore.Identity) { return "", keystore.Identity{} },
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeMissingKey, status: 401},
		{name: "unknown key names only its display start",
			key: func(t *testing.T, e *env) (string, keystore.Identity) {
				k, _ := e.format.Generate()
				return k, keystore.Identity{}
			},
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeInvalidKey, status: 401, start: true},
		{name: "revoked key is named", key: spec(keySpec{revoked: true}),
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeInvalidKey, status: 401, start: true, ids: true},
		{name: "expired key is named", key: spec(keySpec{expired: true}),
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeInvalidKey, status: 401, start: true, ids: true},
		{name: "deactivated owner's key is named", key: spec(keySpec{ownerInactive: true}),
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeInvalidKey, status: 401, start: true, ids: true},
		// The key's team, not the one its owner moved to: that team never
		// had the key.
		{name: "moved owner's key is named in its own team", key: spec(keySpec{ownerMoved: true}),
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeInvalidKey, status: 401, start: true, ids: true},
		{name: "key an earlier release left behind a move is named in its own team", key: spec(keySpec{ownerLeft: true}),
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeInvalidKey, status: 401, start: true, ids: true},
		{name: "junk key has no display start",
			key: func(*testing.T, *env) (string, keystore.Identity) {
				return "wev_!!!!" + strings.Repeat("x", 40), keystore.Identity{}
			},
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeInvalidKey, status: 401},
		{name: "inactive team", key: spec(keySpec{teamInactive: true}),
			typ: audit.TypeAPIRequest, outcome: audit.OutcomeInactiveTeam, status: 403, named: true},
		{name: "rate limited", opts: []option{func(c *proxy.Config) {
			c.Limiter = &fixedLimiter{res: ratelimit.Result{RetryAfter: time.Second}}
		}}, key: valid, typ: audit.TypeAPIRequest, outcome: audit.OutcomeRateLimited, status: 429, named: true},
		{name: "store unavailable",
			key: func(t *testing.T, e *env) (string, keystore.Identity) { e.store.Close(); return e.validKey, e.identity },
			typ: audit.TypeAuthFailed, outcome: audit.OutcomeUnavailable, status: 503, start: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts...)
			key, id := tt.key(t, e)
			h := [][2]string{
				{"User-Agent", strings.Repeat("é", 200)}, // 400 bytes
				{"X-Request-Id", "audit-1"},
			}
			if key != "" {
				h = append(h, bearer(key))
			}
			before := time.Now().UTC()
			e.do(t, "PUT", "/v1/things/42?secret=query", h)
			evs := e.rec.wait(t, 1)
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1", len(evs))
			}
			got := evs[0]
			if got.Time.Before(before.Add(-time.Second)) || got.Time.Location() != time.UTC {
				t.Errorf("time = %v, want about now in UTC", got.Time)
			}
			if got.DurationMS <= 0 {
				t.Errorf("duration_ms = %v", got.DurationMS)
			}
			if len(got.UserAgent) > 256 || len(got.UserAgent) < 255 || !strings.HasPrefix(strings.Repeat("é", 200), got.UserAgent) {
				t.Errorf("user_agent not truncated to 256 bytes on a character boundary: %d bytes", len(got.UserAgent))
			}
			want := audit.Event{Type: tt.typ, Outcome: tt.outcome, Status: tt.status,
				RequestID: "audit-1", Method: "PUT", Path: "/v1/things/42", ClientIP: "127.0.0.1",
				Time: got.Time, DurationMS: got.DurationMS, UserAgent: got.UserAgent}
			if tt.named {
				want.KeyID, want.UserID, want.TeamID, want.Role = id.KeyID, id.UserID, id.TeamID, id.Role
			}
			if tt.ids {
				want.KeyID, want.UserID, want.TeamID = id.KeyID, id.UserID, id.TeamID
			}
			if tt.start {
				want.KeyStart = key[:len("wev_")+4]
			}
			if got != want {
				t.Errorf("event\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.do(t, "GET", "/", [][2]string{bearer(e.validKey)})
	e.do(t, "GET", "/", nil)
	e.do(t, "GET", "/", [][2]string{bearer("wev_junk")})
	e.rec.wait(t, 3) // events are recorded after the metrics

	want := `
# HELP keyproxy_http_requests_total Data-plane requests by response status code and outcome.
# TYPE keyproxy_http_requests_total counter
keyproxy_http_requests_total{code="200",outcome="allowed"} 1
keyproxy_http_requests_total{code="400",outcome="invalid_request_body"} 0
keyproxy_http_requests_total{code="401",outcome="invalid_key"} 1
keyproxy_http_requests_total{code="401",outcome="missing_key"} 1
keyproxy_http_requests_total{code="403",outcome="subscription_inactive"} 0
keyproxy_http_requests_total{code="405",outcome="method_not_allowed"} 0
keyproxy_http_requests_total{code="429",outcome="auth_throttled"} 0
keyproxy_http_requests_total{code="429",outcome="rate_limited"} 0
keyproxy_http_requests_total{code="502",outcome="upstream_error"} 0
keyproxy_http_requests_total{code="503",outcome="auth_unavailable"} 0
keyproxy_http_requests_total{code="504",outcome="upstream_error"} 0
# HELP keyproxy_http_requests_in_flight Data-plane requests being served.
# TYPE keyproxy_http_requests_in_flight gauge
keyproxy_http_requests_in_flight 0
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want),
		"keyproxy_http_requests_total", "keyproxy_http_requests_in_flight"); err != nil {
		t.Error(err)
	}
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				name := f.GetName()
				for _, l := range m.GetLabel() {
					name += "/" + l.GetValue()
				}
				counts[name] = h.GetSampleCount()
			}
		}
	}
	for name, want := range map[string]uint64{
		"keyproxy_upstream_duration_seconds":                    1,
		"keyproxy_http_request_duration_seconds/allowed":        1,
		"keyproxy_http_request_duration_seconds/missing_key":    1,
		"keyproxy_http_request_duration_seconds/invalid_key":    1,
		"keyproxy_http_request_duration_seconds/rate_limited":   0,
		"keyproxy_http_request_duration_seconds/upstream_error": 0,
	} {
		if counts[name] != want {
			t.Errorf("%s count = %d, want %d", name, counts[name], want)
		}
	}
}

// TestMetrics_RefusedKeysByReason: each refusal of a key the store knows
// is counted under its reason; unknown and malformed keys are not.
func TestMetrics_RefusedKeysByReason(t *testing.T) {
	e := newEnv(t)
	unknown, _ := e.format.Generate()
	for _, spec := range []keySpec{{revoked: true}, {expired: true}, {ownerInactive: true}, {ownerMoved: true}, {ownerLeft: true}, {ownerLeft: true}, {teamInactive: true}} {
		key, _ := e.newKey(t, spec)
		e.do(t, "GET", "/", [][2]string{bearer(key)})
	}
	e.do(t, "GET", "/", [][2]string{bearer(unknown)})
	e.do(t, "GET", "/", [][2]string{bearer("wev_junk")})
	e.rec.wait(t, 9)
	want := `
# HELP keyproxy_auth_refused_keys_total Requests refused with a key the store knows, by reason (revoked, expired, owner_inactive, owner_moved); unknown and malformed keys are the rest of outcome invalid_key.
# TYPE keyproxy_auth_refused_keys_total counter
keyproxy_auth_refused_keys_total{reason="expired"} 1
keyproxy_auth_refused_keys_total{reason="owner_inactive"} 1
keyproxy_auth_refused_keys_total{reason="owner_moved"} 2
keyproxy_auth_refused_keys_total{reason="revoked"} 2
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "keyproxy_auth_refused_keys_total"); err != nil {
		t.Error(err)
	}
}

func TestAccessLogHasOneLinePerRequest(t *testing.T) {
	e := newEnv(t)
	e.do(t, "GET", "/v1/things?x=1", [][2]string{bearer(e.validKey), {"X-Request-Id", "log-1"}})
	e.do(t, "DELETE", "/v1/other", [][2]string{{"X-Request-Id", "log-2"}})
	e.rec.wait(t, 2)
	lines := e.logs.FilterMessage("request").All()
	if len(lines) != 2 {
		t.Fatalf("%d access log lines, want 2", len(lines))
	}
	byID := map[string]map[string]any{}
	for _, l := range lines {
		f := l.ContextMap()
		byID[f["request_id"].(string)] = f
	}
	checks := map[string]map[string]any{
		"log-1": {"key_id": e.identity.KeyID, "method": "GET", "path": "/v1/things", "status": int64(200), "outcome": "allowed"},
		"log-2": {"key_id": "", "method": "DELETE", "path": "/v1/other", "status": int64(401), "outcome": "missing_key"},
	}
	for id, want := range checks {
		got := byID[id]
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v (%T), want %v", id, k, got[k], got[k], v)
			}
		}
		if _, ok := got["duration"].(time.Duration); !ok {
			t.Errorf("%s: duration = %v", id, got["duration"])
		}
	}
}

// The access line's fields are added by one marshaler (zap.Inline); in
// JSON they stand flat, in this order, with an empty key_id kept.
func TestAccessLogLineInJSON(t *testing.T) {
	// The handler writes its access line before it records the event, so
	// once rec.wait has the events (under the recorder's lock) the lines
	// are in out; Lock serialises the servers' writes.
	var out bytes.Buffer
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{MessageKey: "msg", EncodeDuration: zapcore.StringDurationEncoder})
	e := newEnv(t, func(c *proxy.Config) {
		c.Logger = zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(&out)), zapcore.InfoLevel))
	})
	e.do(t, "GET", "/v1/things?x=1", [][2]string{bearer(e.validKey), {"X-Request-Id", "json-1"}})
	e.do(t, "DELETE", "/v1/other", [][2]string{{"X-Request-Id", "json-2"}})
	e.rec.wait(t, 2)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\{"msg":"request","request_id":"json-1","key_id":"` + e.identity.KeyID + `","method":"GET","path":"/v1/things","status":200,"duration":"[0-9.]+[µnm]?s","outcome":"allowed"\}$`),
		regexp.MustCompile(`(?m)^\{"msg":"request","request_id":"json-2","key_id":"","method":"DELETE","path":"/v1/other","status":401,"duration":"[0-9.]+[µnm]?s","outcome":"missing_key"\}$`),
	} {
		if !want.MatchString(out.String()) {
			t.Errorf("no line matches %s in:\n%s", want, out.String())
		}
	}
}

// TestKeysNeverLeak sends keys every way a client might and searches every
// log line, audit event and the metrics for them.
func TestKeysNeverLeak(t *testing.T) {
	e := newEnv(t, func(c *proxy.Config) { c.Upstream = mustURL(t, closedPort(t)) })
	unknown, _ := e.format.Generate()
	revoked, _ := e.newKey(t, keySpec{revoked: true})
	keys := []string{e.validKey, unknown, revoked, flipLast(e.validKey)}
	for _, k := range keys {
		e.do(t, "GET", "/v1/x?api_key="+k, [][2]string{bearer(k)})
		e.do(t, "GET", "/v1/x", [][2]string{bearer(k), bearer(k)})
		e.do(t, "GET", "/v1/x", [][2]string{{"Authorization", "Basic " + k}})
	}
	e.rec.wait(t, 3*len(keys))
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exposition := fmt.Sprint(families)
	for _, k := range keys {
		if e.leaks(k) {
			t.Errorf("key %s... found in logs or audit events", k[:8])
		}
		if strings.Contains(exposition, k) {
			t.Errorf("key %s... found in metrics", k[:8])
		}
	}
	if len(e.logs.FilterMessage("upstream request failed").All()) == 0 {
		t.Error("upstream failures were not logged, so this test proved little")
	}
}

// TestAdminTokensNeverLeak: an admin token a client put in its path, user
// agent or request id is redacted like a key, in the access log line and
// in the audit event.
func TestAdminTokensNeverLeak(t *testing.T) {
	const token = "admin-token-0123456789abcdef"
	tests := []struct {
		name     string
		path     string
		header   func(e *env) [][2]string
		wantPath string
		wantUA   string
	}{
		{"token in the path, no key", "/v1/" + token + "/x", func(*env) [][2]string { return nil }, "/v1/[redacted]/x", ""},
		{"token in the path, valid key", "/v1/" + token, func(e *env) [][2]string { return [][2]string{bearer(e.validKey)} }, "/v1/[redacted]", ""},
		{"token and key in the user agent", "/v1/x", func(e *env) [][2]string {
			return [][2]string{{"User-Agent", "ua " + e.validKey + " " + token}}
		}, "/v1/x", "ua [redacted] [redacted]"},
		{"token as the request id", "/v1/x", func(e *env) [][2]string { return [][2]string{{"X-Request-Id", token}} }, "/v1/x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *proxy.Config) { c.AdminTokens = []string{token} })
			e.do(t, "GET", tt.path, tt.header(e))
			ev := e.rec.wait(t, 1)[0]
			if ev.Path != tt.wantPath {
				t.Errorf("event path %q, want %q", ev.Path, tt.wantPath)
			}
			if tt.wantUA != "" && ev.UserAgent != tt.wantUA {
				t.Errorf("event user agent %q, want %q", ev.UserAgent, tt.wantUA)
			}
			lines := e.logs.FilterMessage("request").All()
			if len(lines) != 1 || lines[0].ContextMap()["path"] != tt.wantPath {
				t.Errorf("access log lines %v, want one with path %q", lines, tt.wantPath)
			}
			if e.leaks(token) {
				t.Error("the admin token is in a log line or the audit event")
			}
			if e.leaks(e.validKey) {
				t.Error("the key is in a log line or the audit event")
			}
		})
	}
}
