package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
)

// staticResolver is a read-only map: no lock to contend on in parallel runs.
type staticResolver map[keystore.Hash]keystore.Identity

func (s staticResolver) Resolve(_ context.Context, h keystore.Hash) (keystore.Identity, error) {
	if id, ok := s[h]; ok {
		return id, nil
	}
	return keystore.Identity{}, keystore.ErrNotFound
}

// BenchmarkHandler measures the whole handler over real loopback HTTP
// against an httptest upstream, in parallel. Client, proxy and upstream
// share the process, so allocs/op counts all three.
func BenchmarkHandler(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()
	format, _ := keystore.NewFormat("wev_")
	key, _ := format.Generate()
	res := staticResolver{keystore.HashKey(key): {KeyID: "key_bench", UserID: "usr_1", TeamID: "team_1", Role: "admin",
		UserActive: true, TeamActive: true, SameTeam: true}}
	h, err := proxy.New(proxy.Config{Upstream: mustURL(b, up.URL), Format: format, Resolver: res})
	if err != nil {
		b.Fatal(err)
	}
	defer h.CloseIdleConnections()
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: proxy.NewTransport(10 * time.Second)}
	defer client.Transport.(*http.Transport).CloseIdleConnections()

	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", srv.URL+"/v1/projects/42", nil)
			req.Header.Set("Authorization", "Bearer "+key)
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
