package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/wevion/keyproxy/keystore"
)

// mapResolver is a map-backed Resolver for in-package tests and benchmarks.
type mapResolver map[keystore.Hash]keystore.Identity

func (m mapResolver) Resolve(_ context.Context, h keystore.Hash) (keystore.Identity, error) {
	id, ok := m[h]
	if !ok {
		return keystore.Identity{}, keystore.ErrNotFound
	}
	return id, nil
}

// captureTransport answers every request itself and keeps the last
// outbound request's headers: the fuzzer needs what the ReverseProxy would
// send, without a network round trip per input.
type captureTransport struct {
	mu  sync.Mutex
	got http.Header
}

func (c *captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.got = r.Header.Clone()
	c.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
}

func (c *captureTransport) CloseIdleConnections() {}

// serve sends r through h, which must admit it, and returns the headers
// the backend got.
func (c *captureTransport) serve(t *testing.T, h http.Handler, r *http.Request) http.Header {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

var testIdentity = keystore.Identity{KeyID: "key_0123456789abcdefghij", UserID: "usr_1", TeamID: "team_1", Role: "admin",
	UserActive: true, TeamActive: true, SameTeam: true}

func newTestHandler(tb testing.TB, rt http.RoundTripper) (*Handler, string) {
	tb.Helper()
	format, err := keystore.NewFormat("wev_")
	if err != nil {
		tb.Fatal(err)
	}
	key, err := format.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	h, err := New(Config{
		Upstream:  &url.URL{Scheme: "http", Host: "backend.internal"},
		Format:    format,
		Resolver:  mapResolver{keystore.HashKey(key): testIdentity},
		Transport: rt,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return h, key
}

func TestFilterDropsEverySpellingOfOurHeaders(t *testing.T) {
	names, err := newHeaderNames("X-Wevion-")
	if err != nil {
		t.Fatal(err)
	}
	always := []string{"Authorization", "authorization", "X-Wevion-Role", "x-wevion-role", "X_Wevion_Role", "x-wevion_user-id",
		"X-WEVION-ANYTHING", "X_wevion_", "X-Wevion-", "X_Request_Id", "x_forwarded_for", "X_Forwarded_Host", "X_FORWARDED_PROTO"}
	// Facts about the connection: a trusted proxy may state them, a
	// client may not.
	facts := []string{"X-Forwarded-Port", "X-Forwarded-Prefix", "x-forwarded-server", "X_Forwarded_Ssl", "X-Forwarded-Scheme",
		"X-Forwarded-Uri", "X-Real-Ip", "x_real_ip", "True-Client-Ip", "X-Client-Ip", "Cf-Connecting-Ip", "X-Original-Url",
		"X-Rewrite-Url", "X_Original_URL", "X-Original-Forwarded-For", "X-Original-Host", "X-Cluster-Client-Ip", "Fastly-Client-Ip"}
	kept := []string{"X-Wevio", "X-Wevion", "Accept", "X-Request-Id", "X_Custom_Header", "Xwevion-Role", "X-Wevionx",
		"X-Forwarded", "X-Forwardedfor", "X-Real-Ipx", "X-Original"}
	for _, trusted := range []bool{false, true} {
		h := http.Header{}
		for _, n := range append(append(append([]string{}, always...), facts...), kept...) {
			h[n] = []string{"v"}
		}
		names.strip(h, trusted)
		for _, n := range always {
			if _, ok := h[n]; ok {
				t.Errorf("trusted=%v: %q kept", trusted, n)
			}
		}
		for _, n := range facts {
			if _, ok := h[n]; ok != trusted {
				t.Errorf("trusted=%v: %q kept=%v", trusted, n, ok)
			}
		}
		for _, n := range kept {
			if _, ok := h[n]; !ok {
				t.Errorf("trusted=%v: %q removed", trusted, n)
			}
		}
	}
}

// The decisions prepared for common header names are the full checks'
// own, whatever the prefix: with the prefix "Accept-", Accept-Encoding
// is an identity header a client may not send.
func TestPreparedHeaderDecisionsMatchTheChecks(t *testing.T) {
	for _, prefix := range []string{"X-Wevion-", "Accept-", "content_", "X-B3", "Sec-Ch", "Au"} {
		names, err := newHeaderNames(prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, trusted := range []bool{false, true} {
			src := http.Header{}
			for _, n := range commonHeaders {
				src[n] = []string{"v"}
			}
			dst := http.Header{}
			names.copyForwardable(dst, src, trusted)
			for _, n := range commonHeaders {
				want := names.forwardable(n, trusted) && !isHopByHop(n)
				if _, got := dst[n]; got != want {
					t.Errorf("prefix %q, trusted=%v: %s forwarded=%v, want %v", prefix, trusted, n, got, want)
				}
			}
			if _, ok := dst["Accept-Encoding"]; ok == (prefix == "Accept-") {
				t.Errorf("prefix %q: Accept-Encoding forwarded=%v", prefix, ok)
			}
		}
	}
}

// FuzzRewriteHeaders: whatever headers a client sends, through the whole
// ReverseProxy (hop-by-hop removal included), the backend sees exactly our
// identity headers, one value each, no Authorization, and one valid
// X-Request-Id.
func FuzzRewriteHeaders(f *testing.F) {
	f.Add("X-Wevion-Role", "owner", "Connection", "X-Wevion-Role")
	f.Add("x_wevion_user-id", "usr_evil", "X-Request-Id", "bad id")
	f.Add("AUTHORIZATION", "Bearer x", "Connection", "X-Wevion-Key-Id, X-Request-Id")
	f.Add("X-Wevion-Team-Id", "t", "X_WEVION_TEAM_ID", "t2")
	f.Add("Upgrade", "h2c", "Connection", "Upgrade, HTTP2-Settings")
	f.Add("X-Forwarded-Port", "443", "X_Real_IP", "6.6.6.6")
	f.Add("Forwarded", "for=1.2.3.4", "X-Original-URL", "/admin")
	ours := map[string]bool{"X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true}
	rt := &captureTransport{}
	h, key := newTestHandler(f, rt)
	want := map[string]string{
		"X-Wevion-User-Id": testIdentity.UserID, "X-Wevion-Team-Id": testIdentity.TeamID,
		"X-Wevion-Role": testIdentity.Role, "X-Wevion-Key-Id": testIdentity.KeyID,
	}
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string) {
		r := httptest.NewRequest("GET", "http://proxy.example/v1/x", nil)
		r.Header[n1] = append(r.Header[n1], v1)
		r.Header[n2] = append(r.Header[n2], v2)
		r.Header["Authorization"] = []string{"Bearer " + key} // replaces a fuzzed one: the request must be admitted
		got := rt.serve(t, h, r)
		for name, vals := range got {
			if hasNormPrefix(name, "x-wevion-") {
				if w, ok := want[name]; !ok || len(vals) != 1 || vals[0] != w {
					t.Fatalf("backend got %q: %q", name, vals)
				}
			}
			if len(name) == len("authorization") && hasNormPrefix(name, "authorization") {
				t.Fatalf("backend got %q", name)
			}
			if hasNormPrefix(name, forwardedPrefix) && !ours[name] || isConnectionFact(name) {
				t.Fatalf("backend got the client's %q: %q", name, vals)
			}
			if ours[name] && len(vals) != 1 {
				t.Fatalf("backend got %d values of %s", len(vals), name)
			}
			if name == "Upgrade" && (len(vals) != 1 || !equalFoldASCII(vals[0], "websocket")) || name == "Http2-Settings" {
				t.Fatalf("backend got %s: %q", name, vals)
			}
		}
		for name := range want {
			if _, ok := got[name]; !ok {
				t.Fatalf("%s missing", name)
			}
		}
		if rid := got["X-Request-Id"]; len(rid) != 1 || !validRequestID(rid[0]) {
			t.Fatalf("X-Request-Id = %q", rid)
		}
	})
}

// FuzzKeyAdmission: whatever follows "Bearer ", only the one issued key
// (after the spaces that separate it from the scheme) is admitted;
// everything else is refused with 401 and a body that does not echo it.
func FuzzKeyAdmission(f *testing.F) {
	rt := &captureTransport{}
	h, key := newTestHandler(f, rt)
	for _, s := range []string{key, key[:len(key)-1], key + "A", "wev_", "wev_" + strings.Repeat("0", 38), "WEV_" + key[4:],
		key[:10] + "\x00" + key[11:], key[:10] + "é" + key[12:], "", " " + key, key + " x", strings.Repeat("A", 2048)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		r := httptest.NewRequest("GET", "http://proxy.example/v1/x", nil)
		r.Header["Authorization"] = []string{"Bearer " + token}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch {
		case strings.TrimLeft(token, " ") == key:
			if w.Code != 200 {
				t.Fatalf("the issued key was refused: %d", w.Code)
			}
		case w.Code == 200:
			t.Fatalf("%q admitted", token)
		case w.Code != 401:
			t.Fatalf("%q: status %d", token, w.Code)
		case len(token) >= 8 && strings.Contains(w.Body.String(), token):
			t.Fatalf("the problem echoes %q", token)
		}
	})
}

// The outbound header map is built for each request: no header of one
// request may reach the backend with another, one after the other or at
// once, whatever the number of headers.
func TestOutboundHeadersNeverCrossRequests(t *testing.T) {
	var mu sync.Mutex
	var leaks []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		own := r.Header.Get("X-Own")
		for name := range r.Header {
			if strings.HasPrefix(name, "X-Only-") && name != http.CanonicalHeaderKey("X-Only-"+own) {
				mu.Lock()
				leaks = append(leaks, name+" reached the request of "+own)
				mu.Unlock()
			}
		}
		if r.Header.Get("X-Wevion-User-Id") != testIdentity.UserID {
			mu.Lock()
			leaks = append(leaks, "request "+own+" lost its identity headers")
			mu.Unlock()
		}
	}))
	defer backend.Close()
	u, _ := url.Parse(backend.URL)
	h, key := newTestHandler(t, nil)
	h.upstream = u
	defer h.CloseIdleConnections()

	send := func(i int) {
		own := strings.Repeat("x", i%7) + string(rune('a'+i%26))
		r := httptest.NewRequest("GET", "http://proxy.example/v1/x", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("X-Own", own)
		r.Header.Set("X-Only-"+own, "1")
		for j := range i % 20 { // maps of every size, some past the pooled limit
			r.Header.Set("X-Filler-"+string(rune('a'+j)), "1")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("request %d: status %d", i, w.Code)
		}
	}
	for i := range 60 {
		send(i)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() { send(i) })
	}
	wg.Wait()
	if len(leaks) > 0 {
		t.Fatalf("%d leaks, first: %s", len(leaks), leaks[0])
	}
}
