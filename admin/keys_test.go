package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

func TestCreateKey_ReturnsTheKeyOnceAndStoresOnlyItsHash(t *testing.T) {
	e := newEnv(t)
	exp := e.clock.Now().Add(48 * time.Hour).Truncate(time.Second)
	w := e.do("POST", "/admin/v1/keys", `{"name":"  CI deploys  ","user_id":"u-1","team_id":"team.1","role":"owner","expires_at":"`+exp.Format(time.RFC3339)+`"}`,
		"X-Actor-Id", "alice@example.com")
	if w.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var raw map[string]any
	decode(t, w, &raw)
	wantFields := []string{"id", "key", "name", "start", "user_id", "team_id", "role", "created_at", "expires_at"}
	if len(raw) != len(wantFields) {
		t.Fatalf("fields %v, want exactly %v", raw, wantFields)
	}
	var k createdKey
	decode(t, w, &k)
	if !e.format.Valid(k.Key) {
		t.Fatalf("key %q does not pass the format's checksum", k.Key)
	}
	if !keystore.ValidID(k.ID) || k.Start != e.format.Start(k.Key) || k.Name != "CI deploys" ||
		k.UserID != "u-1" || k.TeamID != "team.1" || k.Role != "owner" || k.ExpiresAt == nil || !k.ExpiresAt.Equal(exp) {
		t.Fatalf("response %+v", k)
	}
	if got := w.Header().Get("Location"); got != "/admin/v1/keys/"+k.ID {
		t.Fatalf("Location %q", got)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", got)
	}
	stored, err := e.store.GetKey(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Hash != keystore.HashKey(k.Key) {
		t.Fatal("stored hash is not SHA-256 of the returned key")
	}

	for _, path := range []string{"/admin/v1/keys/" + k.ID, "/admin/v1/keys?team_id=team.1&include_revoked=true"} {
		w := e.do("GET", path, "")
		if w.Code != 200 {
			t.Fatalf("GET %s: %d", path, w.Code)
		}
		if strings.Contains(w.Body.String(), k.Key) || strings.Contains(w.Body.String(), `"key"`) {
			t.Fatalf("GET %s shows the key: %s", path, w.Body)
		}
	}
	ev := e.events.last(t)
	want := audit.Event{Type: audit.TypeKeyCreated, KeyID: k.ID, UserID: "u-1", TeamID: "team.1", Role: "owner",
		Actor: "alice@example.com", Method: "POST", Path: "/admin/v1/keys", Status: 201, Outcome: audit.OutcomeSuccess,
		RequestID: w.Header().Get("X-Request-Id"), ClientIP: "192.0.2.1"}
	ev.Time, ev.DurationMS, ev.UserAgent = time.Time{}, 0, ""
	if ev != want {
		t.Fatalf("event\n%+v\nwant\n%+v", ev, want)
	}
}

func TestCreateKey_RefusedRequests(t *testing.T) {
	e := newEnv(t)
	future := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
	valid := func(over string) string {
		base := map[string]any{"name": "n", "user_id": "u1", "team_id": "t1", "role": "owner"}
		if over != "" {
			var o map[string]any
			if err := json.Unmarshal([]byte(over), &o); err != nil {
				t.Fatal(err)
			}
			for k, v := range o {
				if v == "<delete>" {
					delete(base, k)
				} else {
					base[k] = v
				}
			}
		}
		b, _ := json.Marshal(base)
		return string(b)
	}
	tests := []struct {
		name, body string
		status     int
		code       string
		detail     string // a substring of the detail, naming the field
	}{
		{"name missing", valid(`{"name":"<delete>"}`), 400, "invalid_request", `"name" is required`},
		{"name empty", valid(`{"name":""}`), 400, "invalid_request", `"name"`},
		{"name only spaces", valid(`{"name":"   "}`), 400, "invalid_request", `"name"`},
		{"name 101 characters", valid(`{"name":"` + strings.Repeat("é", 101) + `"}`), 400, "invalid_request", `"name"`},
		{"name with control character", valid(`{"name":"a\u0007b"}`), 400, "invalid_request", `"name"`},
		{"name with bidi override", valid(`{"name":"a\u202eb"}`), 400, "invalid_request", `"name"`},
		{"name a number", valid(`{"name":5}`), 400, "invalid_request", `"name" must be a string`},
		{"user_id missing", valid(`{"user_id":"<delete>"}`), 400, "invalid_request", `"user_id"`},
		{"user_id with slash", valid(`{"user_id":"a/b"}`), 400, "invalid_request", `"user_id"`},
		{"user_id 129 characters", valid(`{"user_id":"` + strings.Repeat("u", 129) + `"}`), 400, "invalid_request", `"user_id"`},
		{"team_id null", valid(`{"team_id":null}`), 400, "invalid_request", `"team_id" is required`},
		{"team_id a bool", valid(`{"team_id":true}`), 400, "invalid_request", `"team_id" must be a string`},
		{"role upper case", valid(`{"role":"Owner"}`), 400, "invalid_request", `"role"`},
		{"role 65 characters", valid(`{"role":"` + strings.Repeat("r", 65) + `"}`), 400, "invalid_request", `"role"`},
		{"expires_at in the past", valid(`{"expires_at":"2001-01-01T00:00:00Z"}`), 400, "invalid_request", `"expires_at" must be in the future`},
		{"expires_at not RFC 3339", valid(`{"expires_at":"tomorrow"}`), 400, "invalid_request", `"expires_at"`},
		{"expires_at a number", valid(`{"expires_at":1700000000}`), 400, "invalid_request", `"expires_at" must be a string`},
		{"expires_at past the stores' range", valid(`{"expires_at":"9999-12-31T23:59:59Z"}`), 400, "invalid_request", `"expires_at"`},
		{"unknown field", valid(`{"scopes":["all"]}`), 400, "invalid_request", `"scopes"`},
		{"field in another case", `{"Name":"n","user_id":"u1","team_id":"t1","role":"owner"}`, 400, "invalid_request", `"Name"`},
		{"duplicate field", `{"name":"n","name":"m","user_id":"u1","team_id":"t1","role":"owner"}`, 400, "invalid_request", `"name" appears more than once`},
		{"trailing garbage", valid("") + ` x`, 400, "invalid_request", "after the JSON object"},
		{"second object", valid("") + valid(""), 400, "invalid_request", "after the JSON object"},
		{"array", `[` + valid("") + `]`, 400, "invalid_request", "JSON object"},
		{"null", `null`, 400, "invalid_request", "JSON object"},
		{"truncated", `{"name":"n"`, 400, "invalid_request", "ends inside"},
		{"syntax error", `{"name":"n",}`, 400, "invalid_request", "not valid JSON"},
		{"role may not create keys", valid(`{"role":"member"}`), 403, "forbidden_role", ""},
		{"expired just now", valid(`{"expires_at":"` + e.clock.Now().Format(time.RFC3339Nano) + `"}`), 400, "invalid_request", "future"},
		{"future expiry accepted", valid(`{"expires_at":"` + future + `"}`), 201, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.do("POST", "/admin/v1/keys", tt.body)
			if tt.status == 201 {
				if w.Code != 201 {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				return
			}
			p := wantProblem(t, w, tt.status, tt.code)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Fatalf("detail %q does not contain %q", p.Detail, tt.detail)
			}
		})
	}
}

