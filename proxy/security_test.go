package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

// rawRequest writes req on a new connection to the proxy and reads one
// response.
func (e *env) rawRequest(t *testing.T, req string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return res, c, br
}

// An h2c upgrade would turn the connection into a tunnel whose later
// requests the proxy never sees (h2c smuggling). The upgrade is dropped;
// the request itself goes on as plain HTTP/1.1.
func TestUpgradeToH2CIsNotForwarded(t *testing.T) {
	e := newEnv(t)
	e.up.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			// An h2c-capable backend would switch here.
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "h2c")
			w.WriteHeader(http.StatusSwitchingProtocols)
			return
		}
		_, _ = io.WriteString(w, "plain")
	})
	for _, hdr := range [][][2]string{
		{{"Connection", "Upgrade, HTTP2-Settings"}, {"Upgrade", "h2c"}, {"HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"}},
		{{"Connection", "Upgrade"}, {"Upgrade", "H2C"}},
		{{"Connection", "upgrade"}, {"Upgrade", "websocket, h2c"}},
		{{"Upgrade", "h2c"}}, // without Connection: still not passed on
	} {
		req, err := http.NewRequest("GET", e.srv.URL+"/v1/things", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range append(hdr, bearer(e.validKey)) {
			req.Header.Add(kv[0], kv[1])
		}
		// A switched connection never ends its body: bound the wait.
		res, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if body := string(b); err != nil || res.StatusCode != 200 || body != "plain" {
			t.Errorf("%v: got %d %q, want 200 from the backend without an upgrade", hdr, res.StatusCode, body)
		}
	}
	for _, got := range e.up.requests() {
		for _, name := range []string{"Upgrade", "Http2-Settings"} {
			if v, ok := got.Header[name]; ok {
				t.Errorf("backend received %s: %q", name, v)
			}
		}
	}
}

// A WebSocket upgrade is authenticated like any request and then relayed.
func TestWebSocketUpgradeIsAuthenticatedThenRelayed(t *testing.T) {
	e := newEnv(t)
	e.up.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Wevion-User-Id") != e.identity.UserID {
			http.Error(w, "no identity", http.StatusForbidden)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		_ = brw.Flush()
		line, _ := brw.ReadString('\n')
		_, _ = brw.WriteString("echo " + line)
		_ = brw.Flush()
	})
	const upgrade = "GET /ws HTTP/1.1\r\nHost: proxy\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"

	res, _, _ := e.rawRequest(t, upgrade+"\r\n")
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("upgrade without a key: status %d, want 401", res.StatusCode)
	}
	res, conn, br := e.rawRequest(t, upgrade+"Authorization: Bearer "+e.validKey+"\r\n\r\n")
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade with a key: status %d, want 101", res.StatusCode)
	}
	if _, err := io.WriteString(conn, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Fatalf("relayed %q, %v", line, err)
	}
}

func TestConnectAndTraceAreRefusedBeforeAuthentication(t *testing.T) {
	e := newEnv(t)
	for _, req := range []string{
		"TRACE /v1/things HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer " + e.validKey + "\r\n\r\n",
		"TRACE /v1/things HTTP/1.1\r\nHost: proxy\r\n\r\n",
		"CONNECT backend.internal:443 HTTP/1.1\r\nHost: backend.internal:443\r\nAuthorization: Bearer " + e.validKey + "\r\n\r\n",
		"CONNECT /v1/things HTTP/1.1\r\nHost: proxy\r\n\r\n",
	} {
		res, _, _ := e.rawRequest(t, req)
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		p := checkProblem(t, res, string(body), http.StatusMethodNotAllowed, proxy.CodeMethodNotAllowed)
		if res.Header.Get("Allow") == "" || strings.Contains(res.Header.Get("Allow"), "TRACE") {
			t.Errorf("Allow = %q", res.Header.Get("Allow"))
		}
		_ = p
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("backend received %d requests", n)
	}
	if n := e.resolver.calls.Load(); n != 0 {
		t.Errorf("resolver asked %d times for a refused method", n)
	}
	for _, ev := range e.rec.wait(t, 4) {
		if ev.Type != audit.TypeAuthFailed || ev.Outcome != proxy.OutcomeMethodRefused || ev.Status != 405 {
			t.Errorf("audit event %+v", ev)
		}
	}
}

// Headers a backend reads as facts about the connection are a trusted
// proxy's to state; from anyone else they are dropped.
func TestConnectionFactsOnlyFromTrustedProxies(t *testing.T) {
	facts := [][2]string{
		{"X-Real-Ip", "6.6.6.6"}, {"True-Client-Ip", "6.6.6.6"}, {"X-Client-Ip", "6.6.6.6"},
		{"X-Forwarded-Port", "443"}, {"X-Forwarded-Prefix", "/admin"}, {"X-Forwarded-Server", "evil"},
		{"X-Original-Url", "/admin/v1/keys"}, {"X-Rewrite-Url", "/admin"}, {"X_Real_IP", "6.6.6.6"},
	}
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			e := newEnv(t, func(c *proxy.Config) {
				if trusted {
					c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
				}
			})
			res, _ := e.do(t, "GET", "/v1/things", append([][2]string{bearer(e.validKey)}, facts...))
			if res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			got := e.up.only(t)
			for _, f := range facts {
				_, ok := got.Header[f[0]]
				if f[0] == "X_Real_IP" {
					ok = len(got.Header["X_real_ip"]) > 0 || len(got.Header[f[0]]) > 0
				}
				if ok != trusted {
					t.Errorf("%s reached the backend = %v, want %v", f[0], ok, trusted)
				}
			}
		})
	}
}

