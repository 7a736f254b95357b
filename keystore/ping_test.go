package keystore_test

import (
	"context"
	"testing"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// Ping, which /readyz and keyproxy_store_up use, fails when the lookup
// every request depends on cannot run, not only when no connection opens:
// a replica that cannot verify keys must leave the load balancer.
func TestSQLite_PingFailsWhenKeysCannotBeLookedUp(t *testing.T) {
	s := openTemp(t)
	checkPingFollowsTheLookup(t, s, func(q string) error { _, err := s.DB().Exec(q); return err },
		`DROP INDEX keys_identity`)
}

func TestPostgres_PingFailsWhenKeysCannotBeLookedUp(t *testing.T) {
	s := openPostgres(t, pgSchema(t, testserver.NewPostgresDB(t)))
	checkPingFollowsTheLookup(t, s, func(q string) error { _, err := s.Pool().Exec(context.Background(), q); return err },
		`ALTER TABLE keys RENAME TO keys_moved_away`)
}

func checkPingFollowsTheLookup(t *testing.T, s keystore.Store, exec func(string) error, breakIt string) {
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping of a healthy store: %v", err)
	}
	if err := exec(breakIt); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, keystore.HashKey("wev_anything")); err == nil {
		t.Fatal("the test did not break the lookup")
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping is fine while no key can be looked up")
	}
}
