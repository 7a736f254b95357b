package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

func newServeCmd(environ []string) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy (data plane) and the admin API",
		Long: `Run the proxy and the admin API. With no --config, keyproxy runs on its
built-in defaults: proxy on :8080 in front of http://127.0.0.1:3000, admin API
on 127.0.0.1:9090, keys in ./keyproxy.db (SQLite). Every setting can be
overridden by KEYPROXY_<PATH> (e.g. KEYPROXY_UPSTREAM_URL).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadConfig(file, environ)
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := func() (*Config, error) { return LoadConfig(file, environ) }
			return serve(ctx, cfg, reload, os.Stderr, hup, nil)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "YAML configuration file (default: built-in defaults)")
	return cmd
}

// listeners lets tests pass pre-opened sockets; nil opens cfg's addresses.
type listeners struct{ proxy, admin net.Listener }

// serve runs until ctx ends, then drains in-flight requests, flushes the
// audit pipeline and closes the store.
func serve(ctx context.Context, cfg *Config, reloadCfg func() (*Config, error), logOut io.Writer, hup <-chan os.Signal, ls *listeners) error {
	logger, level, stopLog, err := newLogger(cfg.Log.Level, cfg.Log.Format, logOut, cfg.Log.FlushInterval)
	if err != nil {
		return usageError{err}
	}
	defer stopLog()

	app, err := build(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer app.close(logger)

	if ls == nil {
		ls = &listeners{}
	}
	if ls.proxy == nil {
		if ls.proxy, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("listen (%s): %w", cfg.Listen, err)
		}
	}
	if ls.admin == nil {
		if ls.admin, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ls.proxy.Close()
			return fmt.Errorf("admin.listen (%s): %w", cfg.Admin.Listen, err)
		}
	}
	proxySrv := newServer(cfg, app.proxy, logger.Named("http"))
	adminSrv := newServer(cfg, app.admin, logger.Named("admin-http"))
	adminSrv.WriteTimeout = 30 * time.Second
	certs, err := configureTLS(cfg, proxySrv, adminSrv, logger.Named("tls"))
	if err != nil {
		ls.proxy.Close()
		ls.admin.Close()
		return err
	}

	errc := make(chan error, 2)
	go func() { errc <- serveOn(proxySrv, ls.proxy) }()
	go func() { errc <- serveOn(adminSrv, ls.admin) }()
	logger.Info("keyproxy started",
		zap.String("listen", ls.proxy.Addr().String()),
		zap.String("admin_listen", ls.admin.Addr().String()),
		zap.String("upstream", cfg.Upstream.URL),
		zap.String("store", cfg.Store.Driver),
		zap.Bool("redis", cfg.redisEnabled()))

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			certs.reload() // even when the new configuration is refused
			next, err := reloadCfg()
			if err != nil {
				logger.Error("reload refused: configuration invalid; keeping the running one", zap.Error(err))
				app.reloads.record(false, time.Now())
				continue
			}
			app.reload(next, level, logger)
		case err := <-errc:
			runErr = err
			break loop
		}
	}
	logger.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Both listeners stop accepting at once, then drain their in-flight
	// requests within the same deadline: one after the other, the admin
	// listener would accept connections while the proxy drains.
	var wg sync.WaitGroup
	for name, srv := range map[string]*http.Server{"proxy": proxySrv, "admin": adminSrv} {
		wg.Go(func() {
			if err := srv.Shutdown(sctx); err != nil {
				logger.Warn(name+" listener did not drain in time", zap.Error(err))
			}
		})
	}
	wg.Wait()
	if err := app.drain(sctx, logger); err != nil && runErr == nil {
		runErr = err
	}
	logger.Info("stopped")
	return runErr
}

func serveOn(srv *http.Server, l net.Listener) error {
	run := srv.Serve
	if srv.TLSConfig != nil { // configureTLS: certificates come from GetConfigForClient
		run = func(l net.Listener) error { return srv.ServeTLS(l, "", "") }
	}
	if err := run(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newServer applies the timeouts and header limit every listener needs.
func newServer(cfg *Config, h http.Handler, logger *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		ReadTimeout:       cfg.Server.ReadTimeout,
		WriteTimeout:      cfg.Server.WriteTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		MaxHeaderBytes:    netHTTPHeaderLimit(cfg.Server.MaxHeaderBytes),
		ErrorLog:          zap.NewStdLog(logger),
	}
}

// netHTTPHeaderLimit is the http.Server.MaxHeaderBytes that refuses a
// request head (request line and header fields) over limit bytes:
// net/http reads MaxHeaderBytes plus 4096 bytes of slack before it
// answers 431, so the configured figure alone let 20 KB heads through a
// limit of 16 KB. Zero would mean net/http's default of 1 MiB.
func netHTTPHeaderLimit(limit int) int { return max(limit-4096, 1) }
