package main

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/ratelimit"
)

// Config is keyproxy's whole configuration. Every field is documented, with
// its default, in config.example.yaml; defaults are set in one place
// (setDefaults) and checked in one place (Validate).
type Config struct {
	Listen          string        `mapstructure:"listen"`
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	TrustedProxies  []string      `mapstructure:"trusted_proxies"`
	TLS             ListenerTLS   `mapstructure:"tls"`
	Upstream        struct {
		URL     string        `mapstructure:"url"`
		Timeout time.Duration `mapstructure:"timeout"`
		CAFile  string        `mapstructure:"ca_file"`
	} `mapstructure:"upstream"`
	Server struct {
		ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
		ReadTimeout       time.Duration `mapstructure:"read_timeout"`
		WriteTimeout      time.Duration `mapstructure:"write_timeout"`
		IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
		MaxHeaderBytes    int           `mapstructure:"max_header_bytes"`
	} `mapstructure:"server"`
	Admin struct {
		Listen       string   `mapstructure:"listen"`
		Tokens       []string `mapstructure:"tokens"`
		TokenFile    string   `mapstructure:"token_file"`
		MaxBodyBytes int64    `mapstructure:"max_body_bytes"`
		TLS          AdminTLS `mapstructure:"tls"`
	} `mapstructure:"admin"`
	Store struct {
		Driver    string `mapstructure:"driver"`
		DSN       string `mapstructure:"dsn"`
		MaxConns  int    `mapstructure:"max_conns"`
		MmapBytes int64  `mapstructure:"mmap_bytes"`
	} `mapstructure:"store"`
	Redis struct {
		Addr        string        `mapstructure:"addr"`
		Addrs       []string      `mapstructure:"addrs"`
		MasterName  string        `mapstructure:"master_name"`
		Username    string        `mapstructure:"username"`
		Password    string        `mapstructure:"password"`
		DB          int           `mapstructure:"db"`
		TLS         bool          `mapstructure:"tls"`
		DialTimeout time.Duration `mapstructure:"dial_timeout"`
		Timeout     time.Duration `mapstructure:"timeout"`
		PoolSize    int           `mapstructure:"pool_size"`
	} `mapstructure:"redis"`
	Cache struct {
		TTL         time.Duration `mapstructure:"ttl"`
		NegativeTTL time.Duration `mapstructure:"negative_ttl"`
		MaxEntries  int           `mapstructure:"max_entries"`
	} `mapstructure:"cache"`
	Keys struct {
		Prefix           string        `mapstructure:"prefix"`
		MaxActivePerTeam int           `mapstructure:"max_active_per_team"`
		CreatorRoles     []string      `mapstructure:"creator_roles"`
		LastUsedInterval time.Duration `mapstructure:"last_used_interval"`
	} `mapstructure:"keys"`
	Headers struct {
		Prefix string `mapstructure:"prefix"`
	} `mapstructure:"headers"`
	RateLimit struct {
		Enabled bool                       `mapstructure:"enabled"`
		Default ratelimit.Limit            `mapstructure:"default"`
		Roles   map[string]ratelimit.Limit `mapstructure:"roles"`
		// LocalShare lets a replica decide part of a user's requests
		// without Redis while the user is far from the limit.
		LocalShare bool `mapstructure:"local_share"`
	} `mapstructure:"ratelimit"`
	Audit struct {
		Sinks     []string      `mapstructure:"sinks"`
		Retention time.Duration `mapstructure:"retention"`
		QueueSize int           `mapstructure:"queue_size"`
		MaxWait   time.Duration `mapstructure:"max_wait"`
		File      string        `mapstructure:"file"`
	} `mapstructure:"audit"`
	InvalidKeys    InvalidKeys    `mapstructure:"invalid_keys"`
	SecretScanning SecretScanning `mapstructure:"secret_scanning"`
	Revocation     struct {
		AckTimeout time.Duration `mapstructure:"ack_timeout"`
	} `mapstructure:"revocation"`
	Log struct {
		Level  string `mapstructure:"level"`
		Format string `mapstructure:"format"`
		// Access is auto, true or false: one line per proxied request.
		// auto logs it unless the audit log sink already puts a line per
		// request in the process log (see accessLog).
		Access string `mapstructure:"access"`
		// FlushInterval buffers log lines and writes them at least this
		// often; 0 writes every line at once.
		FlushInterval time.Duration `mapstructure:"flush_interval"`
	} `mapstructure:"log"`
}

