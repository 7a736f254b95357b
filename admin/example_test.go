package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/keystore"
)

// The admin handler over the embedded store, with the in-process resolver
// as the cache to evict: create a key, then revoke it.
func ExampleNew() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyproxy-admin-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := keystore.OpenSQLite(ctx, filepath.Join(dir, "keyproxy.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer resolver.Close()
	format, err := keystore.NewFormat("wev_")
	if err != nil {
		log.Fatal(err)
	}
	const token = "a-long-random-admin-token"
	h, err := admin.New(admin.Config{Store: store, Evictor: resolver, Format: format, Tokens: []string{token}})
	if err != nil {
		log.Fatal(err)
	}

	req := httptest.NewRequest("POST", "/admin/v1/keys",
		strings.NewReader(`{"name":"Nightly report","user_id":"u_42","team_id":"t_7","role":"owner"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Actor-Id", "alice@example.com")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var created struct{ ID, Key, Start string }
	if err := json.Unmarshal(w.Body.Bytes(), &created); err != nil {
		log.Fatal(err)
	}
	fmt.Println("create:", w.Code, "key valid:", format.Valid(created.Key), "start:", created.Start == format.Start(created.Key))

	req = httptest.NewRequest("DELETE", "/admin/v1/keys/"+created.ID, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	fmt.Println("revoke:", w.Code, "acks:", w.Header().Get("Keyproxy-Revocation-Acks"))
	// Output:
	// create: 201 key valid: true start: true
	// revoke: 204 acks: 1/1
}
