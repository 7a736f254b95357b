package admin_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

func TestPatchKey_NullClearsAbsentLeavesAlone(t *testing.T) {
	e := newEnv(t)
	k := e.create("old", "u1", "t1", "owner")
	exp := e.clock.Now().Add(24 * time.Hour).Truncate(time.Second)
	get := func() map[string]any {
		var m map[string]any
		decode(t, e.do("GET", "/admin/v1/keys/"+k.ID, ""), &m)
		return m
	}
	patch := func(body string) map[string]any {
		t.Helper()
		w := e.do("PATCH", "/admin/v1/keys/"+k.ID, body)
		if w.Code != 200 {
			t.Fatalf("PATCH %s: %d %s", body, w.Code, w.Body)
		}
		var m map[string]any
		decode(t, w, &m)
		return m
	}
	e.evictor.reset()
	if m := patch(`{"expires_at":"` + exp.Format(time.RFC3339) + `"}`); m["expires_at"] != exp.Format(time.RFC3339) || m["name"] != "old" {
		t.Fatalf("after setting expiry: %v", m)
	}
	if m := patch(`{"name":"new"}`); m["expires_at"] != exp.Format(time.RFC3339) || m["name"] != "new" {
		t.Fatalf("absent expires_at changed the expiry: %v", m)
	}
	if m := patch(`{"expires_at":null}`); m["expires_at"] != nil || m["name"] != "new" {
		t.Fatalf("null did not clear the expiry: %v", m)
	}
	if m := get(); m["expires_at"] != nil || m["name"] != "new" {
		t.Fatalf("stored: %v", m)
	}
	h := keystore.HashKey(k.Key)
	if got := e.evictor.evicted(); len(got) != 3 || got[0] != h || got[1] != h || got[2] != h {
		t.Fatalf("evicted %d hashes, want the key's hash after each PATCH", len(got))
	}
	if ev := e.events.last(t); ev.Type != audit.TypeKeyUpdated || ev.KeyID != k.ID || ev.Status != 200 {
		t.Fatalf("event %+v", ev)
	}
}

func TestPatchKey_RefusedRequests(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	soon := e.create("b", "u1", "t1", "owner")
	inAnHour := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
	if w := e.do("PATCH", "/admin/v1/keys/"+soon.ID, `{"expires_at":"`+inAnHour+`"}`); w.Code != 200 {
		t.Fatalf("PATCH: %d", w.Code)
	}
	tests := []struct {
		name, id, body string
		status         int
		code           string
	}{
		{"empty object", k.ID, `{}`, 400, "invalid_request"},
		{"name null", k.ID, `{"name":null}`, 400, "invalid_request"},
		{"name empty", k.ID, `{"name":""}`, 400, "invalid_request"},
		{"expiry in the past", k.ID, `{"expires_at":"2000-01-01T00:00:00Z"}`, 400, "invalid_request"},
		{"expiry a number", k.ID, `{"expires_at":0}`, 400, "invalid_request"},
		{"unknown field", k.ID, `{"revoked_at":null}`, 400, "invalid_request"},
		{"unknown key", "key_AAAAAAAAAAAAAAAAAAAA", `{"name":"x"}`, 404, "not_found"},
		{"malformed id", "x", `{"name":"x"}`, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, e.do("PATCH", "/admin/v1/keys/"+tt.id, tt.body), tt.status, tt.code)
		})
	}
	t.Run("an expired key gets no new expiry", func(t *testing.T) {
		e.clock.Add(2 * time.Hour)
		later := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
		wantProblem(t, e.do("PATCH", "/admin/v1/keys/"+soon.ID, `{"expires_at":"`+later+`"}`), 409, "key_expired")
		wantProblem(t, e.do("PATCH", "/admin/v1/keys/"+soon.ID, `{"expires_at":null}`), 409, "key_expired")
		if w := e.do("PATCH", "/admin/v1/keys/"+soon.ID, `{"name":"renaming is fine"}`); w.Code != 200 {
			t.Fatalf("rename of expired key: %d %s", w.Code, w.Body)
		}
	})
}