func setDefaults(v *viper.Viper) {
	setSecurityDefaults(v)
	v.SetDefault("listen", ":8080")
	v.SetDefault("shutdown_timeout", 30*time.Second)
	v.SetDefault("trusted_proxies", []string{})
	v.SetDefault("upstream.url", "http://127.0.0.1:3000")
	v.SetDefault("upstream.timeout", 30*time.Second)
	v.SetDefault("server.read_header_timeout", 5*time.Second)
	v.SetDefault("server.read_timeout", 60*time.Second)
	v.SetDefault("server.write_timeout", 90*time.Second)
	v.SetDefault("server.idle_timeout", 120*time.Second)
	v.SetDefault("server.max_header_bytes", 16<<10)
	v.SetDefault("admin.listen", "127.0.0.1:9090")
	v.SetDefault("admin.tokens", []string{})
	v.SetDefault("admin.token_file", "")
	v.SetDefault("admin.max_body_bytes", 64<<10)
	v.SetDefault("store.driver", "sqlite")
	v.SetDefault("store.dsn", "keyproxy.db")
	v.SetDefault("store.max_conns", 20)
	v.SetDefault("store.mmap_bytes", keystore.DefaultSQLiteMmapSize)
	v.SetDefault("redis.addr", "")
	v.SetDefault("redis.addrs", []string{})
	v.SetDefault("redis.master_name", "")
	v.SetDefault("redis.username", "")
	v.SetDefault("redis.password", "")
	v.SetDefault("redis.db", 0)
	v.SetDefault("redis.tls", false)
	v.SetDefault("redis.dial_timeout", time.Second)
	v.SetDefault("redis.timeout", 100*time.Millisecond)
	v.SetDefault("redis.pool_size", 0)
	v.SetDefault("cache.ttl", 10*time.Second)
	v.SetDefault("cache.negative_ttl", 2*time.Second)
	v.SetDefault("cache.max_entries", 1<<20)
	v.SetDefault("keys.prefix", "wev_")
	v.SetDefault("keys.max_active_per_team", 10)
	v.SetDefault("keys.creator_roles", []string{"owner", "admin", "super_admin"})
	v.SetDefault("keys.last_used_interval", 30*time.Second)
	v.SetDefault("headers.prefix", "X-Wevion-")
	v.SetDefault("ratelimit.enabled", true)
	v.SetDefault("ratelimit.local_share", true)
	v.SetDefault("ratelimit.default.requests", 600)
	v.SetDefault("ratelimit.default.per", time.Minute)
	v.SetDefault("ratelimit.default.burst", 100)
	v.SetDefault("ratelimit.roles.super_admin.requests", 1200)
	v.SetDefault("ratelimit.roles.super_admin.per", time.Minute)
	v.SetDefault("ratelimit.roles.super_admin.burst", 200)
	v.SetDefault("audit.sinks", []string{"log", "store"})
	v.SetDefault("audit.retention", 2160*time.Hour)
	v.SetDefault("audit.queue_size", 65536)
	v.SetDefault("audit.max_wait", 100*time.Millisecond)
	v.SetDefault("audit.file", "")
	v.SetDefault("revocation.ack_timeout", 2*time.Second)
	v.SetDefault("log.level", "info")
	v.SetDefault("log.format", "json")
	v.SetDefault("log.access", "auto")
	v.SetDefault("log.flush_interval", time.Second)
}

// LoadConfig reads the optional YAML file, then the KEYPROXY_* environment,
// on a private viper instance. Unknown keys are errors.
func LoadConfig(file string, environ []string) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	v.SetEnvPrefix("KEYPROXY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	if file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", file, err)
		}
	}
	// Bind every known key to its variable explicitly (AutomaticEnv only
	// sees keys viper already knows, and environ is passed in for tests).
	env := envMap(environ)
	setEnvPublicKeys(v, env)
	for _, key := range v.AllKeys() {
		name := "KEYPROXY_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if val, ok := env[name]; ok {
			v.Set(key, val)
		}
	}
	setEnvRoles(v, env)
	var unknownEnv []string
	known := map[string]bool{}
	for _, key := range v.AllKeys() {
		known["KEYPROXY_"+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = true
	}
	for name := range env {
		// A key identifier may be written as GitHub gives it, in lower case.
		if strings.HasPrefix(name, "KEYPROXY_") && !known[name] && !ignoredEnv[name] && !envPublicKeyRe.MatchString(name) {
			unknownEnv = append(unknownEnv, name)
		}
	}
	var cfg Config
	hook := mapstructure.ComposeDecodeHookFunc(
		boolToWord,
		durationNeedsUnit,
		wholeNumber,
		mapstructure.StringToTimeDurationHookFunc(),
		commaList,
	)
	var problems []string
	if err := v.UnmarshalExact(&cfg, viper.DecodeHook(hook)); err != nil {
		problems = append(problems, flattenDecodeError(err)...)
	}
	dropUnlistedDefaultRoles(v, &cfg, env)
	sort.Strings(unknownEnv)
	for _, name := range unknownEnv {
		problems = append(problems, fmt.Sprintf("%s: unknown environment variable", name))
	}
	// Validate even after decode errors so every problem shows at once,
	// but skip keys whose value could not be decoded (their zero value
	// would only repeat the same complaint).
	for _, vp := range cfg.Validate() {
		key, _, _ := strings.Cut(vp, ":")
		leaf := key[strings.LastIndex(key, ".")+1:]
		repeated := false
		for _, dp := range problems {
			if strings.Contains(dp, "'"+leaf+"'") || strings.Contains(dp, "\""+leaf+"\"") || strings.Contains(dp, key) {
				repeated = true
			}
		}
		if !repeated {
			problems = append(problems, vp)
		}
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return &cfg, nil
}

// ConfigError lists every problem found at once.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "invalid configuration: " + strings.Join(e.Problems, "; ")
}

