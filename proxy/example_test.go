package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
)

func Example() {
	// The backend: it learns who is calling from the identity headers.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s (%s) of %s", r.Header.Get("X-Wevion-User-Id"), r.Header.Get("X-Wevion-Role"), r.Header.Get("X-Wevion-Team-Id"))
	}))
	defer backend.Close()
	upstream, _ := url.Parse(backend.URL)

	format, _ := keystore.NewFormat("wev_")
	key, _ := format.Generate()
	// In keyproxy the resolver is keystore's cached resolver over the store.
	resolver := staticResolver{keystore.HashKey(key): {
		KeyID: "key_example", UserID: "usr_42", TeamID: "team_7", Role: "admin",
		UserActive: true, TeamActive: true, SameTeam: true,
	}}

	h, err := proxy.New(proxy.Config{Upstream: upstream, Format: format, Resolver: resolver})
	if err != nil {
		panic(err)
	}
	defer h.CloseIdleConnections()
	front := httptest.NewServer(h)
	defer front.Close()

	for _, auth := range []string{"Bearer " + key, "Bearer wev_notakey"} {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", front.URL+"/v1/me", nil)
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
