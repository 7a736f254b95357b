package main

// The adversarial suite: a real in-process keyproxy on loopback, attacked
// through real connections (raw TCP where a Go client would tidy the
// request up). Every group also checks the one invariant that matters: the
// backend only ever receives admitted requests, carrying our identity.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

// seen is one request as the backend received it.
type seen struct {
	method, path, host string
	header             http.Header
	body               string
}

// backend is the Wevion backend stand-in of this suite: it records every
// request, and answers 101 to any Upgrade it is offered, as an h2c-capable
// server would.
type backend struct {
	*httptest.Server
	mu  sync.Mutex
	got []seen
}

func newBackend(t *testing.T) *backend {
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.got = append(b.got, seen{r.Method, r.URL.Path, r.Host, r.Header.Clone(), string(body)})
		b.mu.Unlock()
		if up := r.Header.Get("Upgrade"); up != "" {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", up)
			w.WriteHeader(http.StatusSwitchingProtocols)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) requests() []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.got...)
}

// suite is one instance with one valid key.
type suite struct {
	*instance
	be               *backend
	key, keyID       string
	proxyAddr, admAd string
}

func newSuite(t *testing.T, env ...string) *suite {
	t.Helper()
	be := newBackend(t)
	in := startInstance(t, append([]string{"KEYPROXY_UPSTREAM_URL=" + be.URL}, env...)...)
	s := &suite{instance: in, be: be,
		proxyAddr: strings.TrimPrefix(in.proxyURL, "http://"), admAd: strings.TrimPrefix(in.adminURL, "http://")}
	s.key, s.keyID = s.newKey(t, "usr_sec", "team_sec", "admin")
	t.Cleanup(func() { s.checkBackendSawOnlyAdmitted(t) })
	return s
}

func (s *suite) newKey(t *testing.T, user, team, role string) (key, id string) {
	t.Helper()
	resp, body := s.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{"name": "sec", "user_id": user, "team_id": team, "role": role})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	m := decode(t, body)
	return m["key"].(string), m["id"].(string)
}

// checkBackendSawOnlyAdmitted: every request the backend received carries
// exactly one set of identity headers naming a key of ours, and no path
// that only a smuggled request uses.
func (s *suite) checkBackendSawOnlyAdmitted(t *testing.T) {
	for _, r := range s.be.requests() {
		if v := r.header.Values("X-Wevion-Key-Id"); len(v) != 1 || !strings.HasPrefix(v[0], "key_") {
			t.Errorf("backend received %s %s without our identity: %v", r.method, r.path, r.header)
		}
		if strings.Contains(r.path, "smuggled") {
			t.Errorf("a smuggled request reached the backend: %s %s", r.method, r.path)
		}
		if _, ok := r.header["Authorization"]; ok {
			t.Errorf("Authorization reached the backend")
		}
	}
}

// raw writes req on a new connection and reads up to n responses; it stops
// early when the server closes the connection.
func raw(t *testing.T, addr, req string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for i := range n {
		if i > 0 {
			// Later responses answer requests already sent: they come at
			// once or not at all (the bytes were taken as a body).
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		res.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, res)
	}
	return out
}

func bodyOf(res *http.Response) string {
	b, _ := io.ReadAll(res.Body)
	res.Body = io.NopCloser(strings.NewReader(string(b)))
	return string(b)
}

func problemCode(t *testing.T, res *http.Response) string {
	t.Helper()
	var p struct{ Code string }
	if err := json.Unmarshal([]byte(bodyOf(res)), &p); err != nil {
		t.Fatalf("%d: body is not a problem: %q", res.StatusCode, bodyOf(res))
	}
	return p.Code
}

// get sends one request through the proxy with the given header lines
// (names sent exactly as written) from the default loopback address.
func (s *suite) get(t *testing.T, path string, hdr ...string) *http.Response {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: api.wevion.test\r\nConnection: close\r\n", path)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	rs := raw(t, s.proxyAddr, b.String(), 1)
	if len(rs) != 1 {
		t.Fatalf("GET %s: no response", path)
	}
	return rs[0]
}

