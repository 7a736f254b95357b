package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"

	"go.uber.org/zap"

	"github.com/wevion/keyproxy/keystore"
)

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

type checkResult struct {
	Name   string `json:"name"`
	Status string `json:"status"`           // "ok", "fail" or "degraded"
	Reason string `json:"reason,omitempty"` // "unavailable" (no connection), "timeout", "refused" (answers, refuses writes) or "error"
}

// readyz runs every check at once, each bounded by readyTimeout. The answer
// names the failing check and a coarse reason; /readyz needs no token, so
// the error itself goes to the log only.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	results := make([]checkResult, len(h.readiness))
	var wg sync.WaitGroup
	for i, c := range h.readiness {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			results[i] = checkResult{Name: c.Name, Status: "ok"}
			if err := c.Check(ctx); err != nil {
				results[i].Status, results[i].Reason = "fail", reason(ctx, err)
				if c.Degrades {
					results[i].Status = "degraded"
				}
				h.log.Warn("admin: readiness check failed", zap.String("check", c.Name), zap.Error(err))
			}
		})
	}
	wg.Wait()
	out := struct {
		Status string        `json:"status"`
		Checks []checkResult `json:"checks"`
	}{"ok", results}
	status := http.StatusOK
	for _, res := range results {
		switch {
		case res.Status == "fail":
			out.Status, status = "unavailable", http.StatusServiceUnavailable
		case res.Status == "degraded" && status == http.StatusOK:
			out.Status = "degraded"
		}
	}
	writeJSON(w, r, status, out)
}

// reason tells a server that refused or could not be reached apart from
// one that did not answer in time: the first is down, the second may be
// overloaded, and an operator looks for different causes.
func reason(ctx context.Context, err error) string {
	var dial *net.OpError
	switch {
	case errors.As(err, &dial) && dial.Op == "dial" && !dial.Timeout():
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return "timeout"
	case errors.Is(err, keystore.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, keystore.ErrRedisRefused):
		return "refused"
	}
	return "error"
}

func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if h.metricsH == nil {
		fail(w, r, errNotFound)
		return
	}
	h.metricsH.ServeHTTP(w, r)
}
