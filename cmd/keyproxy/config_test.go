package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/wevion/keyproxy/ratelimit"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keyproxy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig_DefaultsMatchDesign(t *testing.T) {
	cfg, err := LoadConfig("", nil)
	if err != nil {
		t.Fatalf("defaults do not load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, ":8080"},
		{"upstream.url", cfg.Upstream.URL, "http://127.0.0.1:3000"},
		{"upstream.timeout", cfg.Upstream.Timeout, 30 * time.Second},
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:9090"},
		{"store.driver", cfg.Store.Driver, "sqlite"},
		{"store.dsn", cfg.Store.DSN, "keyproxy.db"},
		{"redis.addr", cfg.Redis.Addr, ""},
		{"cache.ttl", cfg.Cache.TTL, 10 * time.Second},
		{"keys.prefix", cfg.Keys.Prefix, "wev_"},
		{"keys.max_active_per_team", cfg.Keys.MaxActivePerTeam, 10},
		{"keys.creator_roles", cfg.Keys.CreatorRoles, []string{"owner", "admin", "super_admin"}},
		{"ratelimit.default.requests", cfg.RateLimit.Default.Requests, 600},
		{"ratelimit.default.per", cfg.RateLimit.Default.Per, time.Minute},
		{"ratelimit.default.burst", cfg.RateLimit.Default.Burst, 100},
		{"ratelimit.roles.super_admin.requests", cfg.RateLimit.Roles["super_admin"].Requests, 1200},
		{"ratelimit.local_share", cfg.RateLimit.LocalShare, true},
		{"audit.sinks", cfg.Audit.Sinks, []string{"log", "store"}},
		{"audit.retention", cfg.Audit.Retention, 2160 * time.Hour},
		{"revocation.ack_timeout", cfg.Revocation.AckTimeout, 2 * time.Second},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "json"},
		{"log.access", cfg.Log.Access, "auto"},
		{"headers.prefix", cfg.Headers.Prefix, "X-Wevion-"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// The example file documents every key with its default: loading it must
// give exactly the built-in defaults, and no key may be missing from it.
func TestConfigExample_DocumentsEveryKeyWithItsDefault(t *testing.T) {
	example, err := LoadConfig("../../config.example.yaml", nil)
	if err != nil {
		t.Fatalf("config.example.yaml does not load: %v", err)
	}
	defaults, err := LoadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(example, defaults) {
		t.Errorf("config.example.yaml differs from the defaults:\nexample:  %+v\ndefaults: %+v", example, defaults)
	}
	text, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	setDefaults(v)
	for _, key := range v.AllKeys() {
		leaf := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(string(text), leaf+":") {
			t.Errorf("config.example.yaml does not document %s", key)
		}
	}
}

func TestLoadConfig_EnvironmentOverridesFile(t *testing.T) {
	file := writeFile(t, "upstream:\n  url: http://127.0.0.1:4000\nlog:\n  level: debug\n")
	cfg, err := LoadConfig(file, []string{
		"KEYPROXY_UPSTREAM_URL=http://127.0.0.1:5000",
		"KEYPROXY_ADMIN_LISTEN=127.0.0.1:9999",
		"KEYPROXY_ADMIN_TOKENS=aaaaaaaaaaaaaaaa1,bbbbbbbbbbbbbbbb2",
		"KEYPROXY_CACHE_TTL=3s",
		"KEYPROXY_RATELIMIT_DEFAULT_REQUESTS=42",
		"KEYPROXY_RATELIMIT_LOCAL_SHARE=false",
		"KEYPROXY_TEST_POSTGRES_DSN=postgres://ignored",
	})
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.Upstream.URL != "http://127.0.0.1:5000" {
		t.Errorf("upstream.url = %q, env must win over the file", cfg.Upstream.URL)
	}
	if cfg.Log.Level != "debug" {
		t.Errorf("log.level = %q, the file's value must survive", cfg.Log.Level)
	}
	if cfg.Admin.Listen != "127.0.0.1:9999" {
		t.Errorf("admin.listen = %q", cfg.Admin.Listen)
	}
	if want := []string{"aaaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbbb2"}; !reflect.DeepEqual(cfg.Admin.Tokens, want) {
		t.Errorf("admin.tokens = %q, want %q", cfg.Admin.Tokens, want)
	}
	if cfg.Cache.TTL != 3*time.Second {
		t.Errorf("cache.ttl = %s", cfg.Cache.TTL)
	}
	if cfg.RateLimit.Default.Requests != 42 {
		t.Errorf("ratelimit.default.requests = %d", cfg.RateLimit.Default.Requests)
	}
	if cfg.RateLimit.LocalShare {
		t.Error("ratelimit.local_share = true, the environment set false")
	}
}

// mustLoad loads yaml (none when empty) and env, failing the test on error.
func mustLoad(t *testing.T, yaml string, env []string) *Config {
	t.Helper()
	file := ""
	if yaml != "" {
		file = writeFile(t, yaml)
	}
	cfg, err := LoadConfig(file, env)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestLoadConfig_ReportsEveryProblemNamingTheKey(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     []string
		wantAll []string
	}{
		{"typo in a key", "upstrem:\n  url: http://x\n", nil, []string{"upstrem"}},
		{"unknown nested key", "cache:\n  tll: 5s\n", nil, []string{"tll"}},
		{"unknown environment variable", "", []string{"KEYPROXY_UPSTREAM_URLL=http://x"}, []string{"KEYPROXY_UPSTREAM_URLL"}},
		{"wrong type", "cache:\n  ttl: soon\n", nil, []string{"ttl"}},
		{"typo and bad value together", "upstrem: x\nlog:\n  level: loud\n", nil, []string{"upstrem", "log.level"}},
		{"several problems at once", "upstream:\n  url: ftp://x\n  timeout: -1s\nstore:\n  driver: mysql\nlog:\n  format: xml\nkeys:\n  prefix: \"bad prefix\"\n", nil,
			[]string{"upstream.url", "upstream.timeout", "store.driver", "log.format", "keys.prefix"}},
		{"bad rate policy", "ratelimit:\n  roles:\n    admin: { requests: 0, per: 1m, burst: 5 }\n", nil, []string{"ratelimit.roles.admin.requests"}},
		{"fractional rate window", "ratelimit:\n  default: { requests: 10, per: 1500ms, burst: 5 }\n", nil, []string{"ratelimit.default.per"}},
		{"short admin token", "", []string{"KEYPROXY_ADMIN_TOKENS=short"}, []string{"admin.tokens[0]"}},
		{"redis sink without redis", "audit:\n  sinks: [redis]\n", nil, []string{"audit.sinks[0]"}},
		{"bad trusted proxy", "trusted_proxies: [\"10.0.0.0/99\"]\n", nil, []string{"trusted_proxies[0]"}},
		{"bad access log switch", "log:\n  access: sometimes\n", nil, []string{"log.access"}},
		// A bare number would be nanoseconds: a retention of 2160 ns
		// purges the whole audit trail at the next start.
		{"duration without a unit", "audit:\n  retention: 2160\n", nil, []string{"audit.retention: 2160 needs a unit"}},
		{"timeout without a unit", "shutdown_timeout: 5\n", nil, []string{"shutdown_timeout: 5 needs a unit"}},
		{"duration without a unit from the environment", "", []string{"KEYPROXY_AUDIT_RETENTION=2160"}, []string{"audit.retention: 2160 needs a unit"}},
		{"misspelt duration", "cache:\n  ttl: 10 sec\n", nil, []string{`cache.ttl: "10 sec" is not a duration`}},
		{"misspelt duration from the environment", "", []string{"KEYPROXY_CACHE_TTL=abc"}, []string{`cache.ttl: "abc" is not a duration`}},
		{"fraction for a count", "keys:\n  max_active_per_team: 10.5\n", nil, []string{"keys.max_active_per_team: 10.5 is not a whole number"}},
		{"listen without a port", "listen: garbage\n", nil, []string{"listen: must be host:port"}},
		{"listen port alone from the environment", "", []string{"KEYPROXY_LISTEN=18203"}, []string{"listen: must be host:port"}},
		{"admin listen with a bad port", "admin:\n  listen: 127.0.0.1:http9\n", nil, []string{"admin.listen: port must be a number"}},
		{"redis address without a port", "", []string{"KEYPROXY_REDIS_ADDR=not-an-addr"}, []string{"redis.addr: must be host:port"}},
		{"negative redis db", "redis:\n  db: -1\n", nil, []string{"redis.db: must not be negative"}},
		{"negative sqlite map size", "", []string{"KEYPROXY_STORE_MMAP_BYTES=-1"}, []string{"store.mmap_bytes: must be from 0 to 2147418112"}},
		{"sqlite map size beyond sqlite's limit", "store:\n  mmap_bytes: 4294967296\n", nil, []string{"store.mmap_bytes: must be from 0 to 2147418112 (SQLite's limit), got 4294967296"}},
		{"admin token with a space inside", "admin:\n  tokens: [\"tokenAAAAAAAA AAAAAAAA1\"]\n", nil, []string{"admin.tokens[0]: must be at least 16 characters without whitespace"}},
		{"unknown top-level key named in full", "upstrem: 1\n", nil, []string{"upstrem: unknown key"}},
		{"unknown nested key named in full", "cache:\n  tll: 5s\n", nil, []string{"cache.tll: unknown key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := ""
			if tt.yaml != "" {
				file = writeFile(t, tt.yaml)
			}
			_, err := LoadConfig(file, tt.env)
			if err == nil {
				t.Fatal("LoadConfig accepted a bad configuration")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			for _, want := range tt.wantAll {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
		})
	}
}

// TestLoadConfig_AccessLogFollowsTheAuditLogSink: log.access auto writes
// the access line only when no audit event already puts a line per request
// in the process log; true and false (from a file's boolean or the
// environment) decide alone.
// TestLoadConfig_EnvironmentAddsARole: a role neither the file nor the
// defaults name gets its policy from the environment, and a partial one
// is refused naming what is missing.
func TestLoadConfig_EnvironmentAddsARole(t *testing.T) {
	cfg, err := LoadConfig("", []string{"KEYPROXY_RATELIMIT_ROLES_ADMIN_REQUESTS=5", "KEYPROXY_RATELIMIT_ROLES_ADMIN_PER=1m", "KEYPROXY_RATELIMIT_ROLES_ADMIN_BURST=2"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.RateLimit.Roles["admin"], (ratelimit.Limit{Requests: 5, Per: time.Minute, Burst: 2}); got != want {
		t.Errorf("admin policy %+v, want %+v", got, want)
	}
	if _, err := LoadConfig("", []string{"KEYPROXY_RATELIMIT_ROLES_ADMIN_REQUESTS=5"}); err == nil || !strings.Contains(err.Error(), "ratelimit.roles.admin.") {
		t.Errorf("a partial policy from the environment: %v", err)
	}
}

// TestLoadConfig_EnvironmentAddsAPublicKey: GitHub's secret-scanning keys
// can come from the environment too, by identifier, as PEM text or a file,
// next to those of the file.
func TestLoadConfig_EnvironmentAddsAPublicKey(t *testing.T) {
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&signer.PublicKey)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	file := write(t, filepath.Join(t.TempDir(), "github.pem"), []byte(pemText))
	yaml := "secret_scanning:\n  enabled: true\n  public_keys:\n    aa01: " + file + "\n    aa02: /nowhere\n"
	cfg := mustLoad(t, yaml, []string{
		"KEYPROXY_SECRET_SCANNING_PUBLIC_KEYS_90a421169f0a=" + pemText, // lower case, as GitHub writes ids
		"KEYPROXY_SECRET_SCANNING_PUBLIC_KEYS_BB02=" + file,
		"KEYPROXY_SECRET_SCANNING_PUBLIC_KEYS_AA02=" + pemText, // replaces the file's
	})
	want := map[string]string{"aa01": file, "aa02": pemText, "90a421169f0a": pemText, "bb02": file}
	if !maps.Equal(cfg.SecretScanning.PublicKeys, want) {
		t.Fatalf("public keys %q, want %q", sortedKeys(cfg.SecretScanning.PublicKeys), sortedKeys(want))
	}
	keys, problems := cfg.SecretScanning.keys()
	if len(problems) > 0 || len(keys) != 4 {
		t.Fatalf("%d keys parsed, problems %q", len(keys), problems)
	}
	_, err = LoadConfig("", []string{"KEYPROXY_SECRET_SCANNING_ENABLED=true", "KEYPROXY_SECRET_SCANNING_PUBLIC_KEYS_CC03=not a key"})
	if err == nil || !strings.Contains(err.Error(), "secret_scanning.public_keys.cc03: neither PEM text nor a readable file") {
		t.Fatalf("a bad key from the environment: %v", err)
	}
}

// TestLoadConfig_FileRolesAreTheWholeList: the default super_admin policy
// applies only while the file lists no roles (or lists super_admin).
func TestLoadConfig_FileRolesAreTheWholeList(t *testing.T) {
	for _, tt := range []struct {
		name, yaml string
		env        []string
		want       []string
	}{
		{"no file", "", nil, []string{"super_admin"}},
		{"file without roles", "ratelimit:\n  default: { requests: 60, per: 1m, burst: 5 }\n", nil, []string{"super_admin"}},
		{"roles: {}", "ratelimit:\n  roles: {}\n", nil, nil},
		{"only owner", "ratelimit:\n  roles:\n    owner: { requests: 60, per: 1m, burst: 5 }\n", nil, []string{"owner"}},
		{"owner and super_admin", "ratelimit:\n  roles:\n    owner: { requests: 60, per: 1m, burst: 5 }\n    super_admin: { requests: 90, per: 1m, burst: 9 }\n", nil, []string{"owner", "super_admin"}},
		{"only owner, super_admin from the environment", "ratelimit:\n  roles:\n    owner: { requests: 60, per: 1m, burst: 5 }\n",
			[]string{"KEYPROXY_RATELIMIT_ROLES_SUPER_ADMIN_REQUESTS=300"}, []string{"owner", "super_admin"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, tt.yaml, tt.env)
			if got := sortedKeys(cfg.RateLimit.Roles); !slices.Equal(got, tt.want) {
				t.Errorf("roles %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLoadConfig_LenientWhereItIsUnambiguous: 0 is 0 in any unit, a whole
// float is a whole number, and the spaces after the commas of an
// environment list are not part of its items.
func TestLoadConfig_LenientWhereItIsUnambiguous(t *testing.T) {
	file := writeFile(t, "log:\n  flush_interval: 0\nkeys:\n  max_active_per_team: 12.0\n")
	cfg, err := LoadConfig(file, []string{"KEYPROXY_ADMIN_TOKENS=tokenAAAAAAAAAAAAAAAA1, tokenCCCCCCCCCCCCCCCC3", "KEYPROXY_AUDIT_SINKS=log, store"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.FlushInterval != 0 || cfg.Keys.MaxActivePerTeam != 12 {
		t.Errorf("flush_interval %s, max_active_per_team %d; want 0 and 12", cfg.Log.FlushInterval, cfg.Keys.MaxActivePerTeam)
	}
	if cfg := mustLoad(t, "", []string{"KEYPROXY_LOG_FLUSH_INTERVAL=0"}); cfg.Log.FlushInterval != 0 {
		t.Errorf("KEYPROXY_LOG_FLUSH_INTERVAL=0 gave %s", cfg.Log.FlushInterval)
	}
	if want := []string{"tokenAAAAAAAAAAAAAAAA1", "tokenCCCCCCCCCCCCCCCC3"}; !reflect.DeepEqual(cfg.Admin.Tokens, want) {
		t.Errorf("admin.tokens %q, want %q", cfg.Admin.Tokens, want)
	}
	if want := []string{"log", "store"}; !reflect.DeepEqual(cfg.Audit.Sinks, want) {
		t.Errorf("audit.sinks %q, want %q", cfg.Audit.Sinks, want)
	}
}

// TestLoadConfig_WriteTimeoutFollowsALongerUpstreamTimeout: an operator who
// lengthens only upstream.timeout gets a write timeout that outlasts it; one
// who sets both inconsistently is told so.
func TestLoadConfig_WriteTimeoutFollowsALongerUpstreamTimeout(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want time.Duration
	}{
		{"defaults", "", nil, 90 * time.Second},
		{"a shorter upstream timeout keeps the default", "upstream:\n  timeout: 5s\n", nil, 90 * time.Second},
		{"a longer upstream timeout from the file", "upstream:\n  timeout: 2m\n", nil, 3 * time.Minute},
		{"a longer upstream timeout from the environment", "", []string{"KEYPROXY_UPSTREAM_TIMEOUT=5m"}, 6 * time.Minute},
		{"both given", "upstream:\n  timeout: 2m\nserver:\n  write_timeout: 150s\n", nil, 150 * time.Second},
		{"write timeout from the environment", "", []string{"KEYPROXY_UPSTREAM_TIMEOUT=2m", "KEYPROXY_SERVER_WRITE_TIMEOUT=121s"}, 121 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustLoad(t, tt.yaml, tt.env).Server.WriteTimeout; got != tt.want {
				t.Errorf("server.write_timeout = %s, want %s", got, tt.want)
			}
		})
	}
	for name, env := range map[string][]string{
		"file":        {"KEYPROXY_UPSTREAM_TIMEOUT=2m"},
		"environment": {"KEYPROXY_UPSTREAM_TIMEOUT=2m", "KEYPROXY_SERVER_WRITE_TIMEOUT=90s"},
	} {
		file := ""
		if name == "file" {
			file = writeFile(t, "server:\n  write_timeout: 90s\n")
		}
		if _, err := LoadConfig(file, env); err == nil || !strings.Contains(err.Error(), "server.write_timeout: must exceed upstream.timeout (2m0s)") {
			t.Errorf("write timeout given in the %s below upstream.timeout: %v", name, err)
		}
	}
}

func TestLoadConfig_AccessLogFollowsTheAuditLogSink(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want bool
	}{
		{"defaults: the log sink's line is the access line", "", nil, false},
		{"no log sink", "", []string{"KEYPROXY_AUDIT_SINKS=store"}, true},
		{"log sink to its own file", "audit:\n  file: audit.jsonl\n", nil, true},
		{"file says true", "log:\n  access: true\n", nil, true},
		{"file says false, no log sink", "log:\n  access: false\naudit:\n  sinks: [store]\n", nil, false},
		{"environment says true", "", []string{"KEYPROXY_LOG_ACCESS=true"}, true},
		{"environment says false", "", []string{"KEYPROXY_LOG_ACCESS=false", "KEYPROXY_AUDIT_SINKS=store"}, false},
		{"explicit auto", "log:\n  access: auto\n", []string{"KEYPROXY_AUDIT_SINKS=store"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, tt.yaml, tt.env)
			if got := cfg.accessLog(); got != tt.want {
				t.Errorf("access log on = %v (log.access %q, sinks %q), want %v", got, cfg.Log.Access, cfg.Audit.Sinks, tt.want)
			}
		})
	}
}

func TestAdminTokens_GeneratedOnceIntoPrivateFile(t *testing.T) {
	dir := t.TempDir()
	cfg, err := LoadConfig("", []string{"KEYPROXY_STORE_DSN=" + filepath.Join(dir, "kp.db")})
	if err != nil {
		t.Fatal(err)
	}
	toks, path, created, err := adminTokens(cfg)
	if err != nil || !created || len(toks) != 1 {
		t.Fatalf("first start: tokens=%d created=%v err=%v", len(toks), created, err)
	}
	if path != filepath.Join(dir, "keyproxy.admin-token") {
		t.Errorf("token file at %s, want beside the database", path)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
	}
	again, _, created, err := adminTokens(cfg)
	if err != nil || created || !reflect.DeepEqual(again, toks) {
		t.Fatalf("second start must reuse the file: created=%v err=%v same=%v", created, err, reflect.DeepEqual(again, toks))
	}
}