func TestAdversarial_AuthenticationBypass(t *testing.T) {
	s := newSuite(t)
	k := s.key
	tests := []struct {
		name   string
		path   string
		hdr    []string
		status int
		code   string
	}{
		{"no Authorization", "/x", nil, 401, "missing_api_key"},
		{"empty Authorization", "/x", []string{"Authorization", ""}, 401, "missing_api_key"},
		{"scheme only", "/x", []string{"Authorization", "Bearer"}, 401, "missing_api_key"},
		{"scheme and spaces", "/x", []string{"Authorization", "Bearer    "}, 401, "missing_api_key"},
		{"Basic with the key as user", "/x", []string{"Authorization", "Basic d2V2XzpwYXNz"}, 401, "missing_api_key"},
		{"Token scheme", "/x", []string{"Authorization", "Token " + k}, 401, "missing_api_key"},
		{"key without scheme", "/x", []string{"Authorization", k}, 401, "missing_api_key"},
		{"scheme glued to the key", "/x", []string{"Authorization", "Bearer" + k}, 401, "missing_api_key"},
		{"tab between scheme and key", "/x", []string{"Authorization", "Bearer\t" + k}, 401, "missing_api_key"},
		{"lower-case scheme is fine", "/x", []string{"Authorization", "bearer " + k}, 200, ""},
		{"upper-case scheme is fine", "/x", []string{"Authorization", "BEARER " + k}, 200, ""},
		{"mixed-case scheme is fine", "/x", []string{"Authorization", "BeArEr " + k}, 200, ""},
		{"lower-case header name is fine", "/x", []string{"authorization", "Bearer " + k}, 200, ""},
		{"two spaces are fine", "/x", []string{"Authorization", "Bearer  " + k}, 200, ""},
		{"trailing space is trimmed", "/x", []string{"Authorization", "Bearer " + k + "  "}, 200, ""},
		{"two keys in one value", "/x", []string{"Authorization", "Bearer " + k + " " + k}, 401, "invalid_api_key"},
		{"comma-joined credentials", "/x", []string{"Authorization", "Bearer " + k + ", Bearer " + k}, 401, "invalid_api_key"},
		{"comma-glued credentials", "/x", []string{"Authorization", "Bearer " + k + ",Bearer"}, 401, "invalid_api_key"},
		{"two Authorization lines", "/x", []string{"Authorization", "Bearer " + k, "Authorization", "Bearer " + k}, 401, "invalid_api_key"},
		{"two lines, first empty", "/x", []string{"Authorization", "", "Authorization", "Bearer " + k}, 401, "invalid_api_key"},
		{"two lines in different case", "/x", []string{"authorization", "Bearer " + k, "AUTHORIZATION", "Bearer " + k}, 401, "invalid_api_key"},
		{"valid line and Basic line", "/x", []string{"Authorization", "Basic eDp5", "Authorization", "Bearer " + k}, 401, "invalid_api_key"},
		{"quoted key", "/x", []string{"Authorization", `Bearer "` + k + `"`}, 401, "invalid_api_key"},
		{"key with its prefix upper-cased", "/x", []string{"Authorization", "Bearer WEV_" + k[4:]}, 401, "invalid_api_key"},
		{"truncated key", "/x", []string{"Authorization", "Bearer " + k[:len(k)-1]}, 401, "invalid_api_key"},
		{"key with one more character", "/x", []string{"Authorization", "Bearer " + k + "A"}, 401, "invalid_api_key"},
		{"key in api_key query", "/x?api_key=" + k, nil, 401, "missing_api_key"},
		{"key in access_token query", "/x?access_token=" + k, nil, 401, "missing_api_key"},
		{"key in the path", "/x/" + k, nil, 401, "missing_api_key"},
		{"key in a cookie", "/x", []string{"Cookie", "api_key=" + k + "; access_token=" + k}, 401, "missing_api_key"},
		{"key in X-Api-Key", "/x", []string{"X-Api-Key", k}, 401, "missing_api_key"},
		{"key in Proxy-Authorization", "/x", []string{"Proxy-Authorization", "Bearer " + k}, 401, "missing_api_key"},
		{"key in X-Wevion-Key-Id", "/x", []string{"X-Wevion-Key-Id", s.keyID}, 401, "missing_api_key"},
		{"key in an underscore Authorization", "/x", []string{"Authorization_", "Bearer " + k}, 401, "missing_api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.be.requests())
			res := s.get(t, tt.path, tt.hdr...)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, bodyOf(res))
			}
			after := len(s.be.requests())
			if tt.code == "" {
				if after != before+1 {
					t.Errorf("admitted, but the backend saw %d requests", after-before)
				}
				return
			}
			if c := problemCode(t, res); c != tt.code {
				t.Errorf("code %q, want %q", c, tt.code)
			}
			if after != before {
				t.Error("a refused request reached the backend")
			}
			if strings.Contains(bodyOf(res), k) {
				t.Error("the problem echoes the key")
			}
		})
	}
	// The operator endpoints are not on the data plane: there they are
	// ordinary paths that need a key.
	for _, p := range []string{"/admin/v1/keys?team_id=team_sec", "/metrics", "/healthz", "/readyz", SecretScanningPathForTest} {
		t.Run("operator path "+p+" needs a key on the data plane", func(t *testing.T) {
			if res := s.get(t, p); res.StatusCode != 401 {
				t.Errorf("status %d", res.StatusCode)
			}
		})
	}
}

// SecretScanningPathForTest is admin.SecretScanningPath, spelled out so the
// suite notices if it moves.
const SecretScanningPathForTest = "/github/secret-scanning"

