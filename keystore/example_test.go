package keystore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

// A key's life: generate it, store only its hash, resolve it through the
// cache on each request, revoke it.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "keystore-example")
	defer os.RemoveAll(dir)

	store, err := keystore.OpenSQLite(ctx, filepath.Join(dir, "keyproxy.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{TTL: 10 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resolver.Close()

	format, _ := keystore.NewFormat("wev_")
	key, _ := format.Generate() // shown to the user once, never stored
	id, _ := keystore.NewID()
	parsed, _ := format.Parse(key)
	if _, err := store.CreateKey(ctx, keystore.NewKey{
		ID: id, Hash: parsed.Hash, Start: parsed.Start, Name: "reporting",
		UserID: "user_1", TeamID: "team_1", Role: "admin", MaxActivePerTeam: 10,
	}); err != nil {
		fmt.Println(err)
		return
	}

	// On each request: parse (no I/O), then resolve through the cache.
	p, err := format.Parse(key)
	if err != nil {
		fmt.Println("401:", err)
		return
	}
	identity, err := resolver.Resolve(ctx, p.Hash)
	fmt.Println(identity.UserID, identity.Role, identity.Check(time.Now()) == keystore.StatusValid, err)

	// Revoke, then evict from the cache: the next request is refused.
	revoked, _ := store.RevokeKey(ctx, id, time.Now())
	resolver.Invalidate(revoked.Hash)
	identity, err = resolver.Resolve(ctx, p.Hash)
	fmt.Println(identity.Check(time.Now()) == keystore.StatusInvalid, err)

	_, err = format.Parse("wev_not_a_real_key")
	fmt.Println(err)
	// Output:
	// user_1 admin true <nil>
	// true <nil>
	// keystore: malformed key
}
