package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wevion/keyproxy/audit"
)

// buildBinary compiles keyproxy as an operator runs it: signals reach a
// real process, not a function under test.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building keyproxy needs the go command on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "keyproxy")
	args := []string{"build", "-o", bin}
	// Built like this test binary, the packages come from the build cache
	// (only main is compiled), and under -race the process is checked too.
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is a running keyproxy binary.
type process struct {
	cmd                  *exec.Cmd
	logs                 *syncBuffer
	exited               chan struct{}
	proxyAddr, adminAddr string
}

// cleanEnv is this process's environment without KEYPROXY_ variables, so
// that the test's own settings are the only ones.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYPROXY_") {
			env = append(env, kv)
		}
	}
	return env
}

func startBinary(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	started := p.waitLog(t, "keyproxy started", 1, 15*time.Second)
	p.proxyAddr, _ = started["listen"].(string)
	p.adminAddr, _ = started["admin_listen"].(string)
	return p
}

// logLines returns the JSON log lines whose message starts with msg.
func (p *process) logLines(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			if s, _ := m["msg"].(string); strings.HasPrefix(s, msg) {
				out = append(out, m)
			}
		}
	}
	return out
}

// waitLog waits for the n-th log line starting with msg and returns it.
func (p *process) waitLog(t *testing.T, msg string, n int, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(within)
	for {
		if lines := p.logLines(msg); len(lines) >= n {
			return lines[n-1]
		}
		select {
		case <-p.exited:
			if lines := p.logLines(msg); len(lines) >= n {
				return lines[n-1]
			}
			t.Fatalf("keyproxy exited (%v) before logging %q:\n%s", p.cmd.ProcessState, msg, p.logs.String())
		case <-deadline:
			t.Fatalf("no log line %q (#%d) within %s:\n%s", msg, n, within, p.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("sending %v: %v", sig, err)
	}
}

func (p *process) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("keyproxy still running %s after the signal:\n%s", within, p.logs.String())
		return -1
	}
}

func (p *process) createKey(t *testing.T, token, user string) string {
	t.Helper()
	body := fmt.Sprintf(`{"name":"lifecycle","user_id":%q,"team_id":"team_lc","role":"admin"}`, user)
	req, err := http.NewRequest(http.MethodPost, "http://"+p.adminAddr+"/admin/v1/keys", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, b := do(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create key: %d %s", resp.StatusCode, b)
	}
	return decode(t, b)["key"].(string)
}

func (p *process) call(t *testing.T, key string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+p.proxyAddr+"/api/v1/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("call: %d %s", resp.StatusCode, body)
	}
	return resp
}

