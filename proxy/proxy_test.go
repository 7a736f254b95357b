package proxy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/internal/problem"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

const (
	wwwAuthMissing = `Bearer realm="wevion"`
	wwwAuthInvalid = `Bearer realm="wevion", error="invalid_token"`
)

type problemBody struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
}

// checkProblem asserts an RFC 9457 answer with the given status and code
// whose request_id is the echoed X-Request-Id.
func checkProblem(t *testing.T, res *http.Response, body string, status int, code string) problemBody {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status = %d, want %d (body %s)", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	var p problemBody
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if p.Code != code || p.Status != status || p.Type != problem.TypeBase+code || p.Title == "" {
		t.Errorf("problem = %+v, want code %s status %d", p, code, status)
	}
	if rid := res.Header.Get("X-Request-Id"); rid == "" || p.RequestID != rid {
		t.Errorf("request_id %q, X-Request-Id %q: want equal and set", p.RequestID, rid)
	}
	return p
}

// TestDataPlaneOutcomes walks DESIGN.md's status/code table.
func TestDataPlaneOutcomes(t *testing.T) {
	tests := []struct {
		name string
		opts []option
		// prepare returns the request's headers (and path, default "/v1/things").
		prepare        func(t *testing.T, e *env) ([][2]string, string)
		status         int
		code           string // empty: admitted
		wwwAuth        string
		retryAfter     string
		resolverCalled bool
	}{
		{name: "valid key is admitted", status: 200, resolverCalled: true,
			prepare: func(t *testing.T, e *env) ([][2]string, string) { return [][2]string{bearer(e.validKey)}, "" }},
		{name: "scheme is case-insensitive", status: 200, resolverCalled: true,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return [][2]string{{"Authorization", "bEaReR " + e.validKey}}, ""
			}},
		{name: "no Authorization", status: 401, code: proxy.CodeMissingAPIKey, wwwAuth: wwwAuthMissing,
			prepare: func(t *testing.T, e *env) ([][2]string, string) { return nil, "" }},
		{name: "Basic scheme", status: 401, code: proxy.CodeMissingAPIKey, wwwAuth: wwwAuthMissing,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return [][2]string{{"Authorization", "Basic dXNlcjpwYXNz"}}, ""
			}},
		{name: "Bearer without token", status: 401, code: proxy.CodeMissingAPIKey, wwwAuth: wwwAuthMissing,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return [][2]string{{"Authorization", "Bearer   "}}, ""
			}},
		{name: "key only in the query string", status: 401, code: proxy.CodeMissingAPIKey, wwwAuth: wwwAuthMissing,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return nil, "/v1/things?api_key=" + e.validKey + "&access_token=" + e.validKey
			}},
		{name: "two Authorization lines", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return [][2]string{bearer(e.validKey), bearer(e.validKey)}, ""
			}},
		{name: "two tokens", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return [][2]string{bearer(e.validKey + " " + e.validKey)}, ""
			}},
		{name: "Authorization over 1 KiB", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return [][2]string{bearer(e.validKey + strings.Repeat("A", 1024))}, ""
			}},
		{name: "malformed key", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid,
			prepare: func(t *testing.T, e *env) ([][2]string, string) { return [][2]string{bearer("wev_short")}, "" }},
		{name: "bad checksum", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				return [][2]string{bearer(flipLast(e.validKey))}, ""
			}},
		{name: "unknown key", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid, resolverCalled: true,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				k, _ := e.format.Generate()
				return [][2]string{bearer(k)}, ""
			}},
		{name: "revoked key", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid, resolverCalled: true,
			prepare: withSpec(keySpec{revoked: true})},
		{name: "expired key", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid, resolverCalled: true,
			prepare: withSpec(keySpec{expired: true})},
		{name: "owner deactivated", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid, resolverCalled: true,
			prepare: withSpec(keySpec{ownerInactive: true})},
		{name: "owner moved to another team", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid, resolverCalled: true,
			prepare: withSpec(keySpec{ownerMoved: true})},
		{name: "owner moved by an earlier release, key left unrevoked", status: 401, code: proxy.CodeInvalidAPIKey, wwwAuth: wwwAuthInvalid,
			resolverCalled: true, prepare: withSpec(keySpec{ownerLeft: true})},
		{name: "team inactive", status: 403, code: proxy.CodeSubscriptionInactive, resolverCalled: true,
			prepare: withSpec(keySpec{teamInactive: true})},
		{name: "store unavailable", status: 503, code: proxy.CodeAuthUnavailable, retryAfter: "1", resolverCalled: true,
			prepare: func(t *testing.T, e *env) ([][2]string, string) {
				e.store.Close() // the key was never looked up, so no cache holds it
				return [][2]string{bearer(e.validKey)}, ""
			}},
		{name: "unexpected resolver error fails closed", status: 503, code: proxy.CodeAuthUnavailable, retryAfter: "1",
			opts:    []option{withResolver(errResolver{errors.New("something odd")})},
			prepare: func(t *testing.T, e *env) ([][2]string, string) { return [][2]string{bearer(e.validKey)}, "" }},
		{name: "over the rate limit", status: 429, code: proxy.CodeRateLimited, retryAfter: "2", resolverCalled: true,
			opts: []option{func(c *proxy.Config) {
				c.Limiter = &fixedLimiter{res: ratelimit.Result{Allowed: false, RetryAfter: 1500 * time.Millisecond, Limit: ratelimit.Limit{Burst: 5}}}
				c.RateLimitHeaders = testRateLimitHeaders
			}},
			prepare: func(t *testing.T, e *env) ([][2]string, string) { return [][2]string{bearer(e.validKey)}, "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts...)
			headers, path := tt.prepare(t, e)
			if path == "" {
				path = "/v1/things"
			}
			before := e.resolver.calls.Load()
			res, body := e.do(t, "GET", path, headers)
			if called := e.resolver.calls.Load() > before; called != tt.resolverCalled {
				t.Errorf("resolver called = %v, want %v", called, tt.resolverCalled)
			}
			if tt.code == "" {
				if res.StatusCode != tt.status || body != "hello from upstream" {
					t.Fatalf("got %d %q, want %d from upstream", res.StatusCode, body, tt.status)
				}
				e.up.only(t)
				return
			}
			checkProblem(t, res, body, tt.status, tt.code)
			if got := res.Header.Values("Www-Authenticate"); tt.wwwAuth == "" && len(got) != 0 || tt.wwwAuth != "" && (len(got) != 1 || got[0] != tt.wwwAuth) {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wwwAuth)
			}
			if got := res.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if n := len(e.up.requests()); n != 0 {
				t.Errorf("upstream received %d requests for a refused one", n)
			}
			if strings.Contains(body, e.validKey) {
				t.Error("problem body echoes the key")
			}
		})
	}
}

