package admin_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// newAuditEnv records through the real audit pipeline into the audit
// table of the key store's SQLite file, and queries it back.
func newAuditEnv(t *testing.T) *env {
	return newEnv(t, func(c *admin.Config) {
		db := c.Store.(*keystore.SQLite).DB()
		sink, err := audit.NewSQLStore(db, audit.SQLite, audit.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pipe, err := audit.NewPipeline(audit.Options{FlushInterval: 5 * time.Millisecond}, sink)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := pipe.Close(ctx); err != nil {
				t.Error(err)
			}
			sink.Close()
		})
		c.Recorder, c.Audit = pipe, sink
	})
}

type auditPage struct {
	Events     []audit.Event `json:"events"`
	NextCursor *string       `json:"next_cursor"`
}

// query polls until the page holds want events: recording is asynchronous.
func (e *env) query(t *testing.T, q string, want int) auditPage {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w := e.do("GET", "/admin/v1/audit?"+q, "")
		if w.Code != 200 {
			t.Fatalf("GET audit?%s: %d %s", q, w.Code, w.Body)
		}
		var p auditPage
		decode(t, w, &p)
		if len(p.Events) >= want || time.Now().After(deadline) {
			return p
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAuditQuery_ReturnsAdminActionsNewestFirstInPages(t *testing.T) {
	e := newAuditEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", "/admin/v1/keys/" + k.ID, `{"name":"b"}`},
		{"DELETE", "/admin/v1/keys/" + k.ID, ""},
		{"PUT", "/admin/v1/users/u1", `{"team_id":"t1","role":"admin","active":true}`},
	} {
		e.clock.Add(time.Millisecond) // distinct, ordered event times
		if w := e.do(c.method, c.path, c.body, "X-Actor-Id", "dana"); w.Code >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, w.Code, w.Body)
		}
	}

	all := e.query(t, "team_id=t1", 4)
	var types []string
	for _, ev := range all.Events {
		types = append(types, ev.Type)
		if !strings.HasPrefix(ev.ID, audit.IDPrefix) || ev.Outcome != audit.OutcomeSuccess || ev.RequestID == "" {
			t.Errorf("event %+v", ev)
		}
	}
	if got := strings.Join(types, ","); got != "user.updated,key.revoked,key.updated,key.created" {
		t.Fatalf("types %s, want newest first", got)
	}
	if all.NextCursor != nil {
		t.Fatalf("single page has next_cursor %q", *all.NextCursor)
	}
	if body := e.do("GET", "/admin/v1/audit?team_id=t1", "").Body.String(); strings.Contains(body, k.Key) {
		t.Fatal("audit events hold the key")
	}

	first := e.query(t, "team_id=t1&limit=3", 3)
	if len(first.Events) != 3 || first.NextCursor == nil {
		t.Fatalf("first page: %d events, cursor %v", len(first.Events), first.NextCursor)
	}
	second := e.query(t, "team_id=t1&limit=3&cursor="+url.QueryEscape(*first.NextCursor), 1)
	if len(second.Events) != 1 || second.Events[0].Type != audit.TypeKeyCreated || second.NextCursor != nil {
		t.Fatalf("second page %+v", second)
	}

	byKey := e.query(t, "key_id="+k.ID, 3)
	if len(byKey.Events) != 3 {
		t.Fatalf("key_id filter: %d events, want 3", len(byKey.Events))
	}
	future := url.QueryEscape(e.clock.Now().Add(time.Hour).Format(time.RFC3339))
	if p := e.query(t, "team_id=t1&since="+future, 0); len(p.Events) != 0 {
		t.Fatalf("since in the future: %d events", len(p.Events))
	}
	if w := e.do("GET", "/admin/v1/audit?team_id=nobody", ""); strings.TrimSpace(w.Body.String()) != `{"events":[],"next_cursor":null}` {
		t.Fatalf("empty page %s", w.Body)
	}
}

func TestAuditQuery_RefusedParameters(t *testing.T) {
	e := newAuditEnv(t)
	for _, q := range []string{
		"limit=0", "limit=1001", "limit=ten", "limit=1&limit=2",
		"since=yesterday", "until=2030-01-01", "since=2030-01-01T00:00:00Z&until=2029-01-01T00:00:00Z",
		"key_id=k1", "team_id=a%20b", "user_id=", "cursor=", "cursor=has%20space",
		"cursor=not-a-real-cursor", "sort=asc",
	} {
		t.Run(q, func(t *testing.T) {
			wantProblem(t, e.do("GET", "/admin/v1/audit?"+q, ""), 400, "invalid_request")
		})
	}
	if w := e.do("GET", "/admin/v1/audit?limit=1000&since=2000-01-01T00:00:00Z", ""); w.Code != 200 {
		t.Fatalf("valid query: %d %s", w.Code, w.Body)
	}
}

func TestAuditQuery_WithoutQuerierIsNotImplemented(t *testing.T) {
	e := newEnv(t)
	wantProblem(t, e.do("GET", "/admin/v1/audit", ""), 501, "audit_query_unavailable")
	wantProblem(t, e.do("GET", "/admin/v1/audit", "", "Authorization", ""), 401, "unauthorized")
}
