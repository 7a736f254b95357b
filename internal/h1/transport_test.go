package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// readHead returns a request head exactly as it came off the wire.
func readHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return "", err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// The inline path writes requests with Request.Write rather than the
// Transport's internals; the backend must not be able to tell.
func TestRoundTrip_InlineWritesWhatNetHTTPWrites(t *testing.T) {
	heads := make(chan string, 1)
	srv := newRawServer(t, func(_ *rawServer, c net.Conn, br *bufio.Reader) {
		for {
			head, err := readHead(br)
			if err != nil {
				return
			}
			heads <- head
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Seen: yes\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
	})
	ref := &http.Transport{DisableCompression: true}
	t.Cleanup(ref.CloseIdleConnections)

	cases := []struct {
		name    string
		build   func(u string) *http.Request
		want    []string
		notWant []string
	}{
		{
			name: "GET with query, Host and headers, User-Agent emptied as httputil does",
			build: func(u string) *http.Request {
				req := newReq(t, context.Background(), http.MethodGet, u+"/a/b%2Fc?q=1&r=%20x", nil)
				req.Host = "api.example.test"
				req.Header.Set("User-Agent", "")
				req.Header.Set("X-Request-Id", "abc")
				req.Header.Add("Accept", "text/plain")
				req.Header.Add("Accept", "application/json")
				return req
			},
			want: []string{
				"GET /a/b%2Fc?q=1&r=%20x HTTP/1.1\r\nHost: api.example.test\r\n",
				"Accept: text/plain\r\nAccept: application/json\r\n",
				"X-Request-Id: abc\r\n",
			},
			notWant: []string{"User-Agent", "Content-Length", "Transfer-Encoding", "Accept-Encoding"},
		},
		{
			name: "HEAD gets Go's User-Agent when none is set",
			build: func(u string) *http.Request {
				return newReq(t, context.Background(), http.MethodHead, u+"/h", nil)
			},
			want:    []string{"HEAD /h HTTP/1.1\r\n", "User-Agent: Go-http-client/1.1\r\n"},
			notWant: []string{"Content-Length"},
		},
		{
			name: "DELETE",
			build: func(u string) *http.Request {
				return newReq(t, context.Background(), http.MethodDelete, u+"/d", nil)
			},
			want: []string{"DELETE /d HTTP/1.1\r\n"},
		},
		{
			name: "POST with NoBody announces an empty body",
			build: func(u string) *http.Request {
				return newReq(t, context.Background(), http.MethodPost, u+"/p", http.NoBody)
			},
			want: []string{"POST /p HTTP/1.1\r\n", "Content-Length: 0\r\n"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ref.RoundTrip(tc.build(srv.url())); err != nil {
				t.Fatalf("net/http: %v", err)
			}
			want := <-heads

			r := newRig(t, nil)
			r.fallback.fail = true
			res, _ := do(t, r.tr, tc.build(srv.url()))
			got := <-heads

			if got != want {
				t.Errorf("request head differs from net/http's\n got: %q\nwant: %q", got, want)
			}
			for _, s := range tc.want {
				if !strings.Contains(got, s) {
					t.Errorf("head %q lacks %q", got, s)
				}
			}
			for _, s := range tc.notWant {
				if strings.Contains(got, s) {
					t.Errorf("head %q has %q", got, s)
				}
			}
			if res.StatusCode != http.StatusOK || res.Header.Get("X-Seen") != "yes" {
				t.Errorf("response = %d %v, want the backend's 200", res.StatusCode, res.Header)
			}
			if n := r.inline.count(); n != 1 {
				t.Errorf("inline dials = %d, want 1", n)
			}
		})
	}
}

func TestRoundTrip_HandsToFallback(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.RequestURI, b)
	}
	plain, _ := newServer(t, echo)
	secure := httptest.NewTLSServer(http.HandlerFunc(echo))
	t.Cleanup(secure.Close)
	proxy, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proxied %s", r.RequestURI)
	})
	proxyURL, _ := url.Parse(proxy.URL)

	bg := context.Background()
	cases := []struct {
		name      string
		configure func(fb *http.Transport)
		req       func() *http.Request
		wantBody  string
		wantDial  string
	}{
		{
			name: "request with a body",
			req: func() *http.Request {
				return newReq(t, bg, http.MethodPost, plain.URL+"/p", strings.NewReader("hello"))
			},
			wantBody: "POST /p hello",
			wantDial: plain.Listener.Addr().String(),
		},
		{
			name: "protocol upgrade",
			req: func() *http.Request {
				req := newReq(t, bg, http.MethodGet, plain.URL+"/u", nil)
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				return req
			},
			wantBody: "GET /u ",
			wantDial: plain.Listener.Addr().String(),
		},
		{
			name: "https",
			configure: func(fb *http.Transport) {
				fb.TLSClientConfig = &tls.Config{RootCAs: secure.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
			},
			req:      func() *http.Request { return newReq(t, bg, http.MethodGet, secure.URL+"/s", nil) },
			wantBody: "GET /s ",
			wantDial: secure.Listener.Addr().String(),
		},
		{
			name:      "proxy configured",
			configure: func(fb *http.Transport) { fb.Proxy = http.ProxyURL(proxyURL) },
			req:       func() *http.Request { return newReq(t, bg, http.MethodGet, "http://backend.invalid/x?y=1", nil) },
			wantBody:  "proxied http://backend.invalid/x?y=1",
			wantDial:  proxyURL.Host,
		},
		{
			name:      "keep-alives disabled",
			configure: func(fb *http.Transport) { fb.DisableKeepAlives = true },
			req:       func() *http.Request { return newReq(t, bg, http.MethodGet, plain.URL+"/k", nil) },
			wantBody:  "GET /k ",
			wantDial:  plain.Listener.Addr().String(),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.configure)
			_, body := do(t, r.tr, tc.req())
			if body != tc.wantBody {
				t.Errorf("body = %q, want %q", body, tc.wantBody)
			}
			if n := r.inline.count(); n != 0 {
				t.Errorf("inline dials = %d, want 0", n)
			}
			if got := r.fallback.dialed(); len(got) != 1 || got[0] != tc.wantDial {
				t.Errorf("fallback dialed %v, want [%s]", got, tc.wantDial)
			}
		})
	}
}

