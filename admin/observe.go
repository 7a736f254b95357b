package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/audit"
)

type metrics struct {
	requests    *prometheus.CounterVec
	keysCreated prometheus.Counter
	keysRevoked prometheus.Counter
	scanReports *prometheus.CounterVec
	scanTokens  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_admin_requests_total",
			Help: "Admin listener requests by route pattern and HTTP status code.",
		}, []string{"route", "code"}),
		keysCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyproxy_keys_created_total",
			Help: "API keys created through the admin API.",
		}),
		keysRevoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyproxy_keys_revoked_total",
			Help: "API keys revoked through the admin API: by DELETE, a leak report or their owner's move to another team (repeat revocations not counted).",
		}),
		scanReports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_secret_scanning_reports_total",
			Help: "GitHub secret-scanning reports received, by result (accepted, invalid_signature, invalid_request, failed).",
		}, []string{"result"}),
		scanTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyproxy_secret_scanning_tokens_total",
			Help: "Tokens named by accepted secret-scanning reports, by label (true_positive: one of our keys, now revoked).",
		}, []string{"label"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.keysCreated, m.keysRevoked, m.scanReports, m.scanTokens} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("admin: registering metrics: %w", err)
		}
	}
	return m, nil
}

// statusWriter remembers the status code for the log line and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// observe counts the request and logs one line: Info for /admin calls,
// Debug for probes and scrapes, Error for 5xx. The Authorization header and
// request bodies are never logged.
func (h *Handler) observe(r *http.Request, sw *statusWriter, x *exchange, route string, admin bool, d time.Duration) {
	status := sw.status()
	if route == "" {
		route = "unmatched"
	}
	h.metrics.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	lvl := zapcore.DebugLevel
	switch {
	case status >= 500:
		lvl = zapcore.ErrorLevel
	case admin:
		lvl = zapcore.InfoLevel
	}
	ce := h.log.Check(lvl, "admin request")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("method", h.redact.Redact(r.Method)),
		zap.String("path", h.safePath(r.URL.Path)),
		zap.String("route", route),
		zap.Int("status", status),
		zap.Duration("duration", d),
		zap.String("request_id", x.requestID),
		zap.String("client_ip", x.clientIP),
	}
	if x.actor != "" {
		fields = append(fields, zap.String("actor", x.actor))
	}
	if x.err != nil {
		fields = append(fields, zap.Error(x.err))
	}
	ce.Write(fields...)
}

const (
	maxLoggedPath = 256
	// maxMethod bounds a method in an audit event: the parser takes any
	// token, and a failed request's is recorded too.
	maxMethod = 32
)

// recordFailure records an admin.failed event for an admin request that
// did not succeed and either would have changed something or came
// without a valid token: the trail then shows who tried to create, change
// or revoke what and was refused, and who probes the admin API. Reads
// that fail otherwise are only logged. The handler may have recorded the
// action itself (a DELETE of a revoked key is a 204 with its own event).
func (h *Handler) recordFailure(r *http.Request, status int, x *exchange) {
	if status < 400 || x.recorded {
		return
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		if status != http.StatusUnauthorized {
			return
		}
	}
	ev := x.subject
	ev.Type, ev.Outcome = audit.TypeAdminFailed, x.code
	if ev.Outcome == "" {
		ev.Outcome = "failed"
	}
	h.record(r, status, ev)
}

// safePath keeps a key or an admin token pasted into a URL out of the log,
// and bounds the path's length.
func (h *Handler) safePath(p string) string {
	p = h.redact.Redact(p)
	if len(p) > maxLoggedPath {
		p = strings.ToValidUTF8(p[:maxLoggedPath], "") + "…"
	}
	return p
}

const maxUserAgent = 256

// record completes ev with the request's facts and hands it to the
// recorder. Only successful actions are recorded. An Actor or Outcome ev
// already holds is kept. Keys and admin tokens in the path and user agent
// are redacted (the actor already is, by setActor).
func (h *Handler) record(r *http.Request, status int, ev audit.Event) {
	if h.recorder == nil {
		return
	}
	x := exchangeOf(r)
	x.recorded = true
	ua := h.redact.Redact(r.UserAgent())
	if len(ua) > maxUserAgent {
		ua = strings.ToValidUTF8(ua[:maxUserAgent], "")
	}
	ev.Time = h.now().UTC()
	ev.RequestID = x.requestID
	if ev.Actor == "" {
		ev.Actor = x.actor
	}
	ev.Method = h.redact.Redact(r.Method)
	if len(ev.Method) > maxMethod {
		ev.Method = strings.ToValidUTF8(ev.Method[:maxMethod], "")
	}
	ev.Path = h.safePath(r.URL.Path)
	ev.Status = status
	ev.DurationMS = float64(time.Since(x.started).Microseconds()) / 1000
	ev.ClientIP = x.clientIP
	ev.UserAgent = ua
	if ev.Outcome == "" {
		ev.Outcome = audit.OutcomeSuccess
	}
	h.recorder.Record(ev)
}

// writeJSON sends v; admin responses are small, so it is marshalled first
// and a failure can still become a 500.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail(w, r, fmt.Errorf("encoding response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
