package main

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/ratelimit"
)

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