// Request.Write puts the method into the request line unchecked, so a
// method with a CRLF in it would smuggle a second request. net/http's
// Transport refuses such a method; the inline path must not send it.
// TestRoundTrip_InvalidRequestHeadNeverReachesTheBackend: what
// Request.Write would put on the wire unchecked (a method, a header name or
// value with CR or LF in it: a second, smuggled request) goes to the
// fallback, which refuses it as net/http does.
func TestRoundTrip_InvalidRequestHeadNeverReachesTheBackend(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*http.Request)
	}{
		{"method", func(r *http.Request) { r.Method = "GET / HTTP/1.1\r\nHost: x\r\n\r\nDELETE" }},
		{"header name", func(r *http.Request) { r.Header["X-A\r\nX-Smuggled"] = []string{"1"} }},
		{"empty header name", func(r *http.Request) { r.Header[""] = []string{"1"} }},
		{"header value", func(r *http.Request) { r.Header["X-Wevion-User-Id"] = []string{"usr_1\r\nX-Wevion-Role: owner"} }},
		{"header value NUL", func(r *http.Request) { r.Header["X-A"] = []string{"a\x00b"} }},
		{"header value DEL", func(r *http.Request) { r.Header["X-A"] = []string{"a\x7fb"} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, answer(always(okResponse)))
			r := newRig(t, nil)
			req := newReq(t, context.Background(), http.MethodGet, srv.url()+"/", nil)
			tc.mod(req)
			res, err := r.tr.RoundTrip(req)
			if err == nil {
				_ = res.Body.Close()
				t.Fatal("RoundTrip accepted the request")
			}
			if n := r.inline.count(); n != 0 {
				t.Errorf("inline dials = %d, want 0", n)
			}
			if n := srv.requests.Load(); n != 0 {
				t.Errorf("backend read %d requests, want 0", n)
			}
		})
	}
}

// TestValidHeader_AcceptsWhatNetHTTPSends: tabs, spaces and bytes past
// ASCII (obs-text) are valid in a value, as in net/http.
func TestValidHeader_AcceptsWhatNetHTTPSends(t *testing.T) {
	h := http.Header{"X-A": {"a\tb c", "caf\xc3\xa9", ""}, "Accept": {"*/*"}, "X-Odd_Name.1~": {"v"}}
	if !validHeader(h) {
		t.Errorf("validHeader(%q) = false", h)
	}
}

func TestCanonicalAddr(t *testing.T) {
	cases := []struct{ url, want string }{
		{"http://example.test/", "example.test:80"},
		{"http://example.test:8080/", "example.test:8080"},
		// An empty port is valid URL syntax and means the default port.
		{"http://example.test:/", "example.test:80"},
		{"http://127.0.0.1/", "127.0.0.1:80"},
		{"http://[::1]/", "[::1]:80"},
		{"http://[::1]:8080/", "[::1]:8080"},
		{"http://[::1]:/", "[::1]:80"},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if got := canonicalAddr(u); got != tc.want {
				t.Errorf("canonicalAddr(%s) = %q, want %q", tc.url, got, tc.want)
			}
		})
	}
}