func TestAdversarial_HeaderSpoofing(t *testing.T) {
	s := newSuite(t, "KEYPROXY_TRUSTED_PROXIES=127.0.0.2/32")
	auth := []string{"Authorization", "Bearer " + s.key}
	want := map[string]string{"X-Wevion-User-Id": "usr_sec", "X-Wevion-Team-Id": "team_sec", "X-Wevion-Role": "admin", "X-Wevion-Key-Id": s.keyID}
	// identityIntact: the backend saw exactly our four identity headers.
	identityIntact := func(t *testing.T, got seen) {
		t.Helper()
		for name, vals := range got.header {
			n := strings.ReplaceAll(strings.ToLower(name), "_", "-")
			if !strings.HasPrefix(n, "x-wevion") {
				continue
			}
			if w, ok := want[name]; !ok || len(vals) != 1 || vals[0] != w {
				t.Errorf("backend saw %s: %q", name, vals)
			}
		}
		for name, w := range want {
			if got.header.Get(name) != w {
				t.Errorf("%s = %q, want %q", name, got.header.Get(name), w)
			}
		}
	}
	last := func(t *testing.T) seen {
		t.Helper()
		r := s.be.requests()
		if len(r) == 0 {
			t.Fatal("backend received nothing")
		}
		return r[len(r)-1]
	}

	spellings := []string{"X-Wevion-Role", "x-wevion-role", "X-WEVION-ROLE", "x-WeViOn-RoLe", "X_Wevion_Role", "x_wevion_role",
		"X_WEVION_ROLE", "X-Wevion_Role", "X_Wevion-Role", "X-Wevion-User-Id", "x_wevion_user_id", "X-Wevion-Team-Id",
		"X_WEVION_TEAM_ID", "X-Wevion-Key-Id", "x-wevion-key_id", "X-Wevion-Impersonate", "X-Wevion-", "X_Wevion_"}
	for _, name := range spellings {
		t.Run("identity header "+name, func(t *testing.T) {
			res := s.get(t, "/x", append(auth, name, "super_admin", name, "usr_evil")...)
			if res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			identityIntact(t, last(t))
		})
	}
	for _, conn := range []string{"X-Wevion-Role", "X-Wevion-User-Id, X-Wevion-Team-Id, X-Wevion-Key-Id, X-Wevion-Role",
		"close, X-Wevion-Role", "X-Request-Id", "X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto", "keep-alive, Authorization"} {
		t.Run("Connection: "+conn, func(t *testing.T) {
			res := s.get(t, "/x", append(auth, "Connection", conn)...)
			if res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			got := last(t)
			identityIntact(t, got)
			for _, h := range []string{"X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto"} {
				if got.header.Get(h) == "" {
					t.Errorf("%s stripped through Connection", h)
				}
			}
		})
	}
	for _, up := range [][]string{
		{"Connection", "Upgrade, HTTP2-Settings", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"},
		{"Connection", "Upgrade", "Upgrade", "h2c"},
		{"Connection", "Upgrade", "Upgrade", "HTTP/2.0"},
		{"Connection", "Upgrade", "Upgrade", "websocket, h2c"},
		{"Upgrade", "h2c"},
	} {
		t.Run("upgrade "+strings.Join(up, " "), func(t *testing.T) {
			res := s.get(t, "/x", append(auth, up...)...)
			if res.StatusCode != 200 {
				t.Fatalf("status %d: the connection was switched (the backend answers 101 to any upgrade it sees)", res.StatusCode)
			}
			got := last(t)
			if v := got.header.Get("Upgrade"); v != "" {
				t.Errorf("backend was offered Upgrade: %q", v)
			}
			identityIntact(t, got)
		})
	}

	// Forwarding headers: replaced from an ordinary client, kept from the
	// trusted proxy at 127.0.0.2; the audited client_ip follows.
	forged := []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "https",
		"Forwarded", "for=203.0.113.9;proto=https", "X-Real-Ip", "203.0.113.9", "True-Client-Ip", "203.0.113.9",
		"X-Forwarded-Port", "443", "X-Original-Url", "/admin/v1/keys", "X_Forwarded_For", "203.0.113.9", "X-Request-Id", "forged-req-1"}
	for _, tc := range []struct {
		name, from, wantXFF, wantHost, wantProto, wantIP string
		kept                                             bool
	}{
		{"from an untrusted peer", "127.0.0.1", "127.0.0.1", "api.wevion.test", "http", "127.0.0.1", false},
		{"from a trusted proxy", "127.0.0.2", "203.0.113.9, 127.0.0.2", "evil.example", "https", "203.0.113.9", true},
	} {
		t.Run("forwarding headers "+tc.name, func(t *testing.T) {
			reqID := "spoof-" + strings.ReplaceAll(tc.from, ".", "-")
			hdr := append(append([]string{}, auth...), forged...)
			hdr[len(hdr)-1] = reqID
			res := s.getFrom(t, tc.from, "/x", hdr...)
			if res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			got := last(t)
			if v := got.header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != tc.wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", v, tc.wantXFF)
			}
			if v := got.header.Get("X-Forwarded-Host"); v != tc.wantHost {
				t.Errorf("X-Forwarded-Host %q, want %q", v, tc.wantHost)
			}
			if v := got.header.Get("X-Forwarded-Proto"); v != tc.wantProto {
				t.Errorf("X-Forwarded-Proto %q, want %q", v, tc.wantProto)
			}
			if _, ok := got.header["Forwarded"]; ok {
				t.Error("Forwarded passed on")
			}
			// net/http canonicalises the client's X_Forwarded_For as
			// X_forwarded_for: look for any underscore spelling.
			for name := range got.header {
				if strings.Contains(name, "_") && strings.EqualFold(strings.ReplaceAll(name, "_", "-"), "X-Forwarded-For") {
					t.Errorf("%s passed on", name)
				}
			}
			for _, h := range []string{"X-Real-Ip", "True-Client-Ip", "X-Forwarded-Port", "X-Original-Url"} {
				if _, ok := got.header[h]; ok != tc.kept {
					t.Errorf("%s passed on = %v, want %v", h, ok, tc.kept)
				}
			}
			if ev := s.auditEvent(t, reqID); ev["client_ip"] != tc.wantIP {
				t.Errorf("audited client_ip %v, want %s", ev["client_ip"], tc.wantIP)
			}
		})
	}
}

