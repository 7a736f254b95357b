package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wevion/keyproxy/internal/testserver"
)

// promtool returns the path of promtool (Debian's prometheus package),
// failing the test when it is missing: the deploy files and the scrape must
// be linted, never silently not.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found on PATH: scripts/test.sh unpacks it from Debian's prometheus package: %v", err)
	}
	return p
}

// runTool runs a linter and fails the test with its output unless it exits 0.
func runTool(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func scrape(t *testing.T, in *instance) []byte {
	t.Helper()
	resp, body := do(t, mustRequest(t, http.MethodGet, in.adminURL+"/metrics"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	return body
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// traffic is what exercise did, for the tests to look for in the scrape.
type traffic struct {
	keyID, key, userID, teamID string
}

// exercise drives every data-plane outcome the instance can produce
// without faults, plus key creation and revocation, with a policy of 3
// requests per hour (startInstance with limitedEnv).
func exercise(t *testing.T, in *instance) traffic {
	t.Helper()
	tr := traffic{userID: "usr_metrics", teamID: "team_metrics"}
	resp, body := in.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{
		"name": "metrics", "user_id": tr.userID, "team_id": tr.teamID, "role": "admin",
	})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	created := decode(t, body)
	tr.key, tr.keyID = created["key"].(string), created["id"].(string)

	want := func(status int, key string) {
		t.Helper()
		if resp, body := in.call(t, key, "/api/v1/x"); resp.StatusCode != status {
			t.Fatalf("call: %d, want %d: %s", resp.StatusCode, status, body)
		}
	}
	want(http.StatusUnauthorized, "")
	want(http.StatusUnauthorized, "wev_nope")
	for range 3 {
		want(http.StatusOK, tr.key)
	}
	want(http.StatusTooManyRequests, tr.key)
	for _, active := range []bool{false, true} {
		if resp, body := in.admin(t, http.MethodPut, "/admin/v1/teams/"+tr.teamID, map[string]any{"active": active}); resp.StatusCode != http.StatusOK {
			t.Fatalf("team update: %d %s", resp.StatusCode, body)
		}
		if !active {
			want(http.StatusForbidden, tr.key)
		}
	}
	if resp, body := in.admin(t, http.MethodDelete, "/admin/v1/keys/"+tr.keyID, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	want(http.StatusUnauthorized, tr.key)
	return tr
}

// limitedEnv makes the fourth request of a user within an hour a 429.
var limitedEnv = []string{
	"KEYPROXY_RATELIMIT_DEFAULT_REQUESTS=3", "KEYPROXY_RATELIMIT_DEFAULT_PER=1h", "KEYPROXY_RATELIMIT_DEFAULT_BURST=3",
}

func TestMetrics_GoldenAfterKnownTraffic(t *testing.T) {
	up := newUpstream(t)
	in := startInstance(t, append([]string{"KEYPROXY_UPSTREAM_URL=" + up.URL}, limitedEnv...)...)
	exercise(t, in)

	// Every outcome's series is exported from the start at 0; those the
	// traffic reached must hold exactly these counts, all others 0.
	wantRequests := map[string]float64{
		`{code="200",outcome="allowed"}`:               3,
		`{code="401",outcome="invalid_key"}`:           2,
		`{code="401",outcome="missing_key"}`:           1,
		`{code="403",outcome="subscription_inactive"}`: 1,
		`{code="429",outcome="rate_limited"}`:          1,
	}
	families := parseScrape(t, scrape(t, in))
	got := map[string]float64{}
	for _, m := range families["keyproxy_http_requests_total"].GetMetric() {
		var labels []string
		for _, lp := range m.GetLabel() {
			labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		if v := m.GetCounter().GetValue(); v != 0 {
			got["{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(wantRequests) {
		t.Errorf("keyproxy_http_requests_total non-zero series:\n got %v\nwant %v", got, wantRequests)
	}

	const golden = `
# HELP keyproxy_keys_created_total API keys created through the admin API.
# TYPE keyproxy_keys_created_total counter
keyproxy_keys_created_total 1
# HELP keyproxy_keys_revoked_total API keys revoked through the admin API: by DELETE, a leak report or their owner's move to another team (repeat revocations not counted).
# TYPE keyproxy_keys_revoked_total counter
keyproxy_keys_revoked_total 1
# HELP keyproxy_ratelimit_decisions_total Rate-limit decisions by the backend that made them and their result.
# TYPE keyproxy_ratelimit_decisions_total counter
keyproxy_ratelimit_decisions_total{backend="local",result="allowed"} 3
keyproxy_ratelimit_decisions_total{backend="local",result="limited"} 1
# HELP keyproxy_store_up 1 if the store of record answered its last check (at most 15 s old), else 0.
# TYPE keyproxy_store_up gauge
keyproxy_store_up 1
# HELP keyproxy_keys_active Unrevoked, unexpired API keys in the store (at most 15 s old); absent while the store cannot be counted.
# TYPE keyproxy_keys_active gauge
keyproxy_keys_active 0
`
	if err := testutil.ScrapeAndCompare(in.adminURL+"/metrics", strings.NewReader(golden),
		"keyproxy_keys_created_total", "keyproxy_keys_revoked_total",
		"keyproxy_ratelimit_decisions_total", "keyproxy_store_up", "keyproxy_keys_active"); err != nil {
		t.Error(err)
	}

	// 8 data-plane requests and 4 admin changes, one event each, in both
	// sinks; the pipeline writes asynchronously.
	const events = `
# HELP keyproxy_audit_events_total Audit events by sink and fate: written to the sink, spilled to the spill sink instead, or dropped because the spill sink failed too.
# TYPE keyproxy_audit_events_total counter
keyproxy_audit_events_total{result="dropped",sink="log"} 0
keyproxy_audit_events_total{result="dropped",sink="store"} 0
keyproxy_audit_events_total{result="spilled",sink="log"} 0
keyproxy_audit_events_total{result="spilled",sink="store"} 0
keyproxy_audit_events_total{result="written",sink="log"} 12
keyproxy_audit_events_total{result="written",sink="store"} 12
# HELP keyproxy_audit_queue_length Audit events recorded and not yet handed to the sinks' writers.
# TYPE keyproxy_audit_queue_length gauge
keyproxy_audit_queue_length 0
`
	eventually(t, 5*time.Second, func() error {
		return testutil.ScrapeAndCompare(in.adminURL+"/metrics", strings.NewReader(events),
			"keyproxy_audit_events_total", "keyproxy_audit_queue_length")
	})
}

// Prometheus must be able to scrape every mode cleanly: promtool's lint of
// a real scrape, single node and with Redis.
func TestMetrics_ScrapePassesPromtool(t *testing.T) {
	tool := promtool(t)
	modes := map[string]func(t *testing.T) []string{
		"single node": func(*testing.T) []string { return nil },
		"redis":       func(t *testing.T) []string { return []string{"KEYPROXY_REDIS_ADDR=" + testserver.StartRedis(t).Addr} },
	}
	for name, env := range modes {
		t.Run(name, func(t *testing.T) {
			up := newUpstream(t)
			in := startInstance(t, append(append([]string{"KEYPROXY_UPSTREAM_URL=" + up.URL}, limitedEnv...), env(t)...)...)
			exercise(t, in)
			body := scrape(t, in)
			if out := runTool(t, body, tool, "check", "metrics"); strings.TrimSpace(out) != "" {
				t.Errorf("promtool check metrics:\n%s", out)
			}
		})
	}
}

// Labels are bounded: no key, user or team identifier and no secret ever
// becomes a label value.
func TestMetrics_LabelsCarryNoIdentifiers(t *testing.T) {
	up := newUpstream(t)
	in := startInstance(t, append([]string{"KEYPROXY_UPSTREAM_URL=" + up.URL}, limitedEnv...)...)
	tr := exercise(t, in)
	families := parseScrape(t, scrape(t, in))
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				for _, id := range []string{tr.keyID, tr.key, tr.userID, tr.teamID, in.token, "wev_"} {
					if strings.Contains(v, id) {
						t.Errorf("%s{%s=%q} carries an identifier or secret", mf.GetName(), lp.GetName(), v)
					}
				}
			}
		}
	}
}

var healthBody = regexp.MustCompile(`"checks":\[(.*)\]`)

func TestHealth_ReadyzNamesADegradedRedis(t *testing.T) {
	redis := testserver.StartRedis(t)
	in := startInstance(t, "KEYPROXY_REDIS_ADDR="+redis.Addr)
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, body := do(t, mustRequest(t, http.MethodGet, in.adminURL+path)); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s with everything up: %d %s", path, resp.StatusCode, body)
		}
	}
	// A Redis outage degrades every replica alike; taking them all out of
	// the load balancer would turn it into a full outage. /readyz stays 200
	// and names Redis with the reason: a stopped Redis refuses connections,
	// which is "unavailable", not the "timeout" of one that hangs.
	redis.Kill()
	resp, body := do(t, mustRequest(t, http.MethodGet, in.adminURL+"/readyz"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz with Redis down: %d %s", resp.StatusCode, body)
	}
	m := healthBody.FindSubmatch(body)
	if m == nil || !strings.Contains(string(body), `"status":"degraded"`) ||
		!strings.Contains(string(m[1]), `{"name":"redis","status":"degraded","reason":"unavailable"}`) ||
		!strings.Contains(string(m[1]), `{"name":"store","status":"ok"}`) {
		t.Errorf("/readyz body does not name Redis as degraded: %s", body)
	}
	// The process is alive: liveness must not restart it for a Redis outage.
	if resp, body := do(t, mustRequest(t, http.MethodGet, in.adminURL+"/healthz")); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with Redis down: %d %s", resp.StatusCode, body)
	}
	redis.Start()
	eventually(t, 10*time.Second, func() error {
		if _, body := do(t, mustRequest(t, http.MethodGet, in.adminURL+"/readyz")); !strings.HasPrefix(string(body), `{"status":"ok"`) {
			return fmt.Errorf("/readyz after Redis came back: %s", body)
		}
		return nil
	})
}

func parseScrape(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("scrape does not parse: %v", err)
	}
	return families
}

// exposedSeriesNames lists every series name a scrape holds, histograms'
// _bucket, _sum and _count included.
func exposedSeriesNames(families map[string]*dto.MetricFamily) map[string]bool {
	names := map[string]bool{}
	for name, mf := range families {
		names[name] = true
		if mf.GetType().String() == "HISTOGRAM" || mf.GetType().String() == "SUMMARY" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
		}
	}
	return names
}
