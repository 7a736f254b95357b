package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/proxy"
	"github.com/wevion/keyproxy/ratelimit"
)

// store is what the process needs of a key store: the contract, its
// schema, and the SQL handle the audit store keeps its table in.
type store interface {
	keystore.Store
	Migrate(ctx context.Context) error
	DB() *sql.DB
}

// limiter is the rate limiter in use (local, or Redis with local fallback).
type limiter interface {
	proxy.Limiter
	SetPolicies(p ratelimit.Policies) error
}

// app is the wired process: everything serve starts and must stop.
type app struct {
	proxy     *proxy.Handler
	admin     http.Handler
	store     store
	dialect   audit.Dialect
	redis     redis.UniversalClient
	cluster   *keystore.Cluster
	resolver  *keystore.Resolver
	audit     *audit.Pipeline
	auditDB   *audit.SQLStore
	usage     *keystore.UsageTracker
	auditFile *os.File
	limiter   limiter
	local     *ratelimit.Local
	shared    *ratelimit.Redis   // nil without Redis
	stop      context.CancelFunc // ends background loops
	reloads   *reloadMetrics
}

// noteSQLitePageSize tells the operator of a store created before 16 KiB
// pages that it keeps its smaller ones, which SQLite cannot change while
// keyproxy runs: with a million keys a lookup that misses the cache reads
// one more page. It starts and serves as before.
func noteSQLitePageSize(ctx context.Context, s *keystore.SQLite, logger *zap.Logger) {
	n, err := s.PageSize(ctx)
	if err != nil || n >= keystore.SQLitePageSize {
		return
	}
	logger.Info("the SQLite store has pages smaller than a new store's; README (Configuration) converts it offline",
		zap.Int("page_size", n), zap.Int("new_store_page_size", keystore.SQLitePageSize))
}

// openStore opens the configured store of record and applies migrations.
func openStore(ctx context.Context, cfg *Config) (store, audit.Dialect, error) {
	switch cfg.Store.Driver {
	case "postgres":
		s, err := keystore.OpenPostgres(ctx, cfg.Store.DSN, keystore.PostgresOptions{MaxConns: int32(cfg.Store.MaxConns)})
		if err != nil {
			return nil, 0, fmt.Errorf("store.dsn: opening PostgreSQL: %w", err)
		}
		return s, audit.Postgres, nil
	default:
		s, err := keystore.OpenSQLiteWith(ctx, cfg.Store.DSN, keystore.SQLiteOptions{MmapSize: cfg.Store.MmapBytes})
		if err != nil {
			return nil, 0, fmt.Errorf("store.dsn: opening SQLite %s: %w", cfg.Store.DSN, err)
		}
		return s, audit.SQLite, nil
	}
}

