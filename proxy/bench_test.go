package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

type discardRecorder struct{}

func (discardRecorder) Record(audit.Event) {}

// benchUpstream is a small JSON backend.
func benchUpstream(b *testing.B) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	b.Cleanup(up.Close)
	return up
}

// runClients sends GETs with key (if any) to url from parallel clients.
func runClients(b *testing.B, url, key string) {
	client := &http.Client{Transport: proxy.NewTransport(10 * time.Second)}
	b.Cleanup(client.Transport.(*http.Transport).CloseIdleConnections)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", url+"/v1/projects/42", nil)
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkHandler is the whole handler over real loopback HTTP in front
// of an httptest upstream: keystore's Resolver over SQLite (warm cache),
// the local limiter, metrics and an audit recorder. Client, proxy and
// upstream share the process, so ns/op and allocs/op count all three;
// compare with BenchmarkBareReverseProxy.
func BenchmarkHandler(b *testing.B) {
	up := benchUpstream(b)
	ctx := context.Background()
	store, err := keystore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "keys.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(resolver.Close)
	format, _ := keystore.NewFormat("wev_")
	key, _ := format.Generate()
	id, _ := keystore.NewID()
	if _, err := store.CreateKey(ctx, keystore.NewKey{ID: id, Hash: keystore.HashKey(key), Start: format.Start(key), Name: "bench",
		UserID: "usr_1", TeamID: "team_1", Role: "admin", MaxActivePerTeam: 10}); err != nil {
		b.Fatal(err)
	}
	lim := ratelimit.NewLocal(ratelimit.Policies{Default: ratelimit.Limit{Requests: 100_000, Per: time.Second, Burst: 100_000}}, ratelimit.LocalOptions{})
	b.Cleanup(lim.Close)
	h, err := proxy.New(proxy.Config{
		Upstream: mustURL(b, up.URL), Format: format, Resolver: resolver,
		Limiter: lim, RateLimitHeaders: (*ratelimit.HeaderValues).Write, Recorder: discardRecorder{},
		Logger: zap.NewNop(), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.CloseIdleConnections)
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	runClients(b, srv.URL, key)
}

// BenchmarkBareReverseProxy is the baseline: httputil.ReverseProxy with
// default settings but the same transport, in front of the same upstream.
func BenchmarkBareReverseProxy(b *testing.B) {
	up := benchUpstream(b)
	target := mustURL(b, up.URL)
	transport := proxy.NewTransport(10 * time.Second)
	b.Cleanup(transport.CloseIdleConnections)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() }, Transport: transport}
	srv := httptest.NewServer(rp)
	b.Cleanup(srv.Close)
	runClients(b, srv.URL, "")
}