// getFrom is get from a chosen loopback source address.
func (s *suite) getFrom(t *testing.T, from, path string, hdr ...string) *http.Response {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", s.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: api.wevion.test\r\nConnection: close\r\n", path)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	bodyOf(res)
	return res
}

// auditEvent waits for the audit event of a request id in the store.
func (s *suite) auditEvent(t *testing.T, requestID string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, body := s.admin(t, http.MethodGet, "/admin/v1/audit?limit=1000", nil)
		var page struct{ Events []map[string]any }
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("audit: %v: %s", err, body)
		}
		for _, ev := range page.Events {
			if ev["request_id"] == requestID {
				return ev
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no audit event for request %s", requestID)
	return nil
}

func TestAdversarial_AdminPathTricks(t *testing.T) {
	s := newSuite(t)
	targets := []string{
		"/admin/v1/keys?team_id=team_sec", "//admin/v1/keys?team_id=team_sec", "///admin//v1//keys?team_id=team_sec",
		"/./admin/v1/keys?team_id=team_sec", "/admin/./v1/keys?team_id=team_sec", "/x/../admin/v1/keys?team_id=team_sec",
		"/healthz/../admin/v1/keys?team_id=team_sec", "/metrics/..;/admin/v1/keys?team_id=team_sec",
		"/%2e%2e/admin/v1/keys?team_id=team_sec", "/%2e/admin/v1/keys?team_id=team_sec",
		"/healthz/%2e%2e/admin/v1/keys?team_id=team_sec", "/healthz/..%2fadmin/v1/keys?team_id=team_sec",
		"/admin%2fv1%2fkeys?team_id=team_sec", "/admin%2Fv1%2Fkeys?team_id=team_sec", "/%61dmin/v1/keys?team_id=team_sec",
		"/ADMIN/v1/keys?team_id=team_sec", "/Admin/V1/Keys?team_id=team_sec", "/admin/v1/keys/?team_id=team_sec",
		"/admin/v1/keys/" + s.keyID + "/", "/admin/v1/keys/" + s.keyID + "%2f", "/admin/v1/keys%00?team_id=team_sec",
		"/admin/v1/keys;x=y?team_id=team_sec", "/admin\\v1\\keys?team_id=team_sec", "http://internal/admin/v1/keys?team_id=team_sec",
		"/admin/v1/keys/" + s.keyID, "/admin/v1/audit", "/admin/v1/users/usr_sec", "/admin/v1/teams/team_sec",
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			for _, method := range []string{"GET", "HEAD", "PUT", "DELETE", "PATCH", "CONNECT", "OPTIONS", "TRACE", "get"} {
				rs := raw(t, s.admAd, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"active\":false}\n", method, target), 1)
				if len(rs) == 0 {
					continue // the server closed the connection: refused
				}
				res := rs[0]
				if res.StatusCode < 400 || strings.Contains(bodyOf(res), s.keyID) {
					t.Errorf("%s %s without a token: %d %s", method, target, res.StatusCode, bodyOf(res))
				}
			}
		})
	}
	t.Run("nothing changed", func(t *testing.T) {
		if res, _ := s.call(t, s.key, "/x"); res.StatusCode != 200 {
			t.Errorf("the key stopped working (%d): a tricked request revoked it or deactivated its owner", res.StatusCode)
		}
	})
	t.Run("CONNECT and TRACE on the data plane", func(t *testing.T) {
		for _, req := range []string{
			"CONNECT internal:9090 HTTP/1.1\r\nHost: internal:9090\r\nAuthorization: Bearer " + s.key + "\r\n\r\n",
			"TRACE /x HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer " + s.key + "\r\nConnection: close\r\n\r\n",
		} {
			rs := raw(t, s.proxyAddr, req, 1)
			if len(rs) != 1 || rs[0].StatusCode != 405 || problemCode(t, rs[0]) != "method_not_allowed" {
				t.Errorf("%q: %v", req[:10], rs)
			}
		}
	})
}

