package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/ratelimit"
)

type nopRecorder struct{}

func (nopRecorder) Record(audit.Event) {}

// stubTransport answers at once with a small JSON response, so a benchmark
// of ServeHTTP measures the proxy and not a network. Like h1's, its round
// trips are made inline: the handler reuses their header maps.
type stubTransport struct{}

func (stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}, "Content-Length": {"11"}},
		Body:          io.NopCloser(strings.NewReader(`{"ok":true}`)),
		ContentLength: 11, Request: r}, nil
}

func (s stubTransport) RoundTripInline(r *http.Request) (*http.Response, bool, error) {
	res, err := s.RoundTrip(r)
	return res, true, err
}

// instantTransport hands back one response, made inline: the hot path's
// stand-in for the backend, costing nothing of its own.
type instantTransport struct{ res *http.Response }

func (t instantTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.res.Request = r
	return t.res, nil
}

func (t instantTransport) RoundTripInline(r *http.Request) (*http.Response, bool, error) {
	res, err := t.RoundTrip(r)
	return res, true, err
}

// newProductionHandler wires the handler as serve does on a single node:
// keystore's Resolver (cache warm for the key), the local limiter with its
// headers, metrics on a registry, an audit recorder; mods change that.
func newProductionHandler(tb testing.TB, rt http.RoundTripper, mods ...func(*Config)) (*Handler, string) {
	tb.Helper()
	format, _ := keystore.NewFormat("wev_")
	key, err := format.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	resolver, err := keystore.NewResolver(mapResolver{keystore.HashKey(key): testIdentity}, keystore.ResolverOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(resolver.Close)
	if _, err := resolver.Resolve(context.Background(), keystore.HashKey(key)); err != nil {
		tb.Fatal(err)
	}
	lim := ratelimit.NewLocal(ratelimit.Policies{Default: ratelimit.Limit{Requests: 1_000_000, Per: time.Second, Burst: 1_000_000}}, ratelimit.LocalOptions{})
	tb.Cleanup(lim.Close)
	cfg := Config{
		Upstream: &url.URL{Scheme: "http", Host: "backend.internal"}, Format: format, Resolver: resolver,
		Limiter: lim, RateLimitHeaders: (*ratelimit.HeaderValues).Write, Recorder: nopRecorder{},
		Logger: zap.NewNop(), Registerer: prometheus.NewRegistry(), Transport: rt,
	}
	for _, mod := range mods {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return h, key
}

func benchRequest(key string) *http.Request {
	r := httptest.NewRequest("GET", "http://proxy.example/v1/projects/42/tasks?limit=50", nil)
	r.RemoteAddr = "192.0.2.10:53211"
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "wevion-client/1.2 (go)")
	r.Header.Set("Accept-Encoding", "gzip")
	return r
}

// BenchmarkHotPath is DESIGN.md's hot path with production parts: Bearer
// and key parse with checksum, SHA-256, a Resolver cache hit, a local
// limiter decision, the upstream header rewrite and the rate-limit
// response headers, on the outbound copy of the request that
// httputil.ReverseProxy makes for every request. "request copy" is that
// copy alone, of the headerless request ServeHTTP hands it (a bare proxy's
// copy also clones the header map, so costs more).
func BenchmarkHotPath(b *testing.B) {
	// The backend's response (its header map reused, as a transport
	// allocates one for a bare proxy too).
	res := &http.Response{Header: http.Header{"Content-Type": {"application/json"}, "Content-Length": {"11"}}}
	h, key := newProductionHandler(b, instantTransport{res})
	r := benchRequest(key)
	b.Run("auth+limit+rewrite", func(b *testing.B) {
		b.ReportAllocs()
		// The client's header map (the server's, reused as a server
		// reuses nothing: it is the same cost for a bare proxy).
		w := &nopWriter{h: http.Header{}}
		for b.Loop() {
			if p := hotPath(h, r, w); p != nil {
				b.Fatalf("refused: %d", p.status)
			}
		}
		if len(w.h["X-Request-Id"]) != 1 {
			b.Fatal("the response headers were not written")
		}
	})
	b.Run("request copy", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for b.Loop() {
			in := r.WithContext(ctx)
			in.Header = nil
			out := in.Clone(ctx)
			out.Header = make(http.Header)
		}
	})
}

// hotPath is one request through DESIGN.md's hot path, as
// BenchmarkHotPath measures it: the client's response headers cleared
// (w is reused), the request state, admission, then what ServeHTTP hands
// the ReverseProxy, its copy, the round trip (through the handler's
// transport wrapper) and what ServeHTTP does after the ReverseProxy
// returns. It returns the problem that refused the request, or nil.
func hotPath(h *Handler, r *http.Request, w *nopWriter) *preparedProblem {
	clear(w.h)
	e := h.begin(r)
	if p := h.admit(e); p != nil {
		return p
	}
	e.w = w
	in := r.WithContext(e)
	in.Header = nil
	out := in.Clone(e)
	out.Header = make(http.Header)
	h.rewrite(&httputil.ProxyRequest{In: in, Out: out})
	got, _ := h.rp.Transport.RoundTrip(out)
	_ = h.modifyResponse(got)
	h.recycle(e)
	return nil
}

// nopWriter is a ResponseWriter that keeps nothing but the status,
// reused across iterations so the benchmark counts only the handler's
// allocations.
type nopWriter struct {
	h      http.Header
	status int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(code int)        { w.status = code }

// newBareProxy is the bare httputil.ReverseProxy that keyproxy's handler is
// compared with: forwarding headers set, over the stub transport.
func newBareProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: "backend.internal"})
			pr.SetXForwarded()
		},
		Transport: stubTransport{},
	}
}

// BenchmarkServeHTTP compares the whole handler with a bare
// httputil.ReverseProxy, both over the same instant in-process transport:
// the difference is what keyproxy adds per request, with no network or
// server in the figure.
func BenchmarkServeHTTP(b *testing.B) {
	bare := newBareProxy()
	h, key := newProductionHandler(b, stubTransport{})
	// The access log as serve writes it by default: a JSON line per request
	// (here to io.Discard, unbuffered).
	logged, loggedKey := newProductionHandler(b, stubTransport{}, func(c *Config) {
		enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		c.Logger, c.AccessLog = zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zapcore.InfoLevel)), true
	})
	for _, tt := range []struct {
		name, key string
		h         http.Handler
	}{{"bare", key, bare}, {"keyproxy", key, h}, {"keyproxy+access-log", loggedKey, logged}} {
		b.Run(tt.name, func(b *testing.B) {
			r := benchRequest(tt.key)
			w := &nopWriter{}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				if w.h == nil {
					w.h = http.Header{}
				}
				tt.h.ServeHTTP(w, r)
			}
			if w.status != http.StatusOK {
				b.Fatalf("status %d: the benchmark measured a refusal", w.status)
			}
		})
	}
}
