package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// newEchoUpstreamCmd serves a tiny backend that answers with what it
// received, so an operator can see exactly which headers keyproxy forwards.
func newEchoUpstreamCmd(stdout io.Writer) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "echo-upstream",
		Short: "Run a test backend that echoes the request it received (for trying keyproxy)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv := &http.Server{
				Addr:              listen,
				Handler:           http.HandlerFunc(echo),
				ReadHeaderTimeout: 5 * time.Second,
				ReadTimeout:       30 * time.Second,
				WriteTimeout:      30 * time.Second,
				IdleTimeout:       120 * time.Second,
			}
			fmt.Fprintf(stdout, "echo upstream listening on %s\n", listen)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go func() {
				<-ctx.Done()
				_ = srv.Close()
			}()
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:3000", "address to listen on")
	return cmd
}

func echo(w http.ResponseWriter, r *http.Request) {
	headers := map[string]string{}
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		headers[name] = r.Header.Get(name)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string]any{"method": r.Method, "path": r.URL.RequestURI(), "headers": headers})
}
