package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/ratelimit"
)

// The key check behind nginx must do the work keyproxy's hot path does,
// or the stretch comparison would flatter the pair.
func TestKeyCheck_AdmitsNamesAndLimits(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := keystore.OpenSQLite(ctx, filepath.Join(dir, "kc.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	format, _ := keystore.NewFormat("wev_")
	out := filepath.Join(dir, "keys")
	if err := createStoreKeys(ctx, store, format, 3, out); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(out)
	keys := strings.Fields(string(raw))
	if len(keys) != 3 {
		t.Fatalf("%d keys written, want 3", len(keys))
	}
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer resolver.Close()
	lim := ratelimit.NewLocal(ratelimit.Policies{Default: ratelimit.Limit{Requests: 2, Per: time.Hour, Burst: 2}}, ratelimit.LocalOptions{})
	defer lim.Close()
	h := newKeyCheck(format, resolver, lim)

	ask := func(auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/_keycheck", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := ask("Bearer " + keys[1])
	if w.Code != http.StatusOK || w.Header().Get("X-Wevion-User-Id") != "usr_bench_1" ||
		w.Header().Get("X-Wevion-Team-Id") != "team_bench_0" || w.Header().Get("Ratelimit-Remaining") != "1" {
		t.Fatalf("valid key: %d %v", w.Code, w.Header())
	}
	if w := ask("Bearer " + keys[1]); w.Code != http.StatusOK {
		t.Fatalf("second call within the burst: %d", w.Code)
	}
	if w := ask("Bearer " + keys[1]); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("past the limit: %d %v", w.Code, w.Header())
	}
	bad := keys[0][:len(keys[0])-1] + map[bool]string{true: "A", false: "B"}[!strings.HasSuffix(keys[0], "A")]
	for _, auth := range []string{"", "Bearer ", "Basic " + keys[0], "Bearer " + bad, "Bearer wev_" + strings.Repeat("x", 40)} {
		if w := ask(auth); w.Code != http.StatusUnauthorized || w.Header().Get("X-Wevion-User-Id") != "" {
			t.Errorf("Authorization %q: %d %v", auth, w.Code, w.Header())
		}
	}
}

func TestNginxConf_EveryPlaceholderFilled(t *testing.T) {
	conf := renderNginxConf("/d", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	if strings.Contains(conf, "{{") {
		t.Fatalf("placeholder left:\n%s", conf)
	}
	for _, want := range []string{"auth_request /_keycheck;", `proxy_set_header Authorization "";`, "proxy_set_header X-Wevion-User-Id $uid;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q", want)
		}
	}
}
