package main

import (
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/wevion/keyproxy/ratelimit"
)

func policies(cfg *Config) ratelimit.Policies {
	return ratelimit.Policies{Default: cfg.RateLimit.Default, Roles: cfg.RateLimit.Roles}
}

// describePolicies lists the rate policies, the default first, then the
// roles by name: "default: 600 req/1m0s (burst 100)".
func describePolicies(p ratelimit.Policies) []string {
	out := []string{"default: " + p.Default.String()}
	for _, role := range slices.Sorted(maps.Keys(p.Roles)) {
		out = append(out, role+": "+p.Roles[role].String())
	}
	return out
}

// reload applies what SIGHUP may change safely: the log level and the rate
// policies. Everything else needs a restart, and the log line says so.
func (a *app) reload(next *Config, level zap.AtomicLevel, logger *zap.Logger) {
	reloaded := []string{}
	fields := []zap.Field{}
	whole := true
	// A quieter level is set after the line below, a louder one before
	// it: either way the line is written at the more verbose of the two,
	// so a reload to warn still says it happened.
	newLevel, quieter := level.Level(), false
	if l, err := zap.ParseAtomicLevel(next.Log.Level); err == nil {
		newLevel, quieter = l.Level(), l.Level() > level.Level()
		if !quieter {
			level.SetLevel(newLevel)
		}
		reloaded = append(reloaded, "log.level")
		fields = append(fields, zap.String("log_level", newLevel.String()))
	}
	if a.limiter != nil {
		p := policies(next)
		if err := a.limiter.SetPolicies(p); err != nil {
			logger.Error("rate policies not reloaded", zap.Error(err))
			whole = false
		} else {
			reloaded = append(reloaded, "ratelimit")
			fields = append(fields, zap.Strings("ratelimit_policies", describePolicies(p)))
		}
	}
	a.reloads.record(whole, time.Now())
	// The values in force, so the line shows what a reload changed.
	logger.Info("configuration reloaded", append([]zap.Field{zap.Strings("reloaded", reloaded),
		zap.String("note", "other settings take effect after a restart")}, fields...)...)
	if quieter {
		level.SetLevel(newLevel)
	}
}