// flattenDecodeError turns mapstructure's multi-line error into one
// problem per key.
func flattenDecodeError(err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(line, "* ")
		if line == "" || strings.HasSuffix(line, "error(s) decoding:") || strings.HasPrefix(line, "decoding failed due to the following error(s):") {
			continue
		}
		out = append(out, decodeProblems(line)...)
	}
	if len(out) == 0 {
		out = []string{err.Error()}
	}
	return out
}

var roleRe = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
var headerPrefixRe = regexp.MustCompile(`^[A-Za-z0-9-]{1,32}$`)

// Validate reports every problem at once, each naming its key.
func (c *Config) Validate() []string {
	var p []string
	add := func(key, format string, args ...any) {
		p = append(p, key+": "+fmt.Sprintf(format, args...))
	}
	if c.Listen == "" {
		add("listen", "must not be empty")
	} else if msg := checkAddr(c.Listen); msg != "" {
		add("listen", "%s", msg)
	}
	if c.Admin.Listen == "" {
		add("admin.listen", "must not be empty")
	} else if msg := checkAddr(c.Admin.Listen); msg != "" {
		add("admin.listen", "%s", msg)
	}
	if c.Listen != "" && c.Listen == c.Admin.Listen {
		add("admin.listen", "must differ from listen (%s)", c.Listen)
	}
	if u, err := url.Parse(c.Upstream.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("upstream.url", "must be an absolute http(s) URL, got %q", c.Upstream.URL)
	}
	positive := map[string]time.Duration{
		"upstream.timeout": c.Upstream.Timeout, "shutdown_timeout": c.ShutdownTimeout,
		"server.read_header_timeout": c.Server.ReadHeaderTimeout, "server.read_timeout": c.Server.ReadTimeout,
		"server.write_timeout": c.Server.WriteTimeout, "server.idle_timeout": c.Server.IdleTimeout,
		"cache.ttl": c.Cache.TTL, "cache.negative_ttl": c.Cache.NegativeTTL,
		"revocation.ack_timeout": c.Revocation.AckTimeout, "redis.dial_timeout": c.Redis.DialTimeout, "redis.timeout": c.Redis.Timeout, "keys.last_used_interval": c.Keys.LastUsedInterval,
		"audit.retention": c.Audit.Retention, "audit.max_wait": c.Audit.MaxWait,
	}
	for _, k := range sortedKeys(positive) {
		if positive[k] <= 0 {
			add(k, "must be a positive duration, got %s", positive[k])
		}
	}
	if c.Server.WriteTimeout > 0 && c.Server.WriteTimeout <= c.Upstream.Timeout {
		add("server.write_timeout", "must exceed upstream.timeout (%s) so slow upstream answers can still be written", c.Upstream.Timeout)
	}
	if c.Server.MaxHeaderBytes < 4096 || c.Server.MaxHeaderBytes > 1<<20 {
		add("server.max_header_bytes", "must be between 4096 and 1048576, got %d", c.Server.MaxHeaderBytes)
	}
	if c.Admin.MaxBodyBytes < 1024 || c.Admin.MaxBodyBytes > 10<<20 {
		add("admin.max_body_bytes", "must be between 1024 and 10485760, got %d", c.Admin.MaxBodyBytes)
	}
	for i, t := range c.Admin.Tokens {
		if len(t) < 16 || strings.ContainsFunc(t, unicode.IsSpace) {
			add(fmt.Sprintf("admin.tokens[%d]", i), "must be at least 16 characters without whitespace")
		}
	}
	for i, cidr := range c.TrustedProxies {
		if _, err := parsePrefix(cidr); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
	switch c.Store.Driver {
	case "sqlite", "postgres":
	default:
		add("store.driver", "must be sqlite or postgres, got %q", c.Store.Driver)
	}
	if c.Store.DSN == "" {
		add("store.dsn", "must not be empty")
	}
	if c.Store.MaxConns < 1 {
		add("store.max_conns", "must be at least 1")
	}
	if c.Store.MmapBytes < 0 || c.Store.MmapBytes > keystore.MaxSQLiteMmapSize {
		add("store.mmap_bytes", "must be from 0 to %d (SQLite's limit), got %d", keystore.MaxSQLiteMmapSize, c.Store.MmapBytes)
	}
	if c.Redis.DB < 0 {
		add("redis.db", "must not be negative, got %d", c.Redis.DB)
	}
	if c.Redis.PoolSize < 0 {
		add("redis.pool_size", "must not be negative, got %d", c.Redis.PoolSize)
	}
	if c.Redis.Addr != "" {
		if msg := checkAddr(c.Redis.Addr); msg != "" {
			add("redis.addr", "%s", msg)
		}
	}
	for i, a := range c.Redis.Addrs {
		if msg := checkAddr(a); msg != "" {
			add(fmt.Sprintf("redis.addrs[%d]", i), "%s", msg)
		}
	}
	if c.Redis.MasterName != "" && len(c.Redis.Addrs) == 0 && c.Redis.Addr == "" {
		add("redis.master_name", "needs the Sentinel addresses in redis.addrs")
	}
	if c.Cache.MaxEntries < 1 {
		add("cache.max_entries", "must be at least 1")
	}
	if _, err := keystore.NewFormat(c.Keys.Prefix); err != nil {
		add("keys.prefix", "%v", err)
	}
	if c.Keys.MaxActivePerTeam < 1 {
		add("keys.max_active_per_team", "must be at least 1")
	}
	if len(c.Keys.CreatorRoles) == 0 {
		add("keys.creator_roles", "must name at least one role")
	}
	for i, r := range c.Keys.CreatorRoles {
		if !roleRe.MatchString(r) {
			add(fmt.Sprintf("keys.creator_roles[%d]", i), "%q is not a role name ([a-z0-9_]{1,64})", r)
		}
	}
	if !headerPrefixRe.MatchString(c.Headers.Prefix) {
		add("headers.prefix", "must be 1-32 characters of letters, digits and '-', got %q", c.Headers.Prefix)
	}
	p = append(p, c.validateRateLimit()...)
	p = append(p, c.validateSecurity()...)
	if len(c.Audit.Sinks) == 0 {
		add("audit.sinks", "must name at least one sink (log, store, redis): every call is audited")
	}
	for i, s := range c.Audit.Sinks {
		switch s {
		case "log", "store", "redis":
		default:
			add(fmt.Sprintf("audit.sinks[%d]", i), "must be log, store or redis, got %q", s)
		}
		if s == "redis" && !c.redisEnabled() {
			add(fmt.Sprintf("audit.sinks[%d]", i), "redis sink needs redis.addr")
		}
	}
	if c.Audit.QueueSize < 1 {
		add("audit.queue_size", "must be at least 1")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.FlushInterval < 0 || c.Log.FlushInterval > time.Minute {
		add("log.flush_interval", "must be between 0 (unbuffered) and 1m, got %s", c.Log.FlushInterval)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "must be json or console, got %q", c.Log.Format)
	}
	if _, err := strconv.ParseBool(c.Log.Access); err != nil && c.Log.Access != "auto" {
		add("log.access", "must be auto, true or false, got %q", c.Log.Access)
	}
	return p
}

// accessLog decides log.access. auto leaves the access line out when the
// audit log sink writes to the process log: its api.request event is a
// line per proxied request already, with every field of the access line
// (request_id, key_id, method, path, status, duration, outcome) and more,
// and a second line would double the log's volume and its cost per
// request for nothing.
func (c *Config) accessLog() bool {
	if on, err := strconv.ParseBool(c.Log.Access); err == nil {
		return on
	}
	return !(slices.Contains(c.Audit.Sinks, "log") && c.Audit.File == "")
}

// boolToWord decodes a YAML boolean into a string field as "true" or
// "false" (viper's weak decoding would make it "1" or "0"): log.access
// takes a word, and an old file's access: true must keep working.
func boolToWord(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.Bool && to.Kind() == reflect.String {
		return strconv.FormatBool(data.(bool)), nil
	}
	return data, nil
}

func (c *Config) validateRateLimit() []string {
	var p []string
	for _, role := range sortedKeys(c.RateLimit.Roles) {
		if !roleRe.MatchString(role) {
			p = append(p, fmt.Sprintf("ratelimit.roles.%s: not a role name ([a-z0-9_]{1,64})", role))
		}
	}
	// The limiter's own check is the authority (whole-second windows,
	// bounded rates); it names every bad key, one per line.
	pol := ratelimit.Policies{Default: c.RateLimit.Default, Roles: c.RateLimit.Roles}
	if err := pol.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				p = append(p, line)
			}
		}
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("must be a CIDR (10.0.0.0/8) or an address")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// TrustedPrefixes returns the parsed trusted_proxies (validated already).
func (c *Config) TrustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, s := range c.TrustedProxies {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}
