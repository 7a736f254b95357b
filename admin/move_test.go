package admin_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// A key never follows its owner: moving a user to another team revokes the
// keys they made in the old one, names them in the answer and in one
// key.revoked event each, in the old team's trail, and frees their places.
// Moving the user back does not bring them back.
func TestPutUser_MoveRevokesTheOldTeamsKeys(t *testing.T) {
	e := newEnv(t)
	k1 := e.create("a", "u1", "t1", "owner")
	e.clock.Add(time.Second) // newest first, not by id
	k2 := e.create("b", "u1", "t1", "owner")
	other := e.create("c", "u2", "t1", "admin")
	e.evictor.reset()
	before := len(e.events.all())

	w := e.do("PUT", "/admin/v1/users/u1", `{"team_id":"t2","role":"admin","active":true}`, "X-Actor-Id", "carol")
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var u struct {
		TeamID        string   `json:"team_id"`
		RevokedKeyIDs []string `json:"revoked_key_ids"`
	}
	decode(t, w, &u)
	if u.TeamID != "t2" || !slices.Equal(u.RevokedKeyIDs, []string{k2.ID, k1.ID}) {
		t.Fatalf("answer %+v, want team t2 and the two old keys, newest first", u)
	}
	if w.Header().Get("Keyproxy-Revocation-Acks") == "" {
		t.Fatal("no Keyproxy-Revocation-Acks on a change that revoked keys")
	}
	if got := e.evictor.evicted(); len(got) != 2 {
		t.Fatalf("evicted %d hashes, want the 2 old keys'", len(got))
	}
	checkMoveEvents(t, e.events.all()[before:], "carol", k2.ID, k1.ID)
	for _, k := range []createdKey{k1, k2} {
		if id, err := e.store.Resolve(context.Background(), keystore.HashKey(k.Key)); err != nil || !id.Revoked {
			t.Fatalf("old key %s resolves to %+v (%v), want revoked", k.ID, id, err)
		}
	}
	if ids := listedIDs(t, e, "t1"); !slices.Equal(ids, []string{other.ID}) {
		t.Fatalf("t1 lists %v, want only the other user's key", ids)
	}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP keyproxy_keys_revoked_total API keys revoked through the admin API: by DELETE, a leak report or their owner's move to another team (repeat revocations not counted).
# TYPE keyproxy_keys_revoked_total counter
keyproxy_keys_revoked_total 2
`), "keyproxy_keys_revoked_total"); err != nil {
		t.Fatal(err)
	}

	// Back in t1: the old keys stay revoked, and the answer names none.
	w = e.do("PUT", "/admin/v1/users/u1", `{"team_id":"t1","role":"owner","active":true}`)
	var back map[string]any
	decode(t, w, &back)
	if w.Code != 200 || back["revoked_key_ids"] != nil || len(back) != 5 {
		t.Fatalf("moving back: status %d, %v", w.Code, back)
	}
	if id, err := e.store.Resolve(context.Background(), keystore.HashKey(k1.Key)); err != nil || id.Check(e.clock.Now()) != keystore.StatusInvalid {
		t.Fatalf("old key after the owner came back: %+v (%v), want refused", id, err)
	}
}

// A create that names another team moves its owner as a PUT does: the
// old team's keys are revoked before the new key is made.
func TestCreateKey_MoveRevokesTheOldTeamsKeys(t *testing.T) {
	e := newEnv(t)
	old := e.create("a", "u1", "t1", "owner")
	before := len(e.events.all())
	moved := e.create("b", "u1", "t2", "owner")

	events := e.events.all()[before:]
	if len(events) != 3 || events[2].Type != audit.TypeKeyCreated || events[2].KeyID != moved.ID {
		t.Fatalf("events %+v, want user.updated, key.revoked, key.created", events)
	}
	checkMoveEvents(t, events[:2], "", old.ID)
	if id, err := e.store.Resolve(context.Background(), keystore.HashKey(old.Key)); err != nil || !id.Revoked {
		t.Fatalf("old key resolves to %+v (%v), want revoked", id, err)
	}
	if ids := listedIDs(t, e, "t1"); len(ids) != 0 {
		t.Fatalf("t1 lists %v after its only key's owner moved", ids)
	}
}

// checkMoveEvents requires a user.updated event followed by one key.revoked
// event per id, in order, each in the old team t1 with outcome owner_moved.
func checkMoveEvents(t *testing.T, events []audit.Event, actor string, ids ...string) {
	t.Helper()
	if len(events) != 1+len(ids) || events[0].Type != audit.TypeUserUpdated {
		t.Fatalf("events %+v, want user.updated and %d key.revoked", events, len(ids))
	}
	for i, id := range ids {
		ev := events[1+i]
		if ev.Type != audit.TypeKeyRevoked || ev.KeyID != id || ev.UserID != "u1" || ev.TeamID != "t1" ||
			ev.Outcome != admin.OutcomeOwnerMoved || ev.Actor != actor {
			t.Fatalf("event %d = %+v, want key.revoked of %s in t1, owner_moved, actor %q", i, ev, id, actor)
		}
	}
}

func listedIDs(t *testing.T, e *env, team string) []string {
	t.Helper()
	var out struct {
		Keys []struct {
			ID string `json:"id"`
		} `json:"keys"`
	}
	decode(t, e.do("GET", "/admin/v1/keys?team_id="+team, ""), &out)
	var ids []string
	for _, k := range out.Keys {
		ids = append(ids, k.ID)
	}
	return ids
}
