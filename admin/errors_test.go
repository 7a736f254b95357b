package admin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// failingStore is the real store with one method made to fail, as a
// store outage or a bug would.
type failingStore struct {
	admin.Store
	err error
}

func (s failingStore) CreateKey(context.Context, keystore.NewKey) (keystore.Key, error) {
	return keystore.Key{}, s.err
}

func TestStoreErrors_MapToProblems(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"unavailable", fmt.Errorf("sqlite: database is locked: %w", keystore.ErrUnavailable), 503, "store_unavailable"},
		{"deadline", context.DeadlineExceeded, 503, "store_unavailable"},
		{"conflict", fmt.Errorf("dup: %w", keystore.ErrConflict), 409, "conflict"},
		{"unexpected", errors.New("constraint failed: secret-internal-detail"), 500, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var store admin.Store
			e := newEnv(t, func(c *admin.Config) {
				store = failingStore{Store: c.Store, err: tt.err}
				c.Store = store
			})
			w := e.do("POST", "/admin/v1/keys", `{"name":"n","user_id":"u1","team_id":"t1","role":"owner"}`)
			wantProblem(t, w, tt.status, tt.code)
			if strings.Contains(w.Body.String(), "secret-internal-detail") || strings.Contains(w.Body.String(), "sqlite") {
				t.Fatalf("error text reached the client: %s", w.Body)
			}
			if tt.status == 503 && w.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if tt.status == 500 {
				logged := 0
				for _, en := range e.logs.FilterMessage("admin request").All() {
					if en.Level == zapcore.ErrorLevel && en.ContextMap()["error"] == tt.err.Error() {
						logged++
					}
				}
				if logged != 1 {
					t.Fatalf("the 500's cause was logged %d times, want once", logged)
				}
			}
			// One admin.failed event, with what the create was about, and
			// no internal detail.
			all := e.events.all()
			if len(all) != 1 {
				t.Fatalf("%d events, want one admin.failed: %+v", len(all), all)
			}
			ev := all[0]
			if ev.Type != audit.TypeAdminFailed || ev.Outcome != tt.code || ev.Status != tt.status ||
				ev.UserID != "u1" || ev.TeamID != "t1" || ev.Role != "owner" || ev.KeyID != "" ||
				ev.Method != "POST" || ev.Path != "/admin/v1/keys" || strings.Contains(fmt.Sprint(ev), "secret-internal-detail") {
				t.Fatalf("event %+v, want admin.failed %d %s for u1 in t1 as owner", ev, tt.status, tt.code)
			}
		})
	}
}

func TestStoreClosed_IsUnavailable(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	e.store.Close()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/admin/v1/keys", `{"name":"n","user_id":"u1","team_id":"t1","role":"owner"}`},
		{"GET", "/admin/v1/keys/" + k.ID, ""},
		{"GET", "/admin/v1/keys?team_id=t1", ""},
		{"DELETE", "/admin/v1/keys/" + k.ID, ""},
		{"PUT", "/admin/v1/teams/t1", `{"active":true}`},
	} {
		wantProblem(t, e.do(c.method, c.path, c.body), 503, "store_unavailable")
	}
}

func TestRouting_NotFoundAndMethodNotAllowed(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nope", 404, ""},
		{"GET", "/admin/v1/nope", 404, ""},
		{"GET", "/admin/v1/keys/", 404, ""},
		{"GET", "/admin/v1/keys/a/b", 404, ""},
		{"PUT", "/admin/v1/keys", 405, "GET, HEAD, POST"},
		{"POST", "/admin/v1/keys/key_AAAAAAAAAAAAAAAAAAAA", 405, "DELETE, GET, HEAD, PATCH"},
		{"GET", "/admin/v1/users/u1", 405, "PUT"},
		{"DELETE", "/admin/v1/teams/t1", 405, "PUT"},
		{"POST", "/admin/v1/audit", 405, "GET, HEAD"},
		{"POST", "/healthz", 405, "GET, HEAD"},
		{"DELETE", "/metrics", 405, "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := e.do(tt.method, tt.path, "")
			code := "not_found"
			if tt.status == 405 {
				code = "method_not_allowed"
			}
			wantProblem(t, w, tt.status, code)
			if got := w.Header().Get("Allow"); got != tt.allow {
				t.Fatalf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestResponses_HeadHasNoBody(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	resp, err := http.Head(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(b, nil) {
		t.Fatalf("HEAD /healthz: %d %q", resp.StatusCode, b)
	}
}

func TestClientGone_IsLoggedAs499NotAnError(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, "GET", "/admin/v1/keys?team_id=t1", nil)
	r.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != 499 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if n := e.logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Fatalf("%d error lines for a client that hung up", n)
	}
}