// withSpec prepares a key in the state spec names.
func withSpec(spec keySpec) func(t *testing.T, e *env) ([][2]string, string) {
	return func(t *testing.T, e *env) ([][2]string, string) {
		key, _ := e.newKey(t, spec)
		return [][2]string{bearer(key)}, ""
	}
}

// flipLast changes a key's last (checksum) character.
func flipLast(key string) string {
	last := key[len(key)-1]
	c := byte('A')
	if last == 'A' {
		c = 'B'
	}
	return key[:len(key)-1] + string(c)
}

// TestRefusedKeysAnswerIdentically: no response lets a client tell an
// unknown key from a revoked, expired or otherwise refused one.
func TestRefusedKeysAnswerIdentically(t *testing.T) {
	e := newEnv(t)
	unknown, _ := e.format.Generate()
	mk := func(spec keySpec) string {
		key, _ := e.newKey(t, spec)
		return key
	}
	cases := map[string][][2]string{
		"unknown":        {bearer(unknown)},
		"malformed":      {bearer("wev_nope")},
		"bad checksum":   {bearer(flipLast(e.validKey))},
		"revoked":        {bearer(mk(keySpec{revoked: true}))},
		"expired":        {bearer(mk(keySpec{expired: true}))},
		"deactivated":    {bearer(mk(keySpec{ownerInactive: true}))},
		"moved team":     {bearer(mk(keySpec{ownerMoved: true}))},
		"left by a move": {bearer(mk(keySpec{ownerLeft: true}))},
		"two lines":      {bearer(e.validKey), bearer(unknown)},
		"over 1 KiB":     {bearer(strings.Repeat("x", 2000))},
		"two tokens":     {bearer("a b")},
		"foreign shape":  {bearer("sk_live_0123456789")},
	}
	var wantBody string
	var wantHeader http.Header
	for name, h := range cases {
		h = append(h, [2]string{"X-Request-Id", "same-request-id"})
		res, body := e.do(t, "GET", "/v1/things", h)
		res.Header.Del("Date")
		if res.StatusCode != 401 {
			t.Fatalf("%s: status %d, want 401", name, res.StatusCode)
		}
		if wantHeader == nil {
			wantBody, wantHeader = body, res.Header
			continue
		}
		if body != wantBody {
			t.Errorf("%s: body differs:\n%s\nwant\n%s", name, body, wantBody)
		}
		if fmt.Sprint(res.Header) != fmt.Sprint(wantHeader) {
			t.Errorf("%s: headers differ:\n%v\nwant\n%v", name, res.Header, wantHeader)
		}
	}
}