func TestAdversarial_MalformedInput(t *testing.T) {
	s := newSuite(t)
	k := s.key
	get := func(extra string) string {
		return "GET /x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n" + extra + "\r\n"
	}
	big := strings.Repeat("A", 20<<10)
	tests := []struct {
		name string
		req  string
		ok   func(status int) bool
		want string
	}{
		{"NUL in the key", get("Authorization: Bearer " + k[:10] + "\x00" + k[11:] + "\r\n"), is(400), "400"},
		{"bare CR in the key", get("Authorization: Bearer " + k[:10] + "\r" + k[11:] + "\r\n"), is(400), "400"},
		{"LF splits the key line into an identity header", get("Authorization: Bearer " + k + "\nX-Wevion-Role: super_admin\r\n"), is(200), "200 with our role"},
		{"non-ASCII in the key", get("Authorization: Bearer " + k[:10] + "é" + k[12:] + "\r\n"), is(401), "401"},
		{"Latin-1 byte in the key", get("Authorization: Bearer " + k[:10] + "\xff" + k[11:] + "\r\n"), is(401), "401"},
		{"DEL in the key", get("Authorization: Bearer " + k[:10] + "\x7f" + k[11:] + "\r\n"), oneOf(400, 401), "400 or 401"},
		{"20 KB key", get("Authorization: Bearer wev_" + big + "\r\n"), is(431), "431"},
		{"oversized headers", get(strings.Repeat("X-Filler: "+strings.Repeat("f", 1000)+"\r\n", 24)), is(431), "431"},
		// server.max_header_bytes is 16384 here: the head is refused past
		// it, not past net/http's 4 KiB of slack on top.
		{"head just over server.max_header_bytes", get("Authorization: Bearer " + k + "\r\nX-Filler: " + strings.Repeat("f", 16500) + "\r\n"), is(431), "431"},
		{"head just under server.max_header_bytes", get("Authorization: Bearer " + k + "\r\nX-Filler: " + strings.Repeat("f", 16000) + "\r\n"), is(200), "200"},
		{"oversized request line", "GET /" + strings.Repeat("a", 24<<10) + " HTTP/1.1\r\nHost: api\r\n\r\n", oneOf(414, 431), "414 or 431"},
		{"space before the colon", get("Authorization : Bearer " + k + "\r\n"), is(400), "400"},
		{"space inside a header name", get("X-Wevion Role: super_admin\r\nAuthorization: Bearer " + k + "\r\n"), is(400), "400"},
		// RFC 9112 §5.2 lets a server unfold: the key is then read whole.
		{"obs-fold continuation line", get("Authorization: Bearer\r\n " + k + "\r\n"), oneOf(200, 400), "200 or 400"},
		{"obs-fold smuggles an identity header", get("Authorization: Bearer " + k + "\r\nX-Forwarded-For: 1.2.3.4\r\n X-Wevion-Role: super_admin\r\n"), oneOf(200, 400), "200 or 400"},
		{"no Host", "GET /x HTTP/1.1\r\nAuthorization: Bearer " + k + "\r\n\r\n", is(400), "400"},
		{"two Hosts", get("Host: other\r\nAuthorization: Bearer " + k + "\r\n"), is(400), "400"},
		{"request target without a slash", "GET x HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer " + k + "\r\n\r\n", is(400), "400"},
		{"absolute-form target elsewhere goes to our backend only", "GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\nAuthorization: Bearer " + k + "\r\n\r\n", is(200), "200 from our backend"},
		{"HTTP/0.9 style request", "GET /x\r\n\r\n", oneOf(400, 505), "400 or 505"},
		{"unknown HTTP version", "GET /x HTTP/3.7\r\nHost: api\r\n\r\n", oneOf(400, 505), "400 or 505"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.be.requests())
			rs := raw(t, s.proxyAddr, tt.req, 1)
			if len(rs) == 0 {
				t.Fatalf("no response, want %s", tt.want)
			}
			if !tt.ok(rs[0].StatusCode) {
				t.Fatalf("status %d, want %s: %s", rs[0].StatusCode, tt.want, bodyOf(rs[0]))
			}
			after := s.be.requests()
			if rs[0].StatusCode != 200 && len(after) != before {
				t.Error("a refused request reached the backend")
			}
			if rs[0].StatusCode == 200 {
				got := after[len(after)-1]
				if got.header.Get("X-Wevion-Role") != "admin" || len(got.header.Values("X-Wevion-Role")) != 1 {
					t.Errorf("backend saw role %q", got.header.Values("X-Wevion-Role"))
				}
				if !strings.HasPrefix(s.be.URL, "http://"+got.host) {
					t.Errorf("backend saw Host %q", got.host)
				}
			}
		})
	}
	t.Run("20 KB key under a larger header limit", func(t *testing.T) {
		s2 := newSuite(t, "KEYPROXY_SERVER_MAX_HEADER_BYTES=65536")
		rs := raw(t, s2.proxyAddr, get("Authorization: Bearer wev_"+big+"\r\n"), 1)
		if len(rs) != 1 || rs[0].StatusCode != 401 || problemCode(t, rs[0]) != "invalid_api_key" {
			t.Fatalf("%v", rs)
		}
	})
	admin := func(body, extra string) string {
		return "POST /admin/v1/keys HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nAuthorization: Bearer " + s.token +
			"\r\nContent-Type: application/json\r\n" + extra + "\r\n" + body
	}
	huge := `{"name":"` + strings.Repeat("n", 100<<10) + `","user_id":"u","team_id":"t","role":"owner"}`
	for _, tt := range []struct {
		name, req string
		status    int
		code      string
	}{
		{"oversized admin body", admin(huge, "Content-Length: "+strconv.Itoa(len(huge))+"\r\n"), 400, "invalid_request"},
		{"oversized chunked admin body", admin(chunked(huge), "Transfer-Encoding: chunked\r\n"), 400, "invalid_request"},
		{"admin body that lies about its length", admin(`{"name":"x"}`, "Content-Length: 999999999\r\n"), 400, "invalid_request"},
		{"admin body as form data", strings.Replace(admin(`name=x`, "Content-Length: 6\r\n"), "application/json", "application/x-www-form-urlencoded", 1), 415, "unsupported_media_type"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs := raw(t, s.admAd, tt.req, 1)
			if len(rs) != 1 || rs[0].StatusCode != tt.status || problemCode(t, rs[0]) != tt.code {
				t.Fatalf("got %v, want %d %s", rs, tt.status, tt.code)
			}
		})
	}
}

