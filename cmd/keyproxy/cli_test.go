package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// cliRun runs the operator CLI in-process, as main would.
func cliRun(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, environ, &out, &errOut)
	return code, out.String(), errOut.String()
}

// cliOK runs the CLI against in and fails the test unless it exits 0.
func (in *instance) cli(t *testing.T, args ...string) string {
	t.Helper()
	env := []string{"KEYPROXY_ADMIN_TOKEN=" + in.token, "KEYPROXY_ADMIN_URL=" + in.adminURL}
	code, out, errOut := cliRun(t, env, args...)
	if code != exitOK {
		t.Fatalf("keyproxy %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func cliJSON[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	return v
}

// An operator runs the whole key lifecycle from the CLI: create, list as a
// table and as JSON, rename and schedule the end, revoke, and read the
// audit trail of it all.
func TestCLI_KeyLifecycleAgainstRunningInstance(t *testing.T) {
	up := newUpstream(t)
	in := startInstance(t, "KEYPROXY_UPSTREAM_URL="+up.URL)

	out := in.cli(t, "keys", "create", "--name", "reporting", "--user", "usr_cli", "--team", "team_cli", "--role", "admin", "--actor", "usr_ops")
	if !strings.Contains(out, "shown only once") || !strings.Contains(out, "usr_cli (team team_cli, role admin)") {
		t.Errorf("human create output:\n%s", out)
	}
	first := ""
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "wev_") && len(f) == 42 {
			first = f
		}
	}
	if first == "" {
		t.Fatalf("create did not print the full key once:\n%s", out)
	}

	created := cliJSON[createdKeyView](t, in.cli(t, "keys", "create", "--json", "--name", "ci", "--user", "usr_cli", "--team", "team_cli", "--role", "admin"))
	if !strings.HasPrefix(created.Key, "wev_") || !strings.HasPrefix(created.ID, "key_") || created.Name != "ci" {
		t.Fatalf("create --json: %+v", created)
	}
	if resp, body := in.call(t, created.Key, "/api/v1/x"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the created key is refused: %d %s", resp.StatusCode, body)
	}

	table := in.cli(t, "keys", "list", "--team", "team_cli")
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "LAST USED") {
		t.Fatalf("list table: want a header and 2 rows, got:\n%s", table)
	}
	if !strings.Contains(table, created.ID) || !strings.Contains(table, created.Start+"…") {
		t.Errorf("list table lacks the key %s (start %s):\n%s", created.ID, created.Start, table)
	}
	listed := cliJSON[struct{ Keys []map[string]any }](t, in.cli(t, "keys", "list", "--team", "team_cli", "--json"))
	if len(listed.Keys) != 2 {
		t.Fatalf("list --json: %d keys, want 2", len(listed.Keys))
	}
	// The admin API's fields, nulls included, and never the key.
	apiFields := []string{"created_at", "expires_at", "id", "last_used_at", "name", "revoked_at", "role", "start", "team_id", "user_id"}
	for _, k := range listed.Keys {
		if got := slices.Sorted(maps.Keys(k)); !slices.Equal(got, apiFields) {
			t.Errorf("list --json fields of %v: %v, want the API's %v", k["id"], got, apiFields)
		}
	}

	updated := cliJSON[keyView](t, in.cli(t, "keys", "update", created.ID, "--json", "--name", "ci-rotating", "--expires-at", "2030-01-01T00:00:00Z"))
	if updated.Name != "ci-rotating" || updated.ExpiresAt == nil || !strings.HasPrefix(*updated.ExpiresAt, "2030-01-01T00:00:00") {
		t.Errorf("update --json: %+v", updated)
	}
	if got := in.cli(t, "keys", "get", created.ID); !strings.Contains(got, "ci-rotating") || !strings.Contains(got, "2030-01-01") {
		t.Errorf("get after update:\n%s", got)
	}
	if cleared := cliJSON[keyView](t, in.cli(t, "keys", "update", created.ID, "--json", "--clear-expiry")); cleared.ExpiresAt != nil || cleared.Name != "ci-rotating" {
		t.Errorf("update --clear-expiry: %+v", cleared)
	}
	if got := in.cli(t, "keys", "update", created.ID, "--expires-at", "2030-01-01T00:00:00Z"); !strings.Contains(got, "2030-01-01") {
		t.Errorf("update, table:\n%s", got)
	}

	if out := in.cli(t, "keys", "revoke", created.ID, "--actor", "usr_ops"); out != "revoked "+created.ID+" (replicas confirmed: 1/1)\n" {
		t.Errorf("revoke output %q", out)
	}
	if resp, body := in.call(t, created.Key, "/api/v1/x"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("revoked key still admitted: %d %s", resp.StatusCode, body)
	}
	if got := in.cli(t, "keys", "list", "--team", "team_cli"); strings.Contains(got, created.ID) {
		t.Errorf("list shows the revoked key without --include-revoked:\n%s", got)
	}
	all := cliJSON[struct{ Keys []keyView }](t, in.cli(t, "keys", "list", "--team", "team_cli", "--include-revoked", "--json"))
	revoked := 0
	for _, k := range all.Keys {
		if k.RevokedAt != nil {
			revoked++
		}
	}
	if len(all.Keys) != 2 || revoked != 1 {
		t.Errorf("list --include-revoked: %d keys, %d revoked; want 2, 1", len(all.Keys), revoked)
	}

	if out := in.cli(t, "users", "set", "usr_cli", "--team", "team_cli", "--role", "member"); out != "user usr_cli: team team_cli, role member, active true\n" {
		t.Errorf("users set output %q", out)
	}
	if out := in.cli(t, "teams", "set", "team_cli", "--active=false", "--json"); cliJSON[map[string]any](t, out)["active"] != false {
		t.Errorf("teams set --json: %s", out)
	}

	// Audit events are written asynchronously, in batches.
	var trail string
	wantInTrail := []string{"key.created", "key.updated", "key.revoked", "user.updated", "team.updated", "api.request", "usr_ops"}
	eventually(t, 5*time.Second, func() error {
		trail = in.cli(t, "audit", "--team", "team_cli")
		for _, want := range wantInTrail {
			if !strings.Contains(trail, want) {
				return fmt.Errorf("audit table lacks %q:\n%s", want, trail)
			}
		}
		return nil
	})
	events := cliJSON[struct {
		Events []map[string]any `json:"events"`
	}](t, in.cli(t, "audit", "--key", created.ID, "--json"))
	types := map[any]int{}
	for _, e := range events.Events {
		types[e["type"]]++
	}
	if types["key.created"] != 1 || types["key.updated"] != 3 || types["key.revoked"] != 1 || types["api.request"] != 1 {
		t.Errorf("audit --key --json: event types %v", types)
	}
	// A page that is not the last says how to get the next one, with the
	// filters it was asked for.
	page := in.cli(t, "audit", "--team", "team_cli", "--limit", "2")
	if !regexp.MustCompile(`\nmore: keyproxy audit --team team_cli --limit 2 --cursor \S+\n$`).MatchString(page) {
		t.Errorf("audit --limit 2 does not end with the next page's command:\n%s", page)
	}

	for _, secret := range []string{first, created.Key} {
		if strings.Contains(trail, secret) || strings.Contains(in.logs.String(), secret) {
			t.Error("a full key reached the audit trail or the log")
		}
	}

	// Moving the user to another team revokes the key left in team_cli,
	// and the command says which.
	kept := cliJSON[struct{ Keys []keyView }](t, in.cli(t, "keys", "list", "--team", "team_cli", "--json")).Keys
	if len(kept) != 1 {
		t.Fatalf("team_cli lists %d active keys, want the first", len(kept))
	}
	out = in.cli(t, "users", "set", "usr_cli", "--team", "team_elsewhere", "--role", "member")
	if want := "user usr_cli: team team_elsewhere, role member, active true\nrevoked, as the user left the team: " + kept[0].ID + "\n"; out != want {
		t.Errorf("users set, moving the user: %q, want %q", out, want)
	}
}

