package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// instance is one in-process keyproxy with its listeners on free ports.
type instance struct {
	proxyURL, adminURL string
	token              string
	logs               *syncBuffer
	stop               func() error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startInstance(t *testing.T, env ...string) *instance {
	t.Helper()
	dir := t.TempDir()
	token := "test-admin-token-0123456789"
	env = append([]string{
		"KEYPROXY_STORE_DSN=" + filepath.Join(dir, "keyproxy.db"),
		"KEYPROXY_ADMIN_TOKENS=" + token,
		"KEYPROXY_SHUTDOWN_TIMEOUT=5s",
		"KEYPROXY_KEYS_LAST_USED_INTERVAL=100ms",
		"KEYPROXY_LOG_FLUSH_INTERVAL=0s", // tests read the log as it is written
	}, env...)
	cfg, err := LoadConfig("", env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	reload := func() (*Config, error) { return LoadConfig("", env) }
	go func() { done <- serve(ctx, cfg, reload, logs, nil, &listeners{proxy: pl, admin: al}) }()
	inst := &instance{
		proxyURL: "http://" + pl.Addr().String(),
		adminURL: "http://" + al.Addr().String(),
		token:    token,
		logs:     logs,
	}
	var once sync.Once
	var stopErr error
	inst.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(20 * time.Second):
				t.Error("keyproxy did not stop within 20s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = inst.stop() })
	waitReady(t, inst.adminURL+"/readyz")
	return inst
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 10s", url)
}

func (in *instance) admin(t *testing.T, method, path string, body any) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, in.adminURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+in.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Actor-Id", "usr_admin")
	return do(t, req)
}

func (in *instance) call(t *testing.T, key, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, in.proxyURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return m
}

// upstream is the Wevion backend stand-in: it records what it received.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Clone())
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"path":"`+r.URL.Path+`"}`)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last(t *testing.T) http.Header {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("upstream received nothing")
	}
	return u.seen[len(u.seen)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// The newcomer's journey: create a key, call through, revoke, refused.
func TestEndToEnd_KeyLifecycle(t *testing.T) {
	up := newUpstream(t)
	in := startInstance(t, "KEYPROXY_UPSTREAM_URL="+up.URL)

	resp, body := in.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{
		"name": "reporting", "user_id": "usr_1", "team_id": "team_1", "role": "admin",
	})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	created := decode(t, body)
	key, _ := created["key"].(string)
	id, _ := created["id"].(string)
	if !strings.HasPrefix(key, "wev_") || len(key) != 42 || !strings.HasPrefix(id, "key_") {
		t.Fatalf("create returned key %q id %q", key, id)
	}

	resp, body = in.call(t, key, "/api/v1/reports?x=1", "X-Wevion-Role", "super_admin", "X-Request-Id", "req-abc.1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("call with a fresh key: %d %s", resp.StatusCode, body)
	}
	got := up.last(t)
	for name, want := range map[string]string{
		"X-Wevion-User-Id": "usr_1", "X-Wevion-Team-Id": "team_1", "X-Wevion-Role": "admin",
		"X-Wevion-Key-Id": id, "X-Request-Id": "req-abc.1",
	} {
		if got.Get(name) != want {
			t.Errorf("upstream saw %s=%q, want %q", name, got.Get(name), want)
		}
	}
	if got.Get("Authorization") != "" {
		t.Error("Authorization was forwarded upstream")
	}
	if resp.Header.Get("X-Request-Id") != "req-abc.1" {
		t.Errorf("X-Request-Id not echoed: %q", resp.Header.Get("X-Request-Id"))
	}
	if resp.Header.Get("RateLimit-Policy") == "" || resp.Header.Get("RateLimit-Remaining") == "" {
		t.Errorf("rate-limit headers missing: %v", resp.Header)
	}

	// The key is shown once: never in list, get, logs.
	_, body = in.admin(t, http.MethodGet, "/admin/v1/keys?team_id=team_1", nil)
	if strings.Contains(string(body), key) {
		t.Error("list shows the full key")
	}
	resp, body = in.admin(t, http.MethodDelete, "/admin/v1/keys/"+id, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	resp, body = in.call(t, key, "/api/v1/reports")
	if resp.StatusCode != http.StatusUnauthorized || decode(t, body)["code"] != "invalid_api_key" {
		t.Fatalf("revoked key: %d %s", resp.StatusCode, body)
	}
	if err := in.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if strings.Contains(in.logs.String(), key) || strings.Contains(in.logs.String(), in.token) {
		t.Error("a full key or admin token reached the log")
	}
}

func TestEndToEnd_DataPlaneErrors(t *testing.T) {
	up := newUpstream(t)
	in := startInstance(t, "KEYPROXY_UPSTREAM_URL="+up.URL)
	resp, body := in.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{
		"name": "k", "user_id": "usr_2", "team_id": "team_2", "role": "owner",
	})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	key := decode(t, body)["key"].(string)
	// The last character changed to another: a key ending in "0" made a
	// fixed replacement the key itself, one run in 62.
	last := "0"
	if strings.HasSuffix(key, last) {
		last = "1"
	}
	badChecksum := key[:len(key)-1] + last

	tests := []struct {
		name, key  string
		setup      func()
		status     int
		code       string
		authHeader string
	}{
		{"no key", "", nil, 401, "missing_api_key", `Bearer realm="wevion"`},
		{"malformed key", "wev_nope", nil, 401, "invalid_api_key", `Bearer realm="wevion", error="invalid_token"`},
		{"bad checksum", badChecksum, nil, 401, "invalid_api_key", `Bearer realm="wevion", error="invalid_token"`},
		{"team inactive", key, func() {
			if r, b := in.admin(t, http.MethodPut, "/admin/v1/teams/team_2", map[string]any{"active": false}); r.StatusCode != 200 {
				t.Fatalf("team update: %d %s", r.StatusCode, b)
			}
		}, 403, "subscription_inactive", ""},
		{"owner deactivated", key, func() {
			in.admin(t, http.MethodPut, "/admin/v1/teams/team_2", map[string]any{"active": true})
			if r, b := in.admin(t, http.MethodPut, "/admin/v1/users/usr_2", map[string]any{"team_id": "team_2", "role": "owner", "active": false}); r.StatusCode != 200 {
				t.Fatalf("user update: %d %s", r.StatusCode, b)
			}
		}, 401, "invalid_api_key", `Bearer realm="wevion", error="invalid_token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			before := up.count()
			resp, body := in.call(t, tt.key, "/x")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			p := decode(t, body)
			if p["code"] != tt.code || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("problem %v (%s)", p, resp.Header.Get("Content-Type"))
			}
			if tt.authHeader != "" && resp.Header.Get("WWW-Authenticate") != tt.authHeader {
				t.Errorf("WWW-Authenticate %q, want %q", resp.Header.Get("WWW-Authenticate"), tt.authHeader)
			}
			if up.count() != before {
				t.Error("a refused request reached the upstream")
			}
			if strings.Contains(string(body), key) {
				t.Error("error body echoes the key")
			}
		})
	}
}