// A flood of random well-formed keys must not become a flood of lookups.
func TestInvalidKeyThrottle(t *testing.T) {
	limit := ratelimit.Limit{Requests: 1, Per: time.Hour, Burst: 5}
	t.Run("refuses before any lookup once the budget is spent", func(t *testing.T) {
		e := newEnv(t, func(c *proxy.Config) { c.InvalidKeyLimit = limit })
		// Another client behind the same address (a NAT) uses a known key.
		if res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey)}); res.StatusCode != 200 {
			t.Fatalf("valid key before the flood: %d", res.StatusCode)
		}
		calls := e.resolver.calls.Load()
		for i := range 50 {
			k, _ := e.format.Generate()
			res, body := e.do(t, "GET", "/v1/things", [][2]string{bearer(k)})
			switch {
			case i < limit.Burst:
				checkProblem(t, res, body, 401, proxy.CodeInvalidAPIKey)
			default:
				checkProblem(t, res, body, 429, proxy.CodeAuthThrottled)
				if ra := res.Header.Get("Retry-After"); ra == "" || ra == "0" {
					t.Fatalf("Retry-After = %q", ra)
				}
			}
		}
		if n := e.resolver.calls.Load() - calls; n != int64(limit.Burst) {
			t.Errorf("resolver asked %d times for 50 unknown keys, want %d", n, limit.Burst)
		}
		// A key this replica already holds still works from the throttled
		// address (no lookup needed); any other key is refused unread.
		before := len(e.up.requests())
		if res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey)}); res.StatusCode != 200 {
			t.Errorf("known key from the throttled address: %d, want 200", res.StatusCode)
		}
		other, _ := e.newKey(t, keySpec{})
		res, body := e.do(t, "GET", "/v1/things", [][2]string{bearer(other)})
		checkProblem(t, res, body, 429, proxy.CodeAuthThrottled)
		if got := len(e.up.requests()) - before; got != 1 {
			t.Errorf("%d requests reached the backend after the flood, want only the known key's", got)
		}
	})
	t.Run("revoked and expired keys do not count: the caches answer for them", func(t *testing.T) {
		e := newEnv(t, func(c *proxy.Config) { c.InvalidKeyLimit = limit })
		var refused []string
		for _, spec := range []keySpec{{revoked: true}, {expired: true}, {ownerInactive: true}, {ownerMoved: true}} {
			k, _ := e.newKey(t, spec)
			refused = append(refused, k)
		}
		for range 5 {
			for _, k := range refused {
				res, body := e.do(t, "GET", "/v1/things", [][2]string{bearer(k)})
				checkProblem(t, res, body, 401, proxy.CodeInvalidAPIKey)
			}
		}
		if res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey)}); res.StatusCode != 200 {
			t.Errorf("valid key after 20 refused ones: status %d", res.StatusCode)
		}
	})
	t.Run("malformed keys and valid keys cost nothing", func(t *testing.T) {
		e := newEnv(t, func(c *proxy.Config) { c.InvalidKeyLimit = limit })
		for range 20 {
			e.do(t, "GET", "/v1/things", [][2]string{bearer(flipLast(e.validKey))})
			e.do(t, "GET", "/v1/things", [][2]string{bearer("wev_junk")})
			if res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey)}); res.StatusCode != 200 {
				t.Fatalf("valid key: status %d", res.StatusCode)
			}
		}
	})
	t.Run("behind a trusted proxy each client has its own budget", func(t *testing.T) {
		e := newEnv(t, func(c *proxy.Config) {
			c.InvalidKeyLimit = limit
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})
		for range limit.Burst + 1 {
			k, _ := e.format.Generate()
			e.do(t, "GET", "/v1/things", [][2]string{bearer(k), {"X-Forwarded-For", "203.0.113.7"}})
		}
		res, body := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey), {"X-Forwarded-For", "203.0.113.7"}})
		checkProblem(t, res, body, 429, proxy.CodeAuthThrottled)
		if res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey), {"X-Forwarded-For", "203.0.113.8"}}); res.StatusCode != 200 {
			t.Errorf("another client behind the same proxy: status %d, want 200", res.StatusCode)
		}
		if res, _ := e.do(t, "GET", "/v1/things", [][2]string{bearer(e.validKey)}); res.StatusCode != 200 {
			t.Errorf("the proxy itself: status %d, want 200", res.StatusCode)
		}
	})
}

func TestNewRejectsHalfAnInvalidKeyLimit(t *testing.T) {
	e := newEnv(t)
	_, err := proxy.New(proxy.Config{Upstream: mustURL(t, "http://backend"), Format: e.format, Resolver: e.resolver,
		InvalidKeyLimit: ratelimit.Limit{Requests: 10}})
	if err == nil {
		t.Error("InvalidKeyLimit without per and burst accepted")
	}
}

// A body the client cannot frame is the client's error (400), not the
// backend's (502).
func TestBrokenRequestBodyIsTheClientsError(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{"10000000000000000\r\nx\r\n0\r\n\r\n", "5\r\nabcdeXY0\r\n\r\n", "zz\r\n"} {
		req := "POST /v1/things HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer " + e.validKey +
			"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body
		c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, req)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		b, _ := io.ReadAll(res.Body)
		c.Close()
		checkProblem(t, res, string(b), http.StatusBadRequest, proxy.CodeInvalidRequestBody)
	}
	for _, ev := range e.rec.wait(t, 3) {
		if ev.Outcome != proxy.OutcomeBadBody || ev.Status != 400 {
			t.Errorf("audit event %+v", ev)
		}
	}
}