func build(ctx context.Context, cfg *Config, logger *zap.Logger) (_ *app, err error) {
	a := &app{}
	defer func() {
		if err != nil {
			a.close(logger)
		}
	}()
	bg, stop := context.WithCancel(context.Background())
	a.stop = stop
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
	if a.store, a.dialect, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	if sq, ok := a.store.(*keystore.SQLite); ok {
		noteSQLitePageSize(ctx, sq, logger)
	}
	reg.MustRegister(newStoreCollector(a.store, logger.Named("metrics")))
	if a.reloads, err = newReloadMetrics(reg, time.Now()); err != nil {
		return nil, err
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

	// Resolution: in-process cache → (Redis cache →) store.
	var backend keystore.Backend = a.store
	var redisCache *keystore.RedisCache
	if cfg.redisEnabled() {
		a.redis = newRedisClient(cfg)
		// go-redis's own messages (pool dial failures) otherwise go to
		// stderr as plain text, between the JSON lines. Its logger is
		// the library's one global; the last app built sets it.
		redis.SetLogger(&redisLog{log: logger.Named("redis")})
		redisCache, err = keystore.NewRedisCache(a.redis, a.store, keystore.RedisCacheOptions{
			TTL: cfg.Cache.TTL, Timeout: cfg.Redis.Timeout, Logger: logger.Named("redis-cache"), Registerer: reg,
		})
		if err != nil {
			return nil, err
		}
		backend = redisCache
	}
	resolver, err := keystore.NewResolver(backend, keystore.ResolverOptions{
		TTL: cfg.Cache.TTL, NegativeTTL: cfg.Cache.NegativeTTL, MaxEntries: cfg.Cache.MaxEntries, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	a.resolver = resolver
	var evictor admin.Evictor = resolver
	var readiness []admin.ReadinessCheck
	if a.redis != nil {
		a.cluster, err = keystore.NewCluster(a.redis, resolver, redisCache, keystore.ClusterOptions{
			AckTimeout: cfg.Revocation.AckTimeout, Timeout: cfg.Redis.Timeout,
			Logger: logger.Named("cluster"), Registerer: reg,
		})
		if err != nil {
			return nil, err
		}
		// A replica that cannot reach Redis at start still serves: keys
		// resolve from the store and the cluster joins when Redis is back.
		if err := a.cluster.Start(bg); err != nil {
			logger.Warn("redis unreachable at start; serving from the store until it returns", zap.Error(err))
		}
		evictor = a.cluster
		readiness = append(readiness, admin.ReadinessCheck{Name: "redis", Check: a.cluster.Ping, Degrades: true})
	}

	if a.audit, err = a.buildAudit(bg, cfg, logger, reg); err != nil {
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
		AdminTokens:     tokens,
		Resolver:        resolver,
		Recorder:        a.audit,
		Usage:           a.usage,
		Logger:          logger.Named("access"),
		AccessLog:       cfg.accessLog(),
		Registerer:      reg,
	}
	if cfg.RateLimit.Enabled {
		local := ratelimit.NewLocal(policies(cfg), ratelimit.LocalOptions{Registerer: reg})
		a.local, a.limiter = local, local
		if a.redis != nil {
			o := ratelimit.RedisOptions{Timeout: cfg.Redis.Timeout, Logger: logger.Named("ratelimit"), Registerer: reg}
			if !cfg.RateLimit.LocalShare {
				o.ShareDivisor = -1
			}
			a.shared = ratelimit.NewRedis(a.redis, policies(cfg), local, o)
			a.limiter = a.shared
		}
		pcfg.Limiter = a.limiter
		pcfg.RateLimitHeaders = (*ratelimit.HeaderValues).Write
	}
	if err := hardenProxy(cfg, &pcfg); err != nil {
		return nil, err
	}
	if a.proxy, err = proxy.New(pcfg); err != nil {
		return nil, err
	}

	acfg := admin.Config{
		Store:            a.store,
		Evictor:          evictor,
		Recorder:         a.audit,
		Format:           format,
		Tokens:           tokens,
		CreatorRoles:     cfg.Keys.CreatorRoles,
		MaxActivePerTeam: cfg.Keys.MaxActivePerTeam,
		MaxBodyBytes:     cfg.Admin.MaxBodyBytes,
		Readiness:        readiness,
		Logger:           logger.Named("admin"),
		Registerer:       reg,
		Metrics:          promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
	}
	if a.auditDB != nil {
		acfg.Audit = a.auditDB
	}
	if acfg.SecretScanning, err = secretScanning(cfg, a.store); err != nil {
		return nil, err
	}
	if a.admin, err = admin.New(acfg); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *app) buildAudit(bg context.Context, cfg *Config, logger *zap.Logger, reg prometheus.Registerer) (*audit.Pipeline, error) {
	// The log sink writes to the process log, or one event per line to
	// audit.file; it is also where events spill when another sink fails.
	var logSink *audit.LogSink
	if cfg.Audit.File != "" {
		f, err := os.OpenFile(cfg.Audit.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit.file: %w", err)
		}
		a.auditFile = f
		logSink = audit.NewEventLogSink(zapcore.AddSync(f))
	} else {
		logSink = audit.NewLogSink(logger.Named("audit"))
	}
	// The SQL store answers GET /admin/v1/audit even when it is not a sink
	// (it then returns what earlier runs stored).
	s, err := audit.NewSQLStore(a.store.DB(), a.dialect, audit.StoreOptions{Retention: cfg.Audit.Retention, Logger: logger.Named("audit-store")})
	if err != nil {
		return nil, fmt.Errorf("audit store: %w", err)
	}
	a.auditDB = s
	var sinks []audit.Sink
	for _, name := range cfg.Audit.Sinks {
		switch name {
		case "log":
			sinks = append(sinks, logSink)
		case "store":
			s.Start(bg) // retention purge
			sinks = append(sinks, s)
		case "redis":
			sinks = append(sinks, audit.NewRedisSink(a.redis, audit.RedisSinkOptions{}))
		}
	}
	return audit.NewPipeline(audit.Options{
		// A batch of 1024 events is one segment of the SQLite store, one
		// commit; larger ones were split into as many commits anyway. The
		// collector scans a batch's whole backing array at every cycle, its
		// unused part too, and the pipeline holds several (the one
		// filling, those being written, up to four free): at 4096 events,
		// 1.1 MiB each, most of it empty pointer slots; p99 at half load
		// was 1.2 ms higher with only the store sink (README, "Audit
		// batches of 1024").
		QueueSize: cfg.Audit.QueueSize, BatchSize: 1024, MaxWait: cfg.Audit.MaxWait, Spill: logSink,
		Logger: logger.Named("audit"), Registerer: reg,
	}, sinks...)
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
	if a.proxy != nil {
		a.proxy.CloseIdleConnections()
	}
	if a.cluster != nil {
		if err := a.cluster.Close(); err != nil {
			logger.Warn("leaving the cluster", zap.Error(err))
		}
	}
	if a.resolver != nil {
		a.resolver.Close()
	}
	if a.stop != nil {
		a.stop()
	}
	if a.shared != nil {
		a.shared.Close() // sends the decisions already queued: before a.redis closes
	}
	if a.local != nil {
		a.local.Close()
	}
	if a.auditDB != nil {
		_ = a.auditDB.Close()
	}
	if a.redis != nil {
		_ = a.redis.Close()
	}
	if a.auditFile != nil {
		_ = a.auditFile.Sync()
		_ = a.auditFile.Close()
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
