package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

// app is the wired process: everything serve starts and must stop.
type app struct {
	proxy   http.Handler
	admin   http.Handler
	store   *keystore.SQLite
	audit   *audit.Pipeline
	auditDB *audit.SQLStore
	usage   *keystore.UsageTracker
	limiter *ratelimit.Local
}

func policies(cfg *Config) ratelimit.Policies {
	return ratelimit.Policies{Default: cfg.RateLimit.Default, Roles: cfg.RateLimit.Roles}
}

func build(ctx context.Context, cfg *Config, logger *zap.Logger) (_ *app, err error) {
	a := &app{}
	defer func() {
		if err != nil {
			a.close(logger)
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)

	format, err := keystore.NewFormat(cfg.Keys.Prefix)
	if err != nil {
		return nil, usageError{fmt.Errorf("keys.prefix: %w", err)}
	}
	if cfg.Store.Driver != "sqlite" {
		return nil, usageError{errors.New("store.driver: postgres is not available in this build yet (see the README)")}
	}
	if cfg.Redis.Addr != "" {
		return nil, usageError{errors.New("redis.addr: Redis is not available in this build yet (see the README)")}
	}
	if a.store, err = keystore.OpenSQLite(ctx, cfg.Store.DSN); err != nil {
		return nil, fmt.Errorf("store.dsn: opening SQLite %s: %w", cfg.Store.DSN, err)
	}

	tokens, tokenPath, created, err := adminTokens(cfg)
	if err != nil {
		return nil, err
	}
	switch {
	case created:
		logger.Warn("no admin token configured: generated one; read it from the file", zap.String("token_file", tokenPath))
	case tokenPath != "":
		logger.Info("admin token read from file", zap.String("token_file", tokenPath))
	}

	resolver, err := keystore.NewResolver(a.store, keystore.ResolverOptions{
		TTL: cfg.Cache.TTL, NegativeTTL: cfg.Cache.NegativeTTL, MaxEntries: cfg.Cache.MaxEntries, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}

	if a.audit, err = a.buildAudit(cfg, logger, reg); err != nil {
		return nil, err
	}
	a.usage = keystore.NewUsageTracker(a.store, cfg.Keys.LastUsedInterval, logger.Named("usage"))

	upstream, _ := url.Parse(cfg.Upstream.URL) // validated
	pcfg := proxy.Config{
		Upstream:        upstream,
		UpstreamTimeout: cfg.Upstream.Timeout,
		HeaderPrefix:    cfg.Headers.Prefix,
		Format:          format,
		TrustedProxies:  cfg.TrustedPrefixes(),
		Resolver:        resolver,
		Recorder:        a.audit,
		Usage:           a.usage,
		Logger:          logger.Named("access"),
		AccessLog:       cfg.Log.Access,
		Registerer:      reg,
	}
	if cfg.RateLimit.Enabled {
		a.limiter = ratelimit.NewLocal(policies(cfg), ratelimit.LocalOptions{Registerer: reg})
		pcfg.Limiter = a.limiter
		pcfg.RateLimitHeaders = ratelimit.WriteHeaders
	}
	ph, err := proxy.New(pcfg)
	if err != nil {
		return nil, err
	}
	a.proxy = ph

	acfg := admin.Config{
		Store:            a.store,
		Evictor:          resolver,
		Recorder:         a.audit,
		Format:           format,
		Tokens:           tokens,
		CreatorRoles:     cfg.Keys.CreatorRoles,
		MaxActivePerTeam: cfg.Keys.MaxActivePerTeam,
		MaxBodyBytes:     cfg.Admin.MaxBodyBytes,
		Logger:           logger.Named("admin"),
		Registerer:       reg,
		Metrics:          promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
	}
	if a.auditDB != nil {
		acfg.Audit = a.auditDB
	}
	ah, err := admin.New(acfg)
	if err != nil {
		return nil, err
	}
	a.admin = ah
	return a, nil
}

func (a *app) buildAudit(cfg *Config, logger *zap.Logger, reg prometheus.Registerer) (*audit.Pipeline, error) {
	auditLog := logger.Named("audit")
	if cfg.Audit.File != "" {
		f, err := os.OpenFile(cfg.Audit.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit.file: %w", err)
		}
		l, _, err := newLogger("info", "json", f)
		if err != nil {
			return nil, err
		}
		auditLog = l
	}
	logSink := audit.NewLogSink(auditLog)
	var sinks []audit.Sink
	for _, name := range cfg.Audit.Sinks {
		switch name {
		case "log":
			sinks = append(sinks, logSink)
		case "store":
			s, err := audit.NewSQLStore(a.store.DB(), audit.SQLite, audit.StoreOptions{Retention: cfg.Audit.Retention, Logger: logger.Named("audit-store")})
			if err != nil {
				return nil, fmt.Errorf("audit store: %w", err)
			}
			a.auditDB = s
			sinks = append(sinks, s)
		}
	}
	return audit.NewPipeline(audit.Options{
		QueueSize: cfg.Audit.QueueSize, MaxWait: cfg.Audit.MaxWait, Spill: logSink,
		Logger: logger.Named("audit"), Registerer: reg,
	}, sinks...)
}

// reload applies what SIGHUP may change safely: the log level and the rate
// policies. Everything else needs a restart, and the log line says so.
func (a *app) reload(next *Config, level zap.AtomicLevel, logger *zap.Logger) {
	reloaded := []string{}
	if l, err := zap.ParseAtomicLevel(next.Log.Level); err == nil {
		level.SetLevel(l.Level())
		reloaded = append(reloaded, "log.level")
	}
	if a.limiter != nil {
		a.limiter.SetPolicies(policies(next))
		reloaded = append(reloaded, "ratelimit")
	}
	logger.Info("configuration reloaded", zap.Strings("reloaded", reloaded),
		zap.String("note", "other settings take effect after a restart"))
}

// drain flushes what is buffered, in dependency order.
func (a *app) drain(ctx context.Context, logger *zap.Logger) error {
	var errs []error
	if a.usage != nil {
		if err := a.usage.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flushing last-used times: %w", err))
		}
		a.usage = nil
	}
	if a.audit != nil {
		if err := a.audit.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("draining audit events: %w", err))
		}
		a.audit = nil
	}
	return errors.Join(errs...)
}

func (a *app) close(logger *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.drain(ctx, logger); err != nil {
		logger.Error("shutdown", zap.Error(err))
	}
	if a.auditDB != nil {
		_ = a.auditDB.Close()
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			logger.Error("closing store", zap.Error(err))
		}
		a.store = nil
	}
}

func buildInfo() prometheus.Collector {
	ver, rev := buildVersion()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "keyproxy_build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": ver, "revision": rev},
	})
	g.Set(1)
	return g
}