func TestEndToEnd_UpstreamDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	in := startInstance(t, "KEYPROXY_UPSTREAM_URL="+dead)
	_, body := in.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{
		"name": "k", "user_id": "usr_3", "team_id": "team_3", "role": "owner",
	})
	key := decode(t, body)["key"].(string)
	resp, body := in.call(t, key, "/x")
	if resp.StatusCode != http.StatusBadGateway || decode(t, body)["code"] != "upstream_unavailable" {
		t.Fatalf("upstream down: %d %s", resp.StatusCode, body)
	}
}

func TestRun_BadConfigExitsWithOneLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(file, []byte("upstrem: {url: x}\nlog: {level: loud}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"serve", "--config", file}, nil, &stdout, &stderr)
	if code != exitBadUsage {
		t.Errorf("exit code %d, want %d", code, exitBadUsage)
	}
	out := strings.TrimRight(stderr.String(), "\n")
	if strings.Count(out, "\n") != 0 || !strings.Contains(out, "upstrem") || !strings.Contains(out, "log.level") {
		t.Errorf("want one line naming both keys, got %q", out)
	}
	code = run([]string{"check-config", "--config", file}, nil, &stdout, &stderr)
	if code != exitBadUsage {
		t.Errorf("check-config exit code %d, want %d", code, exitBadUsage)
	}
}

func TestRun_VersionAndHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, nil, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "keyproxy ") {
		t.Errorf("version: code %d out %q", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"--help"}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "serve") {
		t.Errorf("help: code %d out %q", code, stdout.String())
	}
	if code := run([]string{"serve", "--no-such-flag"}, nil, &stdout, &stderr); code != exitBadUsage {
		t.Errorf("unknown flag: exit %d, want %d", code, exitBadUsage)
	}
}

// N served calls give N queryable api.request events, and last_used_at
// shows in the key list (written in batches, not per request).
func TestEndToEnd_AuditCountsMatchAndLastUsedShows(t *testing.T) {
	up := newUpstream(t)
	in := startInstance(t, "KEYPROXY_UPSTREAM_URL="+up.URL, "KEYPROXY_LOG_ACCESS=false",
		"KEYPROXY_RATELIMIT_DEFAULT_REQUESTS=100000", "KEYPROXY_RATELIMIT_DEFAULT_BURST=100000")
	key, id := createKey(t, in, "usr_aud", "team_aud")
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if resp, _ := in.call(t, key, "/r"); resp.StatusCode != http.StatusOK {
					t.Errorf("call: %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	count := func() int {
		n, cursor := 0, ""
		for {
			path := "/admin/v1/audit?key_id=" + id + "&limit=1000"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			resp, body := in.admin(t, http.MethodGet, path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("audit query: %d %s", resp.StatusCode, body)
			}
			var page struct {
				Events []struct {
					Type string `json:"type"`
				} `json:"events"`
				NextCursor *string `json:"next_cursor"`
			}
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Events {
				if e.Type == "api.request" {
					n++
				}
			}
			if page.NextCursor == nil {
				return n
			}
			cursor = *page.NextCursor
		}
	}
	waitFor(t, 10*time.Second, "every call audited", func() bool { return count() >= workers*each })
	if n := count(); n != workers*each {
		t.Fatalf("%d api.request events for %d calls", n, workers*each)
	}
	waitFor(t, 10*time.Second, "last_used_at in the key list", func() bool {
		_, body := in.admin(t, http.MethodGet, "/admin/v1/keys/"+id, nil)
		return decode(t, body)["last_used_at"] != nil
	})
}

// Buffered logs are all written by the time the process has stopped.
func TestEndToEnd_BufferedLogFlushedAtShutdown(t *testing.T) {
	up := newUpstream(t)
	in := startInstance(t, "KEYPROXY_UPSTREAM_URL="+up.URL, "KEYPROXY_LOG_FLUSH_INTERVAL=1m")
	key, _ := createKey(t, in, "usr_buf", "team_buf")
	if resp, _ := in.call(t, key, "/buffered", "X-Request-Id", "req-buffered-1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("call: %d", resp.StatusCode)
	}
	if strings.Contains(in.logs.String(), "req-buffered-1") {
		t.Fatal("the access line was written at once although the log is buffered for a minute")
	}
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(in.logs.String(), "req-buffered-1") {
		t.Fatal("the buffered access line was lost at shutdown")
	}
}
