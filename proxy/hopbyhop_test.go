package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// forwardedBy sends one request with the given headers through h and
// returns the headers the backend got, less those this proxy sets itself
// or never forwards, which have their own tests.
func forwardedBy(t *testing.T, h http.Handler, rt *captureTransport, key string, headers [][2]string) http.Header {
	t.Helper()
	r := httptest.NewRequest("GET", "http://proxy.example/v1/x", nil)
	for _, kv := range headers {
		r.Header.Add(kv[0], kv[1])
	}
	r.Header.Set("Authorization", "Bearer "+key)
	filterUpgrade(r.Header) // keyproxy's ServeHTTP does this; the bare proxy gets the same input
	got := rt.serve(t, h, r)
	names, _ := newHeaderNames(DefaultHeaderPrefix)
	for name := range got {
		if !names.forwardable(name, false) || name == "X-Request-Id" {
			delete(got, name)
		}
	}
	return got
}

// bareProxy is httputil.ReverseProxy as its documentation configures it.
func bareProxy(rt http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: "backend.internal"})
			pr.SetXForwarded()
		},
		Transport: rt,
	}
}

// The ReverseProxy gets a request without headers and rewrite removes the
// hop-by-hop ones itself: the backend must see what a bare
// httputil.ReverseProxy would pass on.
func TestHopByHopHeadersAsHTTPUtil(t *testing.T) {
	for _, tt := range []struct {
		name    string
		headers [][2]string
		want    http.Header // what the backend gets besides User-Agent
	}{
		{"hop-by-hop list", [][2]string{{"Connection", "keep-alive"}, {"Keep-Alive", "timeout=5"}, {"Proxy-Connection", "keep-alive"},
			{"Proxy-Authorization", "Basic eDp5"}, {"Proxy-Authenticate", "Basic"}, {"Trailer", "X-Sum"}, {"Transfer-Encoding", "chunked"},
			{"Te", "deflate"}, {"Accept", "application/json"}},
			http.Header{"Accept": {"application/json"}}},
		{"named in Connection", [][2]string{{"Connection", " x-custom ,\tX-Other"}, {"Connection", "x-third"}, {"X-Custom", "1"},
			{"X-Other", "2"}, {"X-Third", "3"}, {"X-Kept", "4"}},
			http.Header{"X-Kept": {"4"}}},
		{"Te trailers", [][2]string{{"Te", "deflate, Trailers;q=1"}, {"Te", "trailers"}},
			http.Header{"Te": {"trailers"}}},
		{"WebSocket upgrade", [][2]string{{"Connection", "keep-alive, Upgrade"}, {"Upgrade", "websocket"}, {"Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}},
			http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}},
		{"Upgrade not named in Connection", [][2]string{{"Upgrade", "websocket"}}, http.Header{}},
		{"h2c upgrade", [][2]string{{"Connection", "Upgrade, HTTP2-Settings"}, {"Upgrade", "h2c"}, {"Http2-Settings", "AAMAAABk"}}, http.Header{}},
		{"Forwarded", [][2]string{{"Forwarded", "for=192.0.2.1"}, {"Via", "1.1 edge"}}, http.Header{"Via": {"1.1 edge"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rt, bareRT := &captureTransport{}, &captureTransport{}
			h, key := newTestHandler(t, rt)
			got := forwardedBy(t, h, rt, key, tt.headers)
			bare := forwardedBy(t, bareProxy(bareRT), bareRT, key, tt.headers)
			if !reflect.DeepEqual(got, bare) {
				t.Errorf("keyproxy forwarded %v\nhttputil forwarded %v", got, bare)
			}
			delete(got, "User-Agent")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("forwarded %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzHopByHopAsHTTPUtil: for any two client headers with valid names,
// what keyproxy passes on besides its own headers is what a bare
// httputil.ReverseProxy passes on.
func FuzzHopByHopAsHTTPUtil(f *testing.F) {
	f.Add("Connection", "x-a, Keep-Alive", "X-A", "1")
	f.Add("Connection", "upgrade", "Upgrade", "websocket")
	f.Add("Te", "trailers", "Trailer", "X-Sum")
	f.Add("Connection", "Proxy-Authorization", "Proxy-Authorization", "Basic eDp5")
	f.Add("Keep-Alive", "x", "Connection", ",,  ,")
	rt, bareRT := &captureTransport{}, &captureTransport{}
	h, key := newTestHandler(f, rt)
	bare := bareProxy(bareRT)
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string) {
		// The server refuses other names with 400 before any handler.
		for _, n := range []string{n1, n2} {
			if n == "" || strings.IndexFunc(n, func(c rune) bool { return !isTokenChar(c) }) >= 0 {
				t.Skip()
			}
		}
		headers := [][2]string{{n1, v1}, {n2, v2}}
		got := forwardedBy(t, h, rt, key, headers)
		want := forwardedBy(t, bare, bareRT, key, headers)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("keyproxy forwarded %v\nhttputil forwarded %v", got, want)
		}
	})
}

func isTokenChar(c rune) bool {
	return c < 0x7f && ('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c))
}
