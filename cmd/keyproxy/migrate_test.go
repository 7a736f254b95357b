package main

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wevion/keyproxy/internal/testserver"
)

func TestMigrate_AppliesTheSchemaOnceThenHasNothingToDo(t *testing.T) {
	tests := []struct {
		name   string
		env    func(t *testing.T) []string
		driver string
		where  string
		steps  []string // the store's migrations, in order
	}{
		{"sqlite", func(t *testing.T) []string {
			return []string{"KEYPROXY_STORE_DSN=" + filepath.Join(t.TempDir(), "kp.db")}
		}, "sqlite", "sqlite store ", []string{"migration 1 (teams, users, keys)", "migration 2 (covering indexes for key resolution)",
			"migration 3 (owner and team state on each key)"}},
		{"postgres", func(t *testing.T) []string {
			return []string{"KEYPROXY_STORE_DRIVER=postgres", "KEYPROXY_STORE_DSN=" + testserver.NewPostgresDB(t)}
		}, "pgx", "postgres store postgres@", []string{"migration 1 (teams, users, keys)",
			"migration 2 (owner and team state on each key)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env(t)
			code, out, errOut := cliRun(t, env, "migrate")
			if code != exitOK {
				t.Fatalf("first migrate: exit %d: %s", code, errOut)
			}
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			version := strconv.Itoa(len(tt.steps))
			want := []string{""}
			for _, step := range tt.steps {
				want = append(want, "  "+step+": applied")
			}
			want = append(want, "  audit tables: created", "schema migrated to version "+version)
			if len(lines) != len(want) || !strings.HasPrefix(lines[0], tt.where) {
				t.Fatalf("first migrate printed:\n%s", out)
			}
			for i := 1; i < len(want); i++ {
				if lines[i] != want[i] {
					t.Errorf("line %d: %q, want %q", i, lines[i], want[i])
				}
			}

			code, out, errOut = cliRun(t, env, "migrate")
			if code != exitOK {
				t.Fatalf("second migrate: exit %d: %s", code, errOut)
			}
			for _, step := range tt.steps {
				if !strings.Contains(out, step+": already applied") {
					t.Errorf("second migrate does not say %s is already applied:\n%s", step, out)
				}
			}
			if !strings.Contains(out, "audit tables: already present") ||
				!strings.HasSuffix(out, "nothing to do: schema already at version "+version+"\n") {
				t.Errorf("second migrate printed:\n%s", out)
			}

			// The tables serve needs are there.
			dsn := strings.TrimPrefix(env[len(env)-1], "KEYPROXY_STORE_DSN=")
			db, err := sql.Open(tt.driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			auditTable := "audit_events"
			if tt.driver == "sqlite" {
				auditTable = "audit_segments"
			}
			for _, table := range []string{"keys", "users", "teams", auditTable} {
				var n int
				if err := db.QueryRowContext(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
					t.Errorf("table %s: %v", table, err)
				}
			}
		})
	}
}

func TestMigrate_FailuresNeverEchoThePassword(t *testing.T) {
	const password = "s3cret-password"
	tests := []struct {
		name string
		dsn  string
		code int
	}{
		{"unreachable server", "postgres://kp:" + password + "@127.0.0.1:1/kp?connect_timeout=2", exitFailure},
		{"unparsable DSN", "postgres://kp:" + password + "@[::1/kp", exitBadUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, []string{"KEYPROXY_STORE_DRIVER=postgres", "KEYPROXY_STORE_DSN=" + tt.dsn}, "migrate")
			if code != tt.code {
				t.Errorf("exit %d, want %d (%s)", code, tt.code, errOut)
			}
			if out != "" || strings.Count(strings.TrimRight(errOut, "\n"), "\n") != 0 {
				t.Errorf("want one line on stderr only; stdout %q stderr %q", out, errOut)
			}
			if strings.Contains(errOut, password) {
				t.Errorf("the password reached the message: %s", errOut)
			}
		})
	}
}

func TestMigrate_BadConfigurationIsAUsageError(t *testing.T) {
	code, _, errOut := cliRun(t, []string{"KEYPROXY_STORE_DRIVER=mysql"}, "migrate")
	if code != exitBadUsage || !strings.Contains(errOut, "store.driver") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}
