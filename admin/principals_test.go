package admin_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

func TestPutUser_KeysFollowAtOnce(t *testing.T) {
	e := newEnv(t)
	k1 := e.create("a", "u1", "t1", "owner")
	k2 := e.create("b", "u1", "t1", "owner")
	e.evictor.reset()

	w := e.do("PUT", "/admin/v1/users/u1", `{"team_id":"t1","role":"member","active":true}`, "X-Actor-Id", "carol")
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var u map[string]any
	decode(t, w, &u)
	if u["id"] != "u1" || u["team_id"] != "t1" || u["role"] != "member" || u["active"] != true || u["updated_at"] == nil || len(u) != 5 {
		t.Fatalf("user %v", u)
	}
	got := e.evictor.evicted()
	slices.SortFunc(got, func(a, b keystore.Hash) int { return strings.Compare(a.String(), b.String()) })
	want := []keystore.Hash{keystore.HashKey(k1.Key), keystore.HashKey(k2.Key)}
	slices.SortFunc(want, func(a, b keystore.Hash) int { return strings.Compare(a.String(), b.String()) })
	if !slices.Equal(got, want) {
		t.Fatalf("evicted %v, want both keys' hashes", got)
	}
	// The key shows its owner's current role, not the one it was made with.
	var k map[string]any
	decode(t, e.do("GET", "/admin/v1/keys/"+k1.ID, ""), &k)
	if k["role"] != "member" {
		t.Fatalf("key role %v after demotion", k["role"])
	}
	id, err := e.store.Resolve(context.Background(), keystore.HashKey(k1.Key))
	if err != nil || id.Role != "member" {
		t.Fatalf("resolved %+v %v", id, err)
	}
	ev := e.events.last(t)
	if ev.Type != audit.TypeUserUpdated || ev.UserID != "u1" || ev.TeamID != "t1" || ev.Role != "member" || ev.Actor != "carol" || ev.KeyID != "" {
		t.Fatalf("event %+v", ev)
	}
}

func TestPutUser_RefusedRequests(t *testing.T) {
	e := newEnv(t)
	tests := []struct{ name, path, body string }{
		{"active missing", "/admin/v1/users/u1", `{"team_id":"t1","role":"member"}`},
		{"active null", "/admin/v1/users/u1", `{"team_id":"t1","role":"member","active":null}`},
		{"active a string", "/admin/v1/users/u1", `{"team_id":"t1","role":"member","active":"yes"}`},
		{"role missing", "/admin/v1/users/u1", `{"team_id":"t1","active":true}`},
		{"team_id bad", "/admin/v1/users/u1", `{"team_id":"t 1","role":"member","active":true}`},
		{"unknown field", "/admin/v1/users/u1", `{"team_id":"t1","role":"member","active":true,"email":"x"}`},
		{"path id bad", "/admin/v1/users/u%201", `{"team_id":"t1","role":"member","active":true}`},
		{"path id too long", "/admin/v1/users/" + strings.Repeat("u", 129), `{"team_id":"t1","role":"member","active":true}`},
		{"not an object", "/admin/v1/users/u1", `"u1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, e.do("PUT", tt.path, tt.body), 400, "invalid_request")
		})
	}
}

func TestPutTeam_DeactivationReachesKeysAndCreates(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	e.evictor.reset()
	w := e.do("PUT", "/admin/v1/teams/t1", `{"active":false}`)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var team map[string]any
	decode(t, w, &team)
	if team["id"] != "t1" || team["active"] != false || team["updated_at"] == nil || len(team) != 3 {
		t.Fatalf("team %v", team)
	}
	if got := e.evictor.evicted(); len(got) != 1 || got[0] != keystore.HashKey(k.Key) {
		t.Fatalf("evicted %v", got)
	}
	if ev := e.events.last(t); ev.Type != audit.TypeTeamUpdated || ev.TeamID != "t1" || ev.UserID != "" {
		t.Fatalf("event %+v", ev)
	}
	wantProblem(t, e.do("POST", "/admin/v1/keys", `{"name":"n","user_id":"u1","team_id":"t1","role":"owner"}`), 403, "subscription_inactive")
	if w := e.do("PUT", "/admin/v1/teams/t1", `{"active":true}`); w.Code != 200 {
		t.Fatalf("reactivate: %d", w.Code)
	}
	e.create("b", "u1", "t1", "owner")

	for _, c := range []struct{ path, body string }{
		{"/admin/v1/teams/t1", `{}`},
		{"/admin/v1/teams/t1", `{"active":1}`},
		{"/admin/v1/teams/t1", `{"active":true,"plan":"pro"}`},
		{"/admin/v1/teams/t%2F1", `{"active":true}`},
	} {
		wantProblem(t, e.do("PUT", c.path, c.body), 400, "invalid_request")
	}
}