func TestCreateKey_BodyLimitsAndMediaType(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.MaxBodyBytes = 1024 })
	body := `{"name":"n","user_id":"u1","team_id":"t1","role":"owner"}`
	// DESIGN: oversized bodies are 400 invalid_request, whether the
	// length is announced or the body is chunked, and even when what is
	// over the limit is whitespace after a valid object.
	huge := `{"name":"` + strings.Repeat("a", 2048) + `","user_id":"u1","team_id":"t1","role":"owner"}`
	padded := body + strings.Repeat(" ", 2048)
	for _, tt := range []struct {
		name, body string
		chunked    bool
	}{
		{"oversized body with Content-Length", huge, false},
		{"oversized chunked body", huge, true},
		{"valid JSON then whitespace with Content-Length", padded, false},
		{"valid JSON then whitespace, chunked", padded, true},
	} {
		t.Run(tt.name+" is 400", func(t *testing.T) {
			r := httptest.NewRequest("POST", "/admin/v1/keys", strings.NewReader(tt.body))
			if tt.chunked {
				r.ContentLength = -1 // unknown: read until the limit stops it
			}
			r.Header.Set("Authorization", "Bearer "+testToken)
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, r)
			p := wantProblem(t, w, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(p.Detail, "over the limit of 1024 bytes") {
				t.Errorf("detail %q does not name the limit", p.Detail)
			}
			if strings.Contains(p.Detail, "aaaa") {
				t.Fatal("detail echoes the body")
			}
		})
	}
	t.Run("huge unknown field name is not echoed", func(t *testing.T) {
		p := wantProblem(t, e.do("POST", "/admin/v1/keys", `{"`+strings.Repeat("z", 900)+`":1}`), 400, "invalid_request")
		if len(p.Detail) > 200 {
			t.Fatalf("detail is %d bytes: %q", len(p.Detail), p.Detail)
		}
	})
	t.Run("text/plain is 415", func(t *testing.T) {
		wantProblem(t, e.do("POST", "/admin/v1/keys", body, "Content-Type", "text/plain"), 415, "unsupported_media_type")
	})
	t.Run("form is 415", func(t *testing.T) {
		wantProblem(t, e.do("POST", "/admin/v1/keys", body, "Content-Type", "application/x-www-form-urlencoded"), 415, "unsupported_media_type")
	})
	for _, ct := range []string{"application/json; charset=utf-8", "application/merge-patch+json", ""} {
		t.Run("accepted content type "+ct, func(t *testing.T) {
			if w := e.do("POST", "/admin/v1/keys", body, "Content-Type", ct); w.Code != 201 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
		})
	}
	t.Run("empty body", func(t *testing.T) {
		wantProblem(t, e.do("POST", "/admin/v1/keys", "", "Content-Type", "application/json"), 400, "invalid_request")
	})
}

