package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wevion/keyproxy/internal/testserver"
)

const deployDir = "../../deploy"

func TestDeploy_AlertRulesPassPromtoolAndTheirUnitTests(t *testing.T) {
	tool := promtool(t)
	runTool(t, nil, tool, "check", "rules", filepath.Join(deployDir, "prometheus/alerts.yml"))
	runTool(t, nil, tool, "test", "rules", filepath.Join(deployDir, "prometheus/alerts_test.yml"))
}

func TestDeploy_ScrapeConfigPassesPromtool(t *testing.T) {
	runTool(t, nil, promtool(t), "check", "config", filepath.Join(deployDir, "prometheus/prometheus.yml"))
}

// unitDirectives reads a systemd unit into section → key → values (keys
// may repeat).
func unitDirectives(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: not a directive: %q", path, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeploy_SystemdUnitIsHardenedAndValid(t *testing.T) {
	unit := filepath.Join(deployDir, "systemd/keyproxy.service")
	d := unitDirectives(t, unit)
	svc := d["Service"]
	want := map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"StateDirectory": "keyproxy", "PrivateTmp": "yes", "PrivateDevices": "yes", "PrivateUsers": "yes",
		"ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
		"RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
		"MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
		"UMask": "0077", "KillSignal": "SIGTERM", "RestartPreventExitStatus": "2",
		"ExecReload": "/bin/kill -HUP $MAINPID",
	}
	for k, v := range want {
		if got := svc[k]; len(got) == 0 || got[len(got)-1] != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	if !contains(svc["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter %q lacks @system-service", svc["SystemCallFilter"])
	}
	// systemd must wait longer than keyproxy drains (shutdown_timeout).
	cfg, err := LoadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := time.ParseDuration(strings.Join(svc["TimeoutStopSec"], ""))
	if err != nil || stop <= cfg.ShutdownTimeout {
		t.Errorf("TimeoutStopSec=%q must exceed shutdown_timeout (%s)", svc["TimeoutStopSec"], cfg.ShutdownTimeout)
	}
	// Every command the unit runs is a keyproxy subcommand that exists.
	for _, k := range []string{"ExecStartPre", "ExecStart"} {
		for _, line := range svc[k] {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "/usr/local/bin/keyproxy" {
				t.Errorf("%s=%s: want /usr/local/bin/keyproxy SUBCOMMAND", k, line)
				continue
			}
			if code, _, errOut := cliRun(t, nil, f[1], "--help"); code != exitOK {
				t.Errorf("%s=%s: keyproxy %s --help: exit %d %s", k, line, f[1], code, errOut)
			}
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze not installed: the structural checks above are the test")
		return
	}
	// verify needs the binary the unit names; this test binary stands in.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "keyproxy.service")
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(string(text), "/usr/local/bin/keyproxy", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on unknown or malformed directives, only saying so.
	if out := runTool(t, nil, analyze, "verify", tmp); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
	// Exposure 2.0 of 10 or better ("OK" is below 4.9).
	runTool(t, nil, analyze, "security", "--offline=yes", "--threshold=20", tmp)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// exposedEverywhere scrapes a single-node and a Redis instance after some
// traffic: the metrics an operator can ever see, as series names
// (histograms' _bucket, _sum, _count included), and their label names.
func exposedEverywhere(t *testing.T) (single, withRedis map[string]bool, labels map[string]map[string]bool) {
	t.Helper()
	single, withRedis, labels, _, _ = exposedFamilies(t)
	return single, withRedis, labels
}

// exposedFamilies is exposedEverywhere plus the metric family names of
// each mode.
func exposedFamilies(t *testing.T) (single, withRedis map[string]bool, labels map[string]map[string]bool, singleFamilies, redisFamilies map[string]bool) {
	t.Helper()
	labels = map[string]map[string]bool{}
	singleFamilies, redisFamilies = map[string]bool{}, map[string]bool{}
	scrapeMode := func(familiesOut map[string]bool, env ...string) map[string]bool {
		up := newUpstream(t)
		in := startInstance(t, append(append([]string{"KEYPROXY_UPSTREAM_URL=" + up.URL}, limitedEnv...), env...)...)
		exercise(t, in)
		families := parseScrape(t, scrape(t, in))
		for name, mf := range families {
			familiesOut[name] = true
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					for _, n := range []string{name, name + "_bucket", name + "_sum", name + "_count"} {
						if labels[n] == nil {
							labels[n] = map[string]bool{}
						}
						labels[n][lp.GetName()] = true
					}
				}
			}
		}
		return exposedSeriesNames(families)
	}
	single = scrapeMode(singleFamilies)
	withRedis = scrapeMode(redisFamilies, "KEYPROXY_REDIS_ADDR="+testserver.StartRedis(t).Addr)
	return single, withRedis, labels, singleFamilies, redisFamilies
}

var readmeMetricRow = regexp.MustCompile("^\\| `(keyproxy_[a-z0-9_]+)` \\|.*\\| (all|Redis) \\|$")

// The README's metrics reference is the operator's contract: every metric
// keyproxy exposes is in it, with the mode that exposes it, and nothing
// else is.
func TestReadme_MetricsReferenceMatchesTheScrape(t *testing.T) {
	_, _, _, single, withRedis := exposedFamilies(t)
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, ops, ok := strings.Cut(string(b), "\n## Operations\n")
	if !ok {
		t.Fatal("README.md has no \"## Operations\" section")
	}
	documented := map[string]string{}
	for _, line := range strings.Split(ops, "\n") {
		if m := readmeMetricRow.FindStringSubmatch(line); m != nil {
			documented[m[1]] = m[2]
		} else if strings.HasPrefix(line, "| `keyproxy_") {
			t.Errorf("README metrics row not in the form | `name` | … | all or Redis |: %s", line)
		}
	}
	for name := range single {
		if strings.HasPrefix(name, "keyproxy_") && documented[name] != "all" {
			t.Errorf("%s is exposed on every node; README says %q", name, documented[name])
		}
	}
	for name := range withRedis {
		if strings.HasPrefix(name, "keyproxy_") && !single[name] && documented[name] != "Redis" {
			t.Errorf("%s is exposed with Redis only; README says %q", name, documented[name])
		}
	}
	for name, mode := range documented {
		if (mode == "all" && !single[name]) || (mode == "Redis" && !withRedis[name]) {
			t.Errorf("README documents %s (%s), which keyproxy does not expose", name, mode)
		}
	}
}

// grafanaExprs returns every PromQL expression of the dashboard, with
// Grafana's variables replaced by what Prometheus would receive.
func grafanaExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana/keyproxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/keyproxy.json is not JSON: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, strings.NewReplacer(
					"$__rate_interval", "5m", "$__range", "6h", "$job", ".*", "$instance", ".*",
				).Replace(e))
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(dash)
	if len(exprs) < 20 {
		t.Fatalf("the dashboard has %d queries; expected a full dashboard", len(exprs))
	}
	return exprs
}

func alertExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "prometheus/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	return exprs
}

var (
	metricRef   = regexp.MustCompile(`\b((?:keyproxy|go|process)_[a-zA-Z0-9_]+)\b(\{[^}]*\})?`)
	matcherName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupingRef = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// targetLabels are added by Prometheus at scrape time, not by keyproxy.
var targetLabels = map[string]bool{"job": true, "instance": true, "le": true}

func TestDeploy_DashboardAndAlertsQueryOnlyWhatKeyproxyExposes(t *testing.T) {
	single, withRedis, labels := exposedEverywhere(t)
	sources := map[string][]string{"grafana/keyproxy.json": grafanaExprs(t), "prometheus/alerts.yml": alertExprs(t)}
	for src, exprs := range sources {
		for _, expr := range exprs {
			refs := metricRef.FindAllStringSubmatch(expr, -1)
			if len(refs) == 0 && !strings.Contains(expr, "up{") {
				t.Errorf("%s: %q queries no keyproxy metric", src, expr)
			}
			used := map[string]bool{}
			for _, ref := range refs {
				name := ref[1]
				if !single[name] && !withRedis[name] {
					t.Errorf("%s: %s is not exposed by keyproxy (single node or Redis)", src, name)
					continue
				}
				for k := range labels[name] {
					used[k] = true
				}
				for _, m := range matcherName.FindAllStringSubmatch(ref[2], -1) {
					if !targetLabels[m[1]] && !labels[name][m[1]] {
						t.Errorf("%s: %s has no label %q (in %q)", src, name, m[1], expr)
					}
				}
			}
			for _, g := range groupingRef.FindAllStringSubmatch(expr, -1) {
				for _, l := range strings.Split(g[1], ",") {
					if l = strings.TrimSpace(l); l != "" && !targetLabels[l] && !used[l] {
						t.Errorf("%s: grouping by %q, a label none of its metrics has (in %q)", src, l, expr)
					}
				}
			}
		}
	}

	// The dashboard's queries are valid PromQL: promtool parses them as
	// recording rules.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range sources["grafana/keyproxy.json"] {
		q, _ := json.Marshal(e) // a JSON string is a YAML string
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, nil, promtool(t), "check", "rules", file)
}

func TestDeploy_DashboardIsWellFormed(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana/keyproxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct{ Name string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID != "keyproxy" || dash.Title == "" {
		t.Errorf("uid %q title %q", dash.UID, dash.Title)
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
	}
	for _, v := range []string{"datasource", "job", "instance"} {
		if !vars[v] {
			t.Errorf("templating lacks $%s", v)
		}
	}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, %d queries", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, q := range p.Targets {
			if !strings.Contains(q.Expr, `job=~"$job"`) || !strings.Contains(q.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: query %q ignores the $job and $instance selectors", p.Title, q.Expr)
			}
		}
	}
}
