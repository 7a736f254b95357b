package admin_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// Every admin request that would have changed something and did not, and
// every admin request without a valid token, leaves one admin.failed
// event: what was tried, on what, by whom, and the problem's code. Reads
// that fail leave none.
func TestFailedActions_AreAudited(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.MaxActivePerTeam = 1 })
	k := e.create("a", "u1", "t1", "owner")
	inactive := e.create("b", "u2", "t2", "owner")
	if w := e.do("PUT", "/admin/v1/teams/t2", `{"active":false}`); w.Code != 200 {
		t.Fatalf("deactivating t2: %d %s", w.Code, w.Body)
	}
	if w := e.do("PUT", "/admin/v1/users/u5", `{"team_id":"t3","role":"owner","active":false}`); w.Code != 200 {
		t.Fatalf("deactivating u5: %d %s", w.Code, w.Body)
	}
	unknownKey, err := keystore.NewID()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name               string
		method, path, body string
		hdr                []string
		status             int
		want               audit.Event // type admin.failed unless no event is wanted
		noEvent            bool
	}{
		{name: "role that may not create keys", method: "POST", path: "/admin/v1/keys",
			body:   `{"name":"n","user_id":"u3","team_id":"t1","role":"member"}`,
			status: 403, want: audit.Event{Outcome: "forbidden_role", UserID: "u3", TeamID: "t1", Role: "member"}},
		{name: "team at its key limit", method: "POST", path: "/admin/v1/keys",
			body:   `{"name":"n","user_id":"u1","team_id":"t1","role":"owner"}`,
			status: 409, want: audit.Event{Outcome: "key_limit_reached", UserID: "u1", TeamID: "t1", Role: "owner"}},
		{name: "inactive team", method: "POST", path: "/admin/v1/keys",
			body:   `{"name":"n","user_id":"u2","team_id":"t2","role":"owner"}`,
			status: 403, want: audit.Event{Outcome: "subscription_inactive", UserID: "u2", TeamID: "t2", Role: "owner"}},
		{name: "deactivated user", method: "POST", path: "/admin/v1/keys",
			body:   `{"name":"n","user_id":"u5","team_id":"t3","role":"owner"}`,
			status: 409, want: audit.Event{Outcome: "user_inactive", UserID: "u5", TeamID: "t3", Role: "owner"}},
		{name: "malformed body", method: "POST", path: "/admin/v1/keys", body: `{"name":`,
			status: 400, want: audit.Event{Outcome: "invalid_request"}},
		{name: "revoke an unknown key", method: "DELETE", path: "/admin/v1/keys/" + unknownKey,
			status: 404, want: audit.Event{Outcome: "not_found", KeyID: unknownKey}},
		{name: "revoke something that is no key id", method: "DELETE", path: "/admin/v1/keys/nope",
			status: 404, want: audit.Event{Outcome: "not_found"}},
		{name: "patch an unknown key", method: "PATCH", path: "/admin/v1/keys/" + unknownKey, body: `{"name":"x"}`,
			status: 404, want: audit.Event{Outcome: "not_found", KeyID: unknownKey}},
		{name: "invalid user", method: "PUT", path: "/admin/v1/users/u1", body: `{"team_id":"t1","role":"","active":true}`,
			status: 400, want: audit.Event{Outcome: "invalid_request"}},
		{name: "method the route does not have", method: "PUT", path: "/admin/v1/keys",
			status: 405, want: audit.Event{Outcome: "method_not_allowed"}},
		{name: "wrong token, on a read", method: "GET", path: "/admin/v1/keys?team_id=t1",
			hdr:    []string{"Authorization", "Bearer not-the-token", "X-Actor-Id", "mallory"},
			status: 401, want: audit.Event{Outcome: "unauthorized"}},
		{name: "no token, on a revoke", method: "DELETE", path: "/admin/v1/keys/" + k.ID,
			hdr:    []string{"Authorization", ""},
			status: 401, want: audit.Event{Outcome: "unauthorized"}},
		{name: "read of an unknown key", method: "GET", path: "/admin/v1/keys/" + unknownKey,
			status: 404, noEvent: true},
		{name: "invalid list", method: "GET", path: "/admin/v1/keys?bogus=1",
			status: 400, noEvent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.events.all())
			hdr := append([]string{"X-Actor-Id", "erin"}, tt.hdr...)
			w := e.do(tt.method, tt.path, tt.body, hdr...)
			if w.Code != tt.status {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.path, w.Code, w.Body, tt.status)
			}
			got := e.events.all()[before:]
			if tt.noEvent {
				if len(got) != 0 {
					t.Fatalf("a failed read recorded %+v, want nothing", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("recorded %d events (%+v), want one admin.failed", len(got), got)
			}
			ev := got[0]
			actor := "erin"
			if tt.status == 401 {
				actor = "" // not taken from a caller who did not authenticate
			}
			if ev.Type != audit.TypeAdminFailed || ev.Outcome != tt.want.Outcome || ev.Status != tt.status ||
				ev.KeyID != tt.want.KeyID || ev.UserID != tt.want.UserID || ev.TeamID != tt.want.TeamID || ev.Role != tt.want.Role ||
				ev.Method != tt.method || ev.Path != strings.SplitN(tt.path, "?", 2)[0] || ev.Actor != actor ||
				ev.RequestID == "" || ev.RequestID != w.Header().Get("X-Request-Id") || ev.Time.IsZero() {
				t.Fatalf("event %+v\nwant admin.failed %d %+v by %q", ev, tt.status, tt.want, actor)
			}
			if strings.Contains(fmt.Sprint(ev), "not-the-token") {
				t.Fatalf("event holds the offered token: %+v", ev)
			}
		})
	}

	// A revoke of a key revoked before succeeds (204), with its own event.
	e.do("DELETE", "/admin/v1/keys/"+inactive.ID, "")
	before := len(e.events.all())
	if w := e.do("DELETE", "/admin/v1/keys/"+inactive.ID, ""); w.Code != 204 {
		t.Fatalf("second DELETE: %d", w.Code)
	}
	if got := e.events.all()[before:]; len(got) != 1 || got[0].Type != audit.TypeKeyRevoked {
		t.Fatalf("second DELETE recorded %+v, want one key.revoked", got)
	}
}

// A refused action is queryable by what it was about: the team whose
// limit stopped a create finds the attempt in its trail.
func TestFailedActions_QueryableByTeam(t *testing.T) {
	e := newAuditEnv(t)
	e.create("a", "u1", "t1", "owner")
	if w := e.do("POST", "/admin/v1/keys", `{"name":"n","user_id":"u9","team_id":"t1","role":"member"}`); w.Code != 403 {
		t.Fatalf("create as member: %d", w.Code)
	}
	page := e.query(t, "team_id=t1", 2)
	i := slices.IndexFunc(page.Events, func(ev audit.Event) bool { return ev.Type == audit.TypeAdminFailed })
	if len(page.Events) != 2 || i < 0 {
		t.Fatalf("events for t1: %+v, want the create and the refused one", page.Events)
	}
	if got := page.Events[i]; got.UserID != "u9" || got.Outcome != "forbidden_role" || got.Status != 403 || got.Role != "member" {
		t.Fatalf("refused create in t1's trail: %+v, want u9 as member, 403 forbidden_role", got)
	}
}
