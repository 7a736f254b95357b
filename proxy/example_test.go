package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
)

func Example() {
	ctx := context.Background()

	// The backend learns who is calling from the identity headers.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s (%s) of %s", r.Header.Get("X-Wevion-User-Id"), r.Header.Get("X-Wevion-Role"), r.Header.Get("X-Wevion-Team-Id"))
	}))
	defer backend.Close()
	upstream, _ := url.Parse(backend.URL)

	// Keys live in a store; the resolver caches their identities.
	dir, _ := os.MkdirTemp("", "keyproxy-example")
	defer os.RemoveAll(dir)
	store, err := keystore.OpenSQLite(ctx, filepath.Join(dir, "keys.db"))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		panic(err)
	}
	defer resolver.Close()

	format, _ := keystore.NewFormat("wev_")
	key, _ := format.Generate()
	id, _ := keystore.NewID()
	if _, err := store.CreateKey(ctx, keystore.NewKey{ID: id, Hash: keystore.HashKey(key), Start: format.Start(key),
		Name: "reporting", UserID: "usr_42", TeamID: "team_7", Role: "admin", MaxActivePerTeam: 10}); err != nil {
		panic(err)
	}

	h, err := proxy.New(proxy.Config{Upstream: upstream, Format: format, Resolver: resolver})
	if err != nil {
		panic(err)
	}
	defer h.CloseIdleConnections()
	front := httptest.NewServer(h)
	defer front.Close()

	for _, auth := range []string{"Bearer " + key, "Bearer wev_notakey"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/v1/me", nil)
		req.Header.Set("Authorization", auth)
		res, err := front.Client().Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			fmt.Println(res.StatusCode, res.Header.Get("WWW-Authenticate"))
			continue
		}
		fmt.Println(res.StatusCode, string(body))
	}
	// Output:
	// 200 hello usr_42 (admin) of team_7
	// 401 Bearer realm="wevion", error="invalid_token"
}