// gauge returns the value of an unlabelled series from /metrics.
func (p *process) gauge(t *testing.T, name string) string {
	t.Helper()
	resp, body := do(t, mustRequest(t, http.MethodGet, "http://"+p.adminAddr+"/metrics"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return ""
}

const lifecycleToken = "lifecycle-admin-token-0123456789"

func TestBinary_Signals(t *testing.T) {
	bin := buildBinary(t)
	t.Run("SIGTERM drains in-flight requests, flushes audit, exits 0", func(t *testing.T) {
		t.Parallel()
		testSIGTERMDrains(t, bin)
	})
	t.Run("SIGHUP reloads log level and rate policies, keeps them on a bad file", func(t *testing.T) {
		t.Parallel()
		testSIGHUPReloads(t, bin)
	})
}

func testSIGTERMDrains(t *testing.T, bin string) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "upstream answered "+r.URL.Path)
	}))
	defer up.Close()
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	defer letGo() // a failing test must not leave the upstream blocked
	dir := t.TempDir()
	p := startBinary(t, bin, []string{
		"KEYPROXY_LISTEN=127.0.0.1:0", "KEYPROXY_ADMIN_LISTEN=localhost:0",
		"KEYPROXY_STORE_DSN=" + filepath.Join(dir, "kp.db"), "KEYPROXY_ADMIN_TOKENS=" + lifecycleToken,
		"KEYPROXY_UPSTREAM_URL=" + up.URL, "KEYPROXY_AUDIT_FILE=" + filepath.Join(dir, "audit.log"),
		"KEYPROXY_SHUTDOWN_TIMEOUT=10s",
	}, "serve")
	key := p.createKey(t, lifecycleToken, "usr_drain")

	type result struct {
		status int
		body   string
		err    error
	}
	inFlight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.proxyAddr+"/slow", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", "drain-req-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inFlight <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		inFlight <- result{resp.StatusCode, string(b), err}
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the upstream")
	}

	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, "shutting down", 1, 5*time.Second)
	// The listeners close at once: new connections are refused while the
	// in-flight request is still being served.
	eventually(t, 5*time.Second, func() error {
		for _, addr := range []string{p.proxyAddr, p.adminAddr} {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return fmt.Errorf("%s still accepts connections after SIGTERM", addr)
			}
		}
		return nil
	})
	select {
	case <-p.exited:
		t.Fatalf("keyproxy exited with a request in flight:\n%s", p.logs.String())
	case <-time.After(100 * time.Millisecond):
	}

	letGo()
	res := <-inFlight
	if res.err != nil || res.status != http.StatusOK || res.body != "upstream answered /slow" {
		t.Fatalf("in-flight request: status %d body %q err %v", res.status, res.body, res.err)
	}
	if code := p.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0:\n%s", code, p.logs.String())
	}
	p.waitLog(t, "stopped", 1, time.Second)

	// The in-flight request's audit event reached both sinks before exit.
	db, err := sql.Open("sqlite", filepath.Join(dir, "kp.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	events, err := audit.NewSQLStore(db, audit.SQLite, audit.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	page, err := events.Query(context.Background(), audit.Query{Limit: audit.MaxQueryLimit})
	if err != nil {
		t.Fatal(err)
	}
	var stored *audit.Event
	for i, e := range page.Events {
		if e.RequestID == "drain-req-1" {
			stored = &page.Events[i]
		}
	}
	if stored == nil || stored.Type != "api.request" || stored.Status != http.StatusOK || stored.Outcome != "allowed" {
		t.Errorf("audit event in the store: %+v", stored)
	}
	auditLog, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if err != nil || !strings.Contains(string(auditLog), `"request_id":"drain-req-1"`) {
		t.Errorf("audit event missing from the audit file (err %v):\n%s", err, auditLog)
	}
	if strings.Contains(p.logs.String()+string(auditLog), key) {
		t.Error("the full key reached a log")
	}
}

func writeConfig(t *testing.T, path, upstream, level string, requests int) {
	t.Helper()
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin:
  listen: "localhost:0"
  tokens: [%q]
store:
  dsn: %q
upstream:
  url: %q
log:
  level: %s
ratelimit:
  default: { requests: %d, per: 1m, burst: 100 }
`, lifecycleToken, filepath.Join(filepath.Dir(path), "kp.db"), upstream, level, requests)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func testSIGHUPReloads(t *testing.T, bin string) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	file := filepath.Join(t.TempDir(), "keyproxy.yaml")
	writeConfig(t, file, up.URL, "info", 600)
	p := startBinary(t, bin, nil, "serve", "--config", file)
	key := p.createKey(t, lifecycleToken, "usr_hup")
	policy := func() string { return p.call(t, key).Header.Get("RateLimit-Policy") }
	if got := policy(); got != `"user";q=600;w=60` {
		t.Fatalf("RateLimit-Policy before reload: %q", got)
	}
	probeLogged := func() bool {
		resp, err := http.Get("http://" + p.adminAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, l := range p.logLines("admin request") {
			if l["path"] == "/healthz" {
				return true
			}
		}
		return false
	}
	if probeLogged() {
		t.Fatal("a probe was logged at level info (probes log at debug)")
	}

	writeConfig(t, file, up.URL, "debug", 120)
	p.signal(t, syscall.SIGHUP)
	line := p.waitLog(t, "configuration reloaded", 1, 5*time.Second)
	if got := fmt.Sprint(line["reloaded"]); got != "[log.level ratelimit]" {
		t.Errorf("reload says it reloaded %s, want [log.level ratelimit]", got)
	}
	if got := policy(); got != `"user";q=120;w=60` {
		t.Errorf("RateLimit-Policy after reload: %q", got)
	}
	if got := p.gauge(t, "keyproxy_config_last_reload_successful"); got != "1" {
		t.Errorf("keyproxy_config_last_reload_successful after a good reload: %s", got)
	}
	eventually(t, 2*time.Second, func() error {
		if !probeLogged() {
			return fmt.Errorf("log.level debug not in force after the reload")
		}
		return nil
	})

	// A broken file is refused whole; what runs stays.
	if err := os.WriteFile(file, []byte("log: {level: loud}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	refused := p.waitLog(t, "reload refused", 1, 5*time.Second)
	if !strings.Contains(fmt.Sprint(refused["error"]), "log.level") {
		t.Errorf("the refusal does not name the bad key: %v", refused)
	}
	if got := policy(); got != `"user";q=120;w=60` {
		t.Errorf("RateLimit-Policy after a refused reload: %q", got)
	}
	if got := p.gauge(t, "keyproxy_config_last_reload_successful"); got != "0" {
		t.Errorf("keyproxy_config_last_reload_successful after a refused reload: %s", got)
	}

	p.signal(t, syscall.SIGINT)
	if code := p.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code after SIGINT %d, want 0:\n%s", code, p.logs.String())
	}
}