func is(code int) func(int) bool { return func(s int) bool { return s == code } }

func oneOf(codes ...int) func(int) bool {
	return func(s int) bool {
		for _, c := range codes {
			if s == c {
				return true
			}
		}
		return false
	}
}

func chunked(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		n := min(len(s), 4096)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
		s = s[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// Request smuggling: whatever framing a client sends, what follows one
// request is either refused or parsed as a request of its own, which must
// authenticate like any other. The backend never sees the smuggled one.
func TestAdversarial_Smuggling(t *testing.T) {
	s := newSuite(t)
	auth := "Authorization: Bearer " + s.key + "\r\n"
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
	post := func(hdr, body string) string {
		return "POST /ok HTTP/1.1\r\nHost: api\r\n" + auth + hdr + "\r\n" + body
	}
	tests := []struct {
		name string
		req  string
	}{
		{"CL.TE", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"+smuggled)},
		{"TE.CL", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n"+smuggled)},
		{"two Content-Lengths", post("Content-Length: 0\r\nContent-Length: 44\r\n", smuggled)},
		{"Content-Length list", post("Content-Length: 0, 44\r\n", smuggled)},
		{"signed Content-Length", post("Content-Length: +0\r\n", smuggled)},
		{"negative Content-Length", post("Content-Length: -1\r\n", smuggled)},
		{"hex Content-Length", post("Content-Length: 0x0\r\n", smuggled)},
		{"TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"+smuggled)},
		{"TE chunked, identity", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"+smuggled)},
		{"TE identity, chunked", post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"+smuggled)},
		{"two TE lines", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "0\r\n\r\n"+smuggled)},
		{"TE with a tab", post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"+smuggled)},
		{"TE with a vertical tab", post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"+smuggled)},
		{"TE folded", post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"+smuggled)},
		{"TE upper-case", post("Transfer-Encoding: CHUNKED\r\n", "0\r\n\r\n"+smuggled)},
		{"TE_ spelling", post("Transfer_Encoding: chunked\r\nContent-Length: 0\r\n", "0\r\n\r\n"+smuggled)},
		{"TE on HTTP/1.0", strings.Replace(post("Transfer-Encoding: chunked\r\n", "0\r\n\r\n"+smuggled), "HTTP/1.1", "HTTP/1.0", 1)},
		{"chunk size overflow", post("Transfer-Encoding: chunked\r\n", "10000000000000000\r\nx\r\n0\r\n\r\n"+smuggled)},
		{"chunk size with spaces", post("Transfer-Encoding: chunked\r\n", "0 \r\n\r\n"+smuggled)},
		{"chunk extension with LF", post("Transfer-Encoding: chunked\r\n", "0;a=b\nc\r\n\r\n"+smuggled)},
		{"bare LF line endings", strings.ReplaceAll(post("Content-Length: 0\r\n", smuggled), "\r\n", "\n")},
		{"pipelined request without a key", post("Content-Length: 0\r\n", smuggled)},
		{"GET with a body", "GET /ok HTTP/1.1\r\nHost: api\r\n" + auth + "Content-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n" + smuggled},
		{"Expect 100-continue then smuggled", post("Expect: 100-continue\r\nContent-Length: 0\r\n", smuggled)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := raw(t, s.proxyAddr, tt.req, 3)
			var codes []int
			for _, r := range rs {
				codes = append(codes, r.StatusCode)
			}
			t.Logf("responses %v", codes)
			for _, r := range rs {
				// 501 is net/http's answer to an unknown transfer coding;
				// a 502/503/504 would blame the backend for the client.
				if r.StatusCode >= 500 && r.StatusCode != 501 {
					t.Errorf("status %d: %s", r.StatusCode, bodyOf(r))
				}
			}
			if len(rs) > 1 && rs[1].StatusCode != 401 && rs[1].StatusCode != 400 {
				t.Errorf("second response %d: the smuggled request was not authenticated", rs[1].StatusCode)
			}
		})
	}
	// The invariant (checked at cleanup for the whole suite): nothing with
	// "smuggled" in its path reached the backend, and everything that did
	// carried our identity. Also: the backend's connections stayed in sync,
	// so a normal request still works.
	if res, _ := s.call(t, s.key, "/after"); res.StatusCode != 200 {
		t.Errorf("after the smuggling attempts: %d", res.StatusCode)
	}
}

func TestAdversarial_ResourceExhaustion(t *testing.T) {
	t.Run("slowloris connections do not starve a real client", func(t *testing.T) {
		s := newSuite(t, "KEYPROXY_SERVER_READ_HEADER_TIMEOUT=1s")
		const n = 300
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range n {
			c, err := net.Dial("tcp", s.proxyAddr)
			if err != nil {
				t.Fatalf("dial %d: %v", len(conns), err)
			}
			conns = append(conns, c)
			_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: api\r\nX-Slow: ")
		}
		// Keep dribbling header bytes while a real client is served.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					for _, c := range conns {
						_, _ = c.Write([]byte("a"))
					}
				}
			}
		})
		start := time.Now()
		for range 5 {
			if res, _ := s.call(t, s.key, "/real"); res.StatusCode != 200 {
				t.Errorf("real client: %d", res.StatusCode)
			}
		}
		// A generous bound: the guarantee is "served", not "fast".
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("5 real requests took %s beside %d slow connections", d, n)
		}
		close(stop)
		wg.Wait()
		// read_header_timeout ends every slow connection.
		deadline := time.Now().Add(10 * time.Second)
		for i, c := range conns {
			_ = c.SetReadDeadline(deadline)
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("slow connection %d still open after read_header_timeout: %v", i, err)
			}
		}
		for _, r := range s.be.requests() {
			if r.path == "/slow" {
				t.Fatal("a slow request reached the backend")
			}
		}
	})
	t.Run("a flood of random well-formed keys is not a flood of store queries", func(t *testing.T) {
		s := newSuite(t)
		format := s.formatForTest(t)
		misses := func() float64 { return s.metric(t, `keyproxy_auth_cache_requests_total{layer="local",result="miss"}`) }
		before := misses()
		const flood = 500
		codes := map[int]int{}
		for range flood {
			k, err := format.Generate()
			if err != nil {
				t.Fatal(err)
			}
			res, _ := s.call(t, k, "/x")
			codes[res.StatusCode]++
		}
		got := misses() - before
		t.Logf("%d random well-formed keys: %v, %v store lookups", flood, codes, got)
		if got > 30+5 { // invalid_keys.burst, and a little for concurrency
			t.Errorf("%v cache misses (store lookups) for %d unknown keys, want at most the burst of 30", got, flood)
		}
		if codes[429] < flood-35 {
			t.Errorf("only %d of %d throttled", codes[429], flood)
		}
		// The flooding address is throttled; another client is not.
		if res := s.getFrom(t, "127.0.0.3", "/x", "Authorization", "Bearer "+s.key); res.StatusCode != 200 {
			t.Errorf("another client during the flood: %d", res.StatusCode)
		}
		// From the flooding address a key this replica holds still works
		// (clients sharing a NAT with the flooder), any other is refused.
		if res := s.get(t, "/x", "Authorization", "Bearer "+s.key); res.StatusCode != 200 {
			t.Errorf("a known key from the flooding address: %d %s", res.StatusCode, bodyOf(res))
		}
		k, err := format.Generate()
		if err != nil {
			t.Fatal(err)
		}
		res := s.get(t, "/x", "Authorization", "Bearer "+k)
		if res.StatusCode != 429 || problemCode(t, res) != "auth_throttled" || res.Header.Get("Retry-After") == "" {
			t.Errorf("an unknown key from the flooding address: %d %s (Retry-After %q)", res.StatusCode, bodyOf(res), res.Header.Get("Retry-After"))
		}
	})
}