func TestCreateKey_InactiveTeamIsRefused(t *testing.T) {
	e := newEnv(t)
	if w := e.do("PUT", "/admin/v1/teams/t1", `{"active":false}`); w.Code != 200 {
		t.Fatalf("PUT team: %d %s", w.Code, w.Body)
	}
	wantProblem(t, e.do("POST", "/admin/v1/keys", `{"name":"n","user_id":"u1","team_id":"t1","role":"owner"}`), 403, "subscription_inactive")
}

// The product's team limit under contention, through the HTTP API, on
// both stores.
func TestCreateKey_ConcurrentCreatesRespectTeamLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(testing.TB) storeUnderTest
	}{
		{"sqlite", func(t testing.TB) storeUnderTest { return openStore(t) }},
		{"postgres", func(t testing.TB) storeUnderTest { return openPostgres(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvOn(t, tc.open(t))
			srv := httptest.NewServer(e.h)
			defer srv.Close()
			const n = 50
			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				counts = map[string]int{}
			)
			for i := range n {
				wg.Go(func() {
					body := fmt.Sprintf(`{"name":"k%d","user_id":"u%d","team_id":"busy-team","role":"admin"}`, i, i%5)
					req, _ := http.NewRequest("POST", srv.URL+"/admin/v1/keys", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+testToken)
					req.Header.Set("Content-Type", "application/json")
					resp, err := srv.Client().Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					defer resp.Body.Close()
					var p struct{ Code string }
					_ = json.NewDecoder(resp.Body).Decode(&p)
					mu.Lock()
					counts[fmt.Sprintf("%d %s", resp.StatusCode, p.Code)]++
					mu.Unlock()
				})
			}
			wg.Wait()
			if counts["201 "] != 10 || counts["409 key_limit_reached"] != 40 || len(counts) != 2 {
				t.Fatalf("outcomes %v, want 10 × 201 and 40 × 409 key_limit_reached", counts)
			}
			keys, err := e.store.ListKeys(context.Background(), keystore.KeyFilter{TeamID: "busy-team"})
			if err != nil || len(keys) != 10 {
				t.Fatalf("store holds %d keys (%v), want 10", len(keys), err)
			}
		})
	}
}

