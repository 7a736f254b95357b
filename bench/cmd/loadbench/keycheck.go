package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/ratelimit"
)

// keycheckCmd serves the key check an operator would put behind nginx's
// auth_request: the Bearer key parsed and its checksum verified, resolved
// through keyproxy's own cached Resolver over a SQLite store, checked, and
// charged to the owner's rate limit; 200 with the identity and rate-limit
// headers for nginx to copy, 401 or 429 otherwise. It records no audit
// event and keeps no metrics: the pair it stands in does less than
// keyproxy, and nginx's access log is its audit trail.
//
// It first creates -keys keys in a fresh store at -db and writes them, one
// per line, to -keys-out, so loadbench can drive the pair with them.
func keycheckCmd(args []string) error {
	fs := flag.NewFlagSet("keycheck", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	db := fs.String("db", "", "SQLite store to create")
	n := fs.Int("keys", 1000, "keys to create")
	out := fs.String("keys-out", "", "file the created keys are written to")
	perUser := fs.Int("per-user-limit", 600000, "rate limit per user per minute")
	_ = fs.Parse(args)
	if *db == "" || *out == "" {
		return errors.New("keycheck: -db and -keys-out are required")
	}
	ctx := context.Background()
	store, err := keystore.OpenSQLite(ctx, *db)
	if err != nil {
		return err
	}
	defer store.Close()
	format, err := keystore.NewFormat("wev_")
	if err != nil {
		return err
	}
	if err := createStoreKeys(ctx, store, format, *n, *out); err != nil {
		return err
	}
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		return err
	}
	defer resolver.Close()
	lim := ratelimit.NewLocal(ratelimit.Policies{Default: ratelimit.Limit{
		Requests: *perUser, Per: time.Minute, Burst: max(*perUser/60, 100)}}, ratelimit.LocalOptions{})
	defer lim.Close()

	return serveUntilSignal(*listen, newKeyCheck(format, resolver, lim))
}

// createStoreKeys makes n keys as the admin API would (one user each, ten
// users per team) and writes them to path.
func createStoreKeys(ctx context.Context, store keystore.Store, format keystore.Format, n int, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		key, err := format.Generate()
		if err != nil {
			f.Close()
			return err
		}
		id, err := keystore.NewID()
		if err != nil {
			f.Close()
			return err
		}
		if _, err := store.CreateKey(ctx, keystore.NewKey{ID: id, Hash: keystore.HashKey(key), Start: format.Start(key),
			Name: fmt.Sprintf("bench %d", i), UserID: fmt.Sprintf("usr_bench_%d", i), TeamID: fmt.Sprintf("team_bench_%d", i/10),
			Role: "admin", MaxActivePerTeam: 10}); err != nil {
			f.Close()
			return fmt.Errorf("creating key %d: %w", i, err)
		}
		fmt.Fprintln(w, key)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// newKeyCheck answers nginx's auth subrequest for the request's key.
func newKeyCheck(format keystore.Format, resolver *keystore.Resolver, lim *ratelimit.Local) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		parsed, err := format.Parse(token)
		if !ok || err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id, err := resolver.Resolve(r.Context(), parsed.Hash)
		if err != nil || id.Check(time.Now()) != keystore.StatusValid {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		res := lim.Allow(r.Context(), id.UserID, id.Role)
		h := w.Header()
		ratelimit.WriteHeaders(h, res)
		if !res.Allowed {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		h["X-Wevion-User-Id"] = []string{id.UserID}
		h["X-Wevion-Team-Id"] = []string{id.TeamID}
		h["X-Wevion-Role"] = []string{id.Role}
		h["X-Wevion-Key-Id"] = []string{id.KeyID}
		w.WriteHeader(http.StatusOK)
	})
}