// metric reads one sample from the admin listener's /metrics.
func (s *suite) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Revoked, expired, unknown and otherwise refused keys answer with the same
// bytes but for the request id: nothing tells them apart.
func TestAdversarial_UniformAnswers(t *testing.T) {
	s := newSuite(t)
	revoked, rid := s.newKey(t, "usr_r", "team_r", "owner")
	if res, _ := s.admin(t, http.MethodDelete, "/admin/v1/keys/"+rid, nil); res.StatusCode != 204 {
		t.Fatal("revoke")
	}
	resp, body := s.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{"name": "soon", "user_id": "usr_e", "team_id": "team_e",
		"role": "owner", "expires_at": time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)})
	if resp.StatusCode != 201 {
		t.Fatalf("create expiring: %d %s", resp.StatusCode, body)
	}
	expired := decode(t, body)["key"].(string)
	deactivated, _ := s.newKey(t, "usr_d", "team_d", "owner")
	s.admin(t, http.MethodPut, "/admin/v1/users/usr_d", map[string]any{"team_id": "team_d", "role": "owner", "active": false})
	moved, _ := s.newKey(t, "usr_m", "team_m", "owner")
	s.admin(t, http.MethodPut, "/admin/v1/users/usr_m", map[string]any{"team_id": "team_elsewhere", "role": "owner", "active": true})
	format := s.formatForTest(t)
	unknown, _ := format.Generate()
	time.Sleep(1600 * time.Millisecond) // past the expiring key's end

	cases := map[string]string{
		"revoked": revoked, "expired": expired, "unknown": unknown, "owner deactivated": deactivated, "owner moved team": moved,
		"malformed": "wev_nope", "bad checksum": s.key[:len(s.key)-1] + flipChar(s.key[len(s.key)-1]), "foreign format": "ghp_" + s.key[4:],
	}
	norm := regexp.MustCompile(`"request_id":"[^"]*"`)
	var wantBody, wantHdr, first string
	for name, key := range cases {
		res := s.get(t, "/x", "Authorization", "Bearer "+key)
		if res.StatusCode != 401 {
			t.Errorf("%s: status %d", name, res.StatusCode)
			continue
		}
		b := norm.ReplaceAllString(bodyOf(res), `"request_id":""`)
		h := res.Header.Clone()
		h.Del("Date")
		h.Del("X-Request-Id")
		hs := fmt.Sprint(h)
		if first == "" {
			first, wantBody, wantHdr = name, b, hs
			continue
		}
		if b != wantBody {
			t.Errorf("%s answers\n%s\n%s answers\n%s", name, b, first, wantBody)
		}
		if hs != wantHdr {
			t.Errorf("%s headers %s, %s headers %s", name, hs, first, wantHdr)
		}
	}
}