func TestCreateKey_RoleChangeEvictsOwnersOtherKeys(t *testing.T) {
	e := newEnv(t)
	first := e.create("a", "u1", "t1", "admin")
	e.evictor.reset()
	e.create("b", "u1", "t1", "owner")
	if got := e.evictor.evicted(); len(got) != 1 || got[0] != keystore.HashKey(first.Key) {
		t.Fatalf("evicted %v, want the first key's hash", got)
	}
}

// A create that changes its owner's team or role records user.updated
// before key.created: the owner's old team's keys stop working, and the
// trail says why. A create that changes nothing about the owner records
// only key.created.
func TestCreateKey_OwnerChangeIsAudited(t *testing.T) {
	for _, tt := range []struct {
		name, team, role string
		want             []string
	}{
		{"same team and role", "t1", "admin", []string{audit.TypeKeyCreated}},
		{"another role", "t1", "owner", []string{audit.TypeUserUpdated, audit.TypeKeyCreated}},
		// The move revokes the key made in t1.
		{"another team", "t2", "admin", []string{audit.TypeUserUpdated, audit.TypeKeyRevoked, audit.TypeKeyCreated}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.create("a", "u1", "t1", "admin")
			before := len(e.events.all())
			k := e.create("b", "u1", tt.team, tt.role)
			var types []string
			for _, ev := range e.events.all()[before:] {
				types = append(types, ev.Type)
				if ev.Type == audit.TypeUserUpdated && (ev.UserID != "u1" || ev.TeamID != tt.team || ev.Role != tt.role || ev.KeyID != "") {
					t.Errorf("user.updated = %+v, want u1 in %s as %s and no key id", ev, tt.team, tt.role)
				}
			}
			if !slices.Equal(types, tt.want) {
				t.Fatalf("create %s recorded %v, want %v", k.ID, types, tt.want)
			}
		})
	}
}

