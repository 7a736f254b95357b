package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/keystore"
)

func TestHealthz_OK(t *testing.T) {
	e := newEnv(t)
	w := e.do("GET", "/healthz", "", "Authorization", "")
	if w.Code != 200 || w.Body.String() != "{\"status\":\"ok\"}\n" || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q %q", w.Code, w.Body, w.Header().Get("Content-Type"))
	}
}

type readyBody struct {
	Status string `json:"status"`
	Checks []struct {
		Name, Status, Reason string
	} `json:"checks"`
}

func TestReadyz_NamesTheFailingCheck(t *testing.T) {
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name       string
		checks     []admin.ReadinessCheck
		closeStore bool
		wantStatus int
		want       string // name:status:reason of each check
	}{
		{"all ready", []admin.ReadinessCheck{{Name: "redis", Check: ok}}, false, 200, "store:ok:,redis:ok:"},
		{"extra check down", []admin.ReadinessCheck{{Name: "redis", Check: func(context.Context) error {
			return errors.New("dial tcp 10.0.0.7:6379: connection refused")
		}}}, false, 503, "store:ok:,redis:fail:error"},
		{"extra check refused", []admin.ReadinessCheck{{Name: "redis", Check: func(context.Context) error {
			return fmt.Errorf("ping: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
		}}}, false, 503, "store:ok:,redis:fail:unavailable"},
		{"extra check's dial times out", []admin.ReadinessCheck{{Name: "redis", Check: func(context.Context) error {
			return fmt.Errorf("ping: %w", &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded})
		}}}, false, 503, "store:ok:,redis:fail:timeout"},
		{"extra check times out", []admin.ReadinessCheck{{Name: "redis", Check: func(context.Context) error {
			return fmt.Errorf("ping: %w", context.DeadlineExceeded)
		}}}, false, 503, "store:ok:,redis:fail:timeout"},
		{"store closed", nil, true, 503, "store:fail:unavailable"},
		{"degrading check down keeps the replica ready", []admin.ReadinessCheck{{Name: "redis", Degrades: true, Check: func(context.Context) error {
			return fmt.Errorf("ping: %w", keystore.ErrUnavailable)
		}}}, false, 200, "store:ok:,redis:degraded:unavailable"},
		{"Redis that refuses writes degrades", []admin.ReadinessCheck{{Name: "redis", Degrades: true, Check: func(context.Context) error {
			return keystore.ErrRedisRefused
		}}}, false, 200, "store:ok:,redis:degraded:refused"},
		{"store down wins over a degraded check", []admin.ReadinessCheck{{Name: "redis", Degrades: true, Check: func(context.Context) error {
			return errors.New("refused")
		}}}, true, 503, "store:fail:unavailable,redis:degraded:error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *admin.Config) { c.Readiness = tt.checks })
			if tt.closeStore {
				e.store.Close()
			}
			w := e.do("GET", "/readyz", "", "Authorization", "")
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantStatus, w.Body)
			}
			var b readyBody
			decode(t, w, &b)
			var got string
			for i, c := range b.Checks {
				if i > 0 {
					got += ","
				}
				got += c.Name + ":" + c.Status + ":" + c.Reason
			}
			if got != tt.want {
				t.Fatalf("checks %s, want %s", got, tt.want)
			}
			wantField := map[bool]string{true: "ok", false: "unavailable"}[tt.wantStatus == 200]
			if tt.wantStatus == 200 && strings.Contains(got, "degraded") {
				wantField = "degraded"
			}
			if b.Status != wantField {
				t.Fatalf("status field %q, want %q", b.Status, wantField)
			}
			if tt.wantStatus == 503 && !strings.Contains(got, "degraded") && (len(e.logs.FilterMessage("admin: readiness check failed").All()) != 1) {
				t.Fatal("the failure's cause was not logged")
			}
		})
	}
}

func TestReadyz_DoesNotExposeErrorText(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) {
		c.Readiness = []admin.ReadinessCheck{{Name: "redis", Check: func(context.Context) error {
			return fmt.Errorf("auth failed for redis://:hunter2@10.0.0.7: %w", keystore.ErrUnavailable)
		}}}
	})
	w := e.do("GET", "/readyz", "", "Authorization", "")
	if w.Code != 503 || containsAny(w.Body.String(), "hunter2", "10.0.0.7") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

func TestMetricsEndpoint_AbsentHandlerIsNotFound(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.Metrics = nil })
	wantProblem(t, e.do("GET", "/metrics", "", "Authorization", ""), 404, "not_found")
}

func TestMetrics_CountRequestsAndKeys(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	e.create("b", "u1", "t1", "owner")
	e.do("DELETE", "/admin/v1/keys/"+k.ID, "")
	e.clock.Add(time.Second)
	e.do("DELETE", "/admin/v1/keys/"+k.ID, "") // already revoked: not counted again
	e.do("GET", "/admin/v1/keys/key_AAAAAAAAAAAAAAAAAAAA", "")
	e.do("GET", "/admin/v1/keys", "", "Authorization", "")
	e.do("GET", "/nope", "")

	want := `
# HELP keyproxy_admin_requests_total Admin listener requests by route pattern and HTTP status code.
# TYPE keyproxy_admin_requests_total counter
keyproxy_admin_requests_total{code="201",route="POST /admin/v1/keys"} 2
keyproxy_admin_requests_total{code="204",route="DELETE /admin/v1/keys/{id}"} 2
keyproxy_admin_requests_total{code="401",route="GET /admin/v1/keys"} 1
keyproxy_admin_requests_total{code="404",route="/"} 1
keyproxy_admin_requests_total{code="404",route="GET /admin/v1/keys/{id}"} 1
# HELP keyproxy_keys_created_total API keys created through the admin API.
# TYPE keyproxy_keys_created_total counter
keyproxy_keys_created_total 2
# HELP keyproxy_keys_revoked_total API keys revoked through the admin API: by DELETE, a leak report or their owner's move to another team (repeat revocations not counted).
# TYPE keyproxy_keys_revoked_total counter
keyproxy_keys_revoked_total 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want),
		"keyproxy_admin_requests_total", "keyproxy_keys_created_total", "keyproxy_keys_revoked_total"); err != nil {
		t.Fatal(err)
	}
}

func TestNew_MetricsRegisteredTwiceIsAnError(t *testing.T) {
	e := newEnv(t)
	format, _ := keystore.NewFormat("wev_")
	_, err := admin.New(admin.Config{Store: e.store, Evictor: e.evictor, Format: format, Registerer: e.reg})
	if err == nil {
		t.Fatal("second handler on the same registry: no error")
	}
}