func flipChar(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// formatForTest is the instance's key format (the default prefix).
func (s *suite) formatForTest(t *testing.T) keystore.Format {
	t.Helper()
	f, err := keystore.NewFormat("wev_")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Wherever a client puts a key — path, query, user agent, cookie, another
// header, a near miss — neither the log (access lines and the log audit
// sink) nor the stored audit trail holds it.
func TestAdversarial_KeysNeverReachLogsOrAudit(t *testing.T) {
	s := newSuite(t)
	k := s.key
	near := k[:len(k)-1] + flipChar(k[len(k)-1])
	for _, hdr := range [][]string{
		{"Authorization", "Bearer " + k},
		{"Authorization", "Bearer " + near},
		{"Authorization", "Bearer " + k + " " + k},
		{"Authorization", "Basic " + k},
		{"User-Agent", "script/1.0 key=" + k, "Authorization", "Bearer " + k},
		{"User-Agent", "script/1.0 key=" + k},
		{"Cookie", "api_key=" + k, "X-Api-Key", k, "Referer", "https://x/?api_key=" + k, "X-Request-Id", k},
	} {
		for _, path := range []string{"/x", "/x/" + k, "/x?api_key=" + k, "/x/" + near + "/y"} {
			s.get(t, path, hdr...)
		}
	}
	// The admin token where a client or an admin caller might paste it.
	s.get(t, "/x/"+s.token, "Authorization", "Bearer "+k, "User-Agent", "script/1.0 token="+s.token)
	s.get(t, "/x/"+s.token, "X-Request-Id", s.token)
	// net/http takes any token as a method: a key or the token as one.
	for _, method := range []string{"WEV" + k, s.token} {
		for _, url := range []string{s.proxyURL + "/x", s.adminURL + "/admin/v1/keys"} {
			req, _ := http.NewRequest(method, url, nil)
			req.Header.Set("Authorization", "Bearer "+k)
			if strings.HasPrefix(url, s.adminURL) {
				req.Header.Set("Authorization", "Bearer "+s.token)
			}
			do(t, req)
		}
	}
	// Admin side: a key pasted into admin paths, the actor header and the
	// user agent, and the token as the actor.
	for _, path := range []string{"/admin/v1/keys/" + k, "/admin/v1/audit?key_id=" + k} {
		for _, actor := range []string{k, s.token} {
			req, _ := http.NewRequest("GET", s.adminURL+path, nil)
			req.Header.Set("Authorization", "Bearer "+s.token)
			req.Header.Set("X-Actor-Id", actor)
			req.Header.Set("User-Agent", "ops/1.0 "+k+" "+s.token)
			do(t, req)
		}
	}
	for _, actor := range []string{k, s.token} {
		req, _ := http.NewRequest(http.MethodPut, s.adminURL+"/admin/v1/teams/team_actor", strings.NewReader(`{"active":true}`))
		req.Header.Set("Authorization", "Bearer "+s.token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Actor-Id", actor)
		do(t, req)
	}
	_, body := s.admin(t, http.MethodGet, "/admin/v1/audit?limit=1000", nil)
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(string(body), `"type":"`) < 30 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		_, body = s.admin(t, http.MethodGet, "/admin/v1/audit?limit=1000", nil)
	}
	for _, secret := range []string{k, near, k[4:], near[4:], s.token} {
		if strings.Contains(string(body), secret) {
			t.Errorf("the stored audit trail holds a key or the admin token: %.300s", body)
		}
	}
	if err := s.stop(); err != nil { // drains the audit log sink
		t.Fatal(err)
	}
	logs := s.logs.String()
	for _, secret := range []string{k, near, k[4:], near[4:], s.token} {
		if i := strings.Index(logs, secret); i >= 0 {
			t.Errorf("the log holds a secret: …%s…", logs[max(0, i-200):min(len(logs), i+60)])
		}
	}
	if !strings.Contains(logs, "[redacted]") {
		t.Error("no path was redacted: the test sent none with a key?")
	}
}