// Every change that evicts says how many replicas confirmed, as DELETE
// does: deactivating a user or a team is as much a revocation. A change
// with nothing to evict has no header.
func TestEvictingChangesReportConfirmations(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	for _, tt := range []struct {
		method, path, body, want string
	}{
		{"PUT", "/admin/v1/users/u1", `{"team_id":"t1","role":"owner","active":false}`, "1/1"},
		{"PUT", "/admin/v1/teams/t1", `{"active":false}`, "1/1"},
		{"PATCH", "/admin/v1/keys/" + k.ID, `{"name":"b"}`, "1/1"},
		{"DELETE", "/admin/v1/keys/" + k.ID, "", "1/1"},
		{"PUT", "/admin/v1/users/u_nokeys", `{"team_id":"t1","role":"owner","active":false}`, ""},
		{"PUT", "/admin/v1/teams/t_nokeys", `{"active":false}`, ""},
	} {
		w := e.do(tt.method, tt.path, tt.body)
		if w.Code >= 300 {
			t.Fatalf("%s %s: %d %s", tt.method, tt.path, w.Code, w.Body)
		}
		if got := w.Header().Get("Keyproxy-Revocation-Acks"); got != tt.want {
			t.Errorf("%s %s: Keyproxy-Revocation-Acks %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

func TestListKeys_Filters(t *testing.T) {
	e := newEnv(t)
	a := e.create("a", "u1", "t1", "owner")
	e.clock.Add(time.Second) // created_at orders the list
	b := e.create("b", "u2", "t1", "admin")
	e.create("c", "u3", "t2", "owner")
	if w := e.do("DELETE", "/admin/v1/keys/"+a.ID, ""); w.Code != 204 {
		t.Fatalf("DELETE: %d", w.Code)
	}
	ids := func(w *httptest.ResponseRecorder) []string {
		t.Helper()
		if w.Code != 200 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var out struct {
			Keys []map[string]any `json:"keys"`
		}
		decode(t, w, &out)
		var got []string
		for _, k := range out.Keys {
			if _, ok := k["key"]; ok {
				t.Fatal("list shows a key")
			}
			got = append(got, k["id"].(string))
		}
		return got
	}
	tests := []struct {
		name, query string
		want        []string
	}{
		{"team, active only", "team_id=t1", []string{b.ID}},
		{"include revoked, newest first", "team_id=t1&include_revoked=true", []string{b.ID, a.ID}},
		{"one user", "team_id=t1&user_id=u1&include_revoked=true", []string{a.ID}},
		{"empty team", "team_id=nobody", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ids(e.do("GET", "/admin/v1/keys?"+tt.query, ""))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("ids %v, want %v", got, tt.want)
			}
		})
	}
	if body := e.do("GET", "/admin/v1/keys?team_id=nobody", "").Body.String(); strings.TrimSpace(body) != `{"keys":[]}` {
		t.Fatalf("empty list body %s", body)
	}
	for _, q := range []string{"", "team_id=", "team_id=a/b", "team_id=t1&team_id=t2", "team_id=t1&include_revoked=yes",
		"team_id=t1&user_id=", "team_id=t1&limit=5", "team_id=t1&%zz"} {
		t.Run("refused "+q, func(t *testing.T) {
			wantProblem(t, e.do("GET", "/admin/v1/keys?"+q, ""), 400, "invalid_request")
		})
	}
}

func TestGetKey_ShapeAndNotFound(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	w := e.do("GET", "/admin/v1/keys/"+k.ID, "")
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	var raw map[string]any
	decode(t, w, &raw)
	for _, f := range []string{"id", "name", "start", "user_id", "team_id", "role", "created_at", "last_used_at", "expires_at", "revoked_at"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("field %q missing from %s", f, w.Body)
		}
	}
	if len(raw) != 10 || raw["expires_at"] != nil || raw["revoked_at"] != nil || raw["last_used_at"] != nil {
		t.Fatalf("body %s", w.Body)
	}
	if ts, _ := raw["created_at"].(string); !strings.HasSuffix(ts, "Z") {
		t.Fatalf("created_at %q is not UTC", ts)
	}
	for _, id := range []string{"key_AAAAAAAAAAAAAAAAAAAA", "nope", "key_" + strings.Repeat("A", 21), "key_AAAAAAAAAAAAAAAAAAA%21"} {
		wantProblem(t, e.do("GET", "/admin/v1/keys/"+id, ""), 404, "not_found")
	}
}

// A body announced larger than the limit is refused at once, before a byte
// of it is read: the client may never send it.
func TestCreateKey_AnnouncedOversizedBodyRefusedUnread(t *testing.T) {
	e := newEnv(t)
	r := httptest.NewRequest("POST", "/admin/v1/keys", neverReader{})
	r.ContentLength = 1 << 30
	r.Header.Set("Authorization", "Bearer "+testToken)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if p := wantProblem(t, w, http.StatusBadRequest, "invalid_request"); !strings.Contains(p.Detail, "over the limit of 65536 bytes") {
		t.Errorf("detail %q: the body was read instead of refused by its length", p.Detail)
	}
	// Without the token it is still a 401 first: nothing about the
	// admin API is told to an unauthenticated caller.
	r.Header.Del("Authorization")
	w = httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	wantProblem(t, w, http.StatusUnauthorized, "unauthorized")
}

// neverReader stands for a body that never arrives: reading it fails, so a
// handler that reads it answers "could not be read", not the limit.
type neverReader struct{}

func (neverReader) Read([]byte) (int, error) { return 0, errors.New("the body was read") }