func TestAuthorizationAndQueryAreNotAlteredWrongly(t *testing.T) {
	e := newEnv(t)
	res, _ := e.do(t, "GET", "/v1/things?api_key=abc&x=1", [][2]string{bearer(e.validKey)})
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	got := e.up.only(t)
	if got.RequestURI != "/api/v1/things?api_key=abc&x=1" {
		t.Errorf("upstream RequestURI = %q", got.RequestURI)
	}
	if v, ok := got.Header["Authorization"]; ok {
		t.Errorf("Authorization forwarded: %q", v)
	}
}

func TestEncodedSlashSurvives(t *testing.T) {
	e := newEnv(t)
	res, _ := e.do(t, "GET", "/v1/files/a%2Fb/c%20d?q=%2F", [][2]string{bearer(e.validKey)})
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if got := e.up.only(t).RequestURI; got != "/api/v1/files/a%2Fb/c%20d?q=%2F" {
		t.Errorf("upstream RequestURI = %q, want the encoded slash kept", got)
	}
}

func TestUsageTouchedOnlyForAdmittedRequests(t *testing.T) {
	e := newEnv(t)
	revokedKey, revoked := e.newKey(t, keySpec{revoked: true})
	e.do(t, "GET", "/", [][2]string{bearer(revokedKey)})
	e.do(t, "GET", "/", [][2]string{bearer(e.validKey)})
	e.do(t, "GET", "/", [][2]string{bearer(e.validKey)})
	if n := e.usage.count(e.identity.KeyID); n != 2 {
		t.Errorf("valid key touched %d times, want 2", n)
	}
	if n := e.usage.count(revoked.KeyID); n != 0 {
		t.Errorf("revoked key touched %d times, want 0", n)
	}
}

func TestOptionalHooksMayBeNil(t *testing.T) {
	e := newEnv(t, func(c *proxy.Config) {
		c.Recorder, c.Usage, c.Limiter, c.Logger, c.Registerer = nil, nil, nil, nil, nil
	})
	res, body := e.do(t, "POST", "/v1/things", [][2]string{bearer(e.validKey)})
	if res.StatusCode != 200 || body != "hello from upstream" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if len(e.rec.all()) != 0 {
		t.Error("events recorded with no Recorder")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	format, _ := keystore.NewFormat("wev_")
	up := mustURL(t, "http://127.0.0.1:1")
	valid := func() proxy.Config { return proxy.Config{Upstream: up, Format: format, Resolver: errResolver{}} }
	tests := []struct {
		name string
		edit func(*proxy.Config)
	}{
		{"no upstream", func(c *proxy.Config) { c.Upstream = nil }},
		{"relative upstream", func(c *proxy.Config) { c.Upstream = mustURL(t, "/x") }},
		{"ftp upstream", func(c *proxy.Config) { c.Upstream = mustURL(t, "ftp://host/") }},
		{"no resolver", func(c *proxy.Config) { c.Resolver = nil }},
		{"no format", func(c *proxy.Config) { c.Format = keystore.Format{} }},
		{"negative timeout", func(c *proxy.Config) { c.UpstreamTimeout = -time.Second }},
		{"prefix with a space", func(c *proxy.Config) { c.HeaderPrefix = "X Wevion-" }},
		{"prefix with a colon", func(c *proxy.Config) { c.HeaderPrefix = "X-Wevion:" }},
		{"one-letter prefix", func(c *proxy.Config) { c.HeaderPrefix = "X" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.edit(&cfg)
			if _, err := proxy.New(cfg); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
	if _, err := proxy.New(valid()); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}