func TestCLI_FailuresExitWithTheProblemCode(t *testing.T) {
	in := startInstance(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + l.Addr().String()
	l.Close()
	good := "KEYPROXY_ADMIN_TOKEN=" + in.token
	tests := []struct {
		name     string
		env      []string
		args     []string
		code     int
		inStderr string
	}{
		{"bad admin token", []string{"KEYPROXY_ADMIN_TOKEN=not-the-admin-token-at-all"},
			[]string{"keys", "list", "--team", "t"}, exitFailure, "401 unauthorized"},
		{"missing admin token", nil,
			[]string{"keys", "list", "--team", "t"}, exitBadUsage, "no admin token"},
		{"unknown key", []string{good},
			[]string{"keys", "revoke", "key_00000000000000000000"}, exitFailure, "404 not_found"},
		{"role that may not create keys", []string{good},
			[]string{"keys", "create", "--name", "n", "--user", "u1", "--team", "t1", "--role", "member"}, exitFailure, "403 forbidden_role"},
		{"invalid request", []string{good},
			[]string{"keys", "create", "--name", strings.Repeat("n", 101), "--user", "u1", "--team", "t1", "--role", "owner"}, exitFailure, "400 invalid_request"},
		{"missing required flag", []string{good},
			[]string{"keys", "create", "--name", "n"}, exitBadUsage, "required flag"},
		{"missing argument", []string{good},
			[]string{"keys", "revoke"}, exitBadUsage, "accepts 1 arg"},
		{"unknown subcommand", []string{good},
			[]string{"keys", "regenerate", "key_00000000000000000000"}, exitBadUsage, `unknown command "regenerate"`},
		{"unknown command", []string{good},
			[]string{"kyes", "list"}, exitBadUsage, `unknown command "kyes"`},
		{"nothing to update", []string{good},
			[]string{"keys", "update", "key_00000000000000000000"}, exitBadUsage, "nothing to update"},
		{"empty filter", []string{good},
			[]string{"audit", "--team", ""}, exitBadUsage, "--team is empty"},
		{"bad --active value", []string{good},
			[]string{"teams", "set", "t1", "--active", "maybe"}, exitBadUsage, "--active must be true or false"},
		{"admin API unreachable", []string{good, "KEYPROXY_ADMIN_URL=" + deadURL},
			[]string{"keys", "list", "--team", "t"}, exitFailure, "admin API unreachable"},
		{"admin URL not http", []string{good, "KEYPROXY_ADMIN_URL=ftp://x"},
			[]string{"keys", "list", "--team", "t"}, exitBadUsage, "--admin-url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{"KEYPROXY_ADMIN_URL=" + in.adminURL}, tt.env...)
			code, out, errOut := cliRun(t, env, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errOut)
			}
			if !strings.Contains(errOut, tt.inStderr) || strings.Count(strings.TrimRight(errOut, "\n"), "\n") != 0 {
				t.Errorf("stderr %q: want one line containing %q", errOut, tt.inStderr)
			}
			if out != "" {
				t.Errorf("a failure printed to stdout: %q", out)
			}
			if strings.Contains(errOut, "not-the-admin-token-at-all") || strings.Contains(errOut, in.token) {
				t.Error("the admin token reached the error message")
			}
		})
	}
}

func TestCLI_TokenFromFile(t *testing.T) {
	in := startInstance(t)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(in.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cliRun(t, nil, "keys", "list", "--team", "t", "--admin-url", in.adminURL, "--token-file", file, "--json")
	if code != exitOK || cliJSON[map[string]any](t, out)["keys"] == nil {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestCheckConfig_ValidFileSaysOK(t *testing.T) {
	file := writeFile(t, "upstream:\n  url: http://127.0.0.1:4000\nlog:\n  level: debug\n")
	code, out, errOut := cliRun(t, nil, "check-config", "--config", file)
	if code != exitOK || out != "configuration OK\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// eventually retries check until it passes or the deadline ends; the last
// failure is the test's.
func eventually(t *testing.T, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", within, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