func TestRevokeKey_TwiceIsNoContentAndEvictsTheKey(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	e.evictor.reset()
	for i := range 2 {
		w := e.do("DELETE", "/admin/v1/keys/"+k.ID, "", "X-Actor-Id", "bob")
		if w.Code != 204 || w.Body.Len() != 0 {
			t.Fatalf("DELETE #%d: %d %s", i+1, w.Code, w.Body)
		}
		if got := w.Header().Get("Keyproxy-Revocation-Acks"); got != "1/1" {
			t.Fatalf("Keyproxy-Revocation-Acks %q, want 1/1", got)
		}
		e.clock.Add(time.Second)
	}
	if got := e.evictor.evicted(); len(got) != 2 || got[0] != keystore.HashKey(k.Key) || got[1] != got[0] {
		t.Fatalf("evicted %v, want the key's hash on each DELETE", got)
	}
	stored, err := e.store.GetKey(context.Background(), k.ID)
	if err != nil || stored.RevokedAt == nil {
		t.Fatalf("stored %+v %v: not revoked", stored, err)
	}
	// Both DELETEs are recorded; only the first revoked the key.
	all := e.events.all()
	for i, want := range []string{audit.OutcomeSuccess, audit.OutcomeAlreadyRevoked} {
		ev := all[len(all)-2+i]
		if ev.Type != audit.TypeKeyRevoked || ev.KeyID != k.ID || ev.Actor != "bob" || ev.Status != 204 || ev.Method != "DELETE" || ev.Outcome != want {
			t.Fatalf("event of DELETE #%d: %+v, want outcome %s", i+1, ev, want)
		}
	}
	wantProblem(t, e.do("DELETE", "/admin/v1/keys/key_AAAAAAAAAAAAAAAAAAAA", ""), 404, "not_found")
	wantProblem(t, e.do("DELETE", "/admin/v1/keys/not-an-id", ""), 404, "not_found")
}

// A client that hangs up after sending DELETE must not leave a revoked
// key in the caches.
func TestRevokeKey_EvictsEvenWhenClientIsGone(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	e.evictor.reset()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, "DELETE", "/admin/v1/keys/"+k.ID, nil)
	r.Header.Set("Authorization", "Bearer "+testToken)
	e.h.ServeHTTP(httptest.NewRecorder(), r)
	if got := e.evictor.evicted(); len(got) != 1 || got[0] != keystore.HashKey(k.Key) {
		t.Fatalf("evicted %v", got)
	}
	if stored, _ := e.store.GetKey(context.Background(), k.ID); stored.RevokedAt == nil {
		t.Fatal("not revoked")
	}
}

// The guarantee behind DELETE: once it returns, this replica's cache no
// longer admits the key, though it had just cached it as valid.
func TestRevokeKey_CachedIdentityIsInvalidOnReturn(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	ctx := context.Background()
	h := keystore.HashKey(k.Key)
	id, err := e.resolver.Resolve(ctx, h)
	if err != nil || id.Check(time.Now()) != keystore.StatusValid {
		t.Fatalf("before: %+v %v", id, err)
	}
	if w := e.do("DELETE", "/admin/v1/keys/"+k.ID, ""); w.Code != 204 {
		t.Fatalf("DELETE: %d", w.Code)
	}
	id, err = e.resolver.Resolve(ctx, h)
	if err != nil || id.Check(time.Now()) != keystore.StatusInvalid {
		t.Fatalf("after DELETE the resolver says %+v %v", id, err)
	}
}

// PATCH's eviction makes a new expiry, and PUT's a new role or team state,
// visible on the very next resolve.
func TestChanges_ReachTheCacheAtOnce(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	ctx := context.Background()
	h := keystore.HashKey(k.Key)
	resolve := func() keystore.Identity {
		t.Helper()
		id, err := e.resolver.Resolve(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	resolve() // cached
	exp := e.clock.Now().Add(time.Hour).Truncate(time.Second)
	e.do("PATCH", "/admin/v1/keys/"+k.ID, `{"expires_at":"`+exp.Format(time.RFC3339)+`"}`)
	if got := resolve().ExpiresAt; !got.Equal(exp) {
		t.Fatalf("cached expiry %v after PATCH, want %v", got, exp)
	}
	e.do("PUT", "/admin/v1/users/u1", `{"team_id":"t1","role":"admin","active":true}`)
	if got := resolve().Role; got != "admin" {
		t.Fatalf("cached role %q after PUT user", got)
	}
	e.do("PUT", "/admin/v1/teams/t1", `{"active":false}`)
	if got := resolve().Check(time.Now()); got != keystore.StatusTeamInactive {
		t.Fatalf("status %v after the team was deactivated", got)
	}
	e.do("PUT", "/admin/v1/teams/t1", `{"active":true}`)
	e.create("b", "u1", "t2", "owner") // moves the owner to another team
	if got := resolve().Check(time.Now()); got != keystore.StatusInvalid {
		t.Fatalf("status %v after the owner moved team, want invalid", got)
	}
}
