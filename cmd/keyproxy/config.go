package main

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

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

// writeTimeoutMargin is what server.write_timeout keeps beyond
// upstream.timeout when the operator sets only the latter: a longer wait
// for the backend must not make every slow answer a cut connection, nor
// stop start-up over a key the operator never wrote.
const writeTimeoutMargin = 60 * time.Second

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
	if _, inEnv := env["KEYPROXY_SERVER_WRITE_TIMEOUT"]; !inEnv && !v.InConfig("server.write_timeout") {
		cfg.Server.WriteTimeout = max(cfg.Server.WriteTimeout, cfg.Upstream.Timeout+writeTimeoutMargin)
	}
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
