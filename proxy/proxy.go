// Package proxy is keyproxy's data plane: it authenticates each request by
// its API key, applies the owner's rate limit, rewrites the headers the
// backend trusts and forwards the request with httputil.ReverseProxy.
//
// Everything that can be is prepared in New: header names, the normalised
// identity prefix, problem bodies and metric children, so a request costs a
// key parse, one resolver and one limiter call and the header rewrite.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/internal/h1"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/ratelimit"
)

// Resolver turns a key hash into the identity it belongs to. It returns
// keystore.ErrNotFound for an unknown key and an error wrapping
// keystore.ErrUnavailable when nothing can answer; any error other than
// ErrNotFound fails closed with 503.
type Resolver interface {
	Resolve(ctx context.Context, h keystore.Hash) (keystore.Identity, error)
}

// Limiter decides whether a user may make one more request.
type Limiter interface {
	Allow(ctx context.Context, userID, role string) ratelimit.Result
}

// limitPeeker is a Limiter that can also report a user's budget without
// spending it (ratelimit's limiters can): a request refused before the
// limiter for its team's subscription still learns its quota.
type limitPeeker interface {
	Peek(ctx context.Context, userID, role string) ratelimit.Result
}

// Recorder receives one audit event per request. It must not block.
type Recorder interface {
	Record(e audit.Event)
}

// UsageTracker notes when a key was last used. It must not block.
type UsageTracker interface {
	Touch(keyID string, at time.Time)
}

// HeaderWriter writes the rate-limit headers of r into h, with the values
// it formats held in v (the request's own, so they cost no allocation of
// their own); (*ratelimit.HeaderValues).Write is one.
type HeaderWriter func(v *ratelimit.HeaderValues, h http.Header, r ratelimit.Result)

// DefaultHeaderPrefix starts the identity headers sent to the backend.
const DefaultHeaderPrefix = "X-Wevion-"

// DefaultUpstreamTimeout bounds the wait for the backend's response headers.
const DefaultUpstreamTimeout = 30 * time.Second

// Config wires a Handler. Upstream, Format and Resolver are required; the
// other hooks are optional and their step is skipped when nil.
type Config struct {
	// Upstream is the backend's base URL (http or https).
	Upstream *url.URL
	// UpstreamTimeout bounds the wait for the backend's response headers
	// (504 upstream_timeout); zero means DefaultUpstreamTimeout. It applies
	// to the transport built by NewTransport, not to a custom Transport.
	UpstreamTimeout time.Duration
	// HeaderPrefix starts the identity headers (<prefix>User-Id, Team-Id,
	// Role, Key-Id); every client header starting with it is removed.
	// Empty means DefaultHeaderPrefix.
	HeaderPrefix string
	// Format parses presented keys before any lookup.
	Format keystore.Format
	// AdminTokens (admin.tokens) are redacted, like keys, from the paths
	// and user agents the access log and the audit trail keep, and a
	// client's X-Request-Id holding one is replaced: a token a client put
	// in a request reaches neither.
	AdminTokens []string
	// TrustedProxies are the peers whose X-Forwarded-* headers are kept
	// (X-Forwarded-For appended to); from any other peer they are replaced.
	TrustedProxies []netip.Prefix
	Resolver       Resolver
	// Limiter, when set, is asked after the key resolved; nil: no limits.
	Limiter Limiter
	// RateLimitHeaders, when set, writes the limiter's result on every
	// authenticated response.
	RateLimitHeaders HeaderWriter
	// InvalidKeyLimit bounds, per client address (IPv6: per /64; behind
	// TrustedProxies: the audited client address), the unknown keys a
	// client may present: keys that pass the format check and that no
	// cache or store knows. Over it, every request from that address is
	// refused with 429 auth_throttled before any lookup, until the budget
	// refills: a flood of random well-formed keys does not become a flood
	// of store queries. Revoked and expired keys do not count: the caches
	// answer for them, and a client retrying a revoked key must not lock
	// out its neighbours behind the same address. Zero: no limit.
	InvalidKeyLimit ratelimit.Limit
	// ThrottleClients bounds the addresses InvalidKeyLimit remembers;
	// zero means DefaultThrottleClients.
	ThrottleClients int
	Recorder        Recorder
	Usage           UsageTracker
	// Transport reaches the backend; nil means NewTransport(UpstreamTimeout)
	// behind an inline HTTP/1.1 transport (internal/h1) for bodyless
	// plain-HTTP requests.
	Transport http.RoundTripper
	// Logger receives upstream errors and, with AccessLog, one line per
	// request. nil: no logging.
	Logger    *zap.Logger
	AccessLog bool
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Now is the clock for expiry checks and event times; nil: time.Now.
	Now func() time.Time
}

// Handler is the data-plane http.Handler.
type Handler struct {
	format    keystore.Format
	redact    keystore.Redactor
	resolver  Resolver
	cached    cachedLookup // nil when the resolver has no in-process cache
	limiter   Limiter
	peeker    limitPeeker // nil when the limiter cannot peek
	rlHeaders HeaderWriter
	throttle  *throttle
	recorder  Recorder
	usage     UsageTracker
	log       *zap.Logger
	accessLog bool
	now       func() time.Time
	realClock bool

	upstream *url.URL
	trusted  []netip.Prefix
	names    headerNames
	ids      *idGenerator
	problems problems
	rp       *httputil.ReverseProxy
	headers  headerMaps // outbound header maps, reused after inline round trips
	m        *metrics
}

// New checks cfg and prepares a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Upstream == nil || cfg.Upstream.Host == "" || (cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https") {
		return nil, errors.New("proxy: Upstream must be an absolute http or https URL")
	}
	if cfg.Resolver == nil {
		return nil, errors.New("proxy: Resolver is required")
	}
	if cfg.Format.Prefix() == "" {
		return nil, errors.New("proxy: Format is required (keystore.NewFormat)")
	}
	if cfg.UpstreamTimeout < 0 {
		return nil, fmt.Errorf("proxy: UpstreamTimeout must not be negative, got %s", cfg.UpstreamTimeout)
	}
	if cfg.UpstreamTimeout == 0 {
		cfg.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if l := cfg.InvalidKeyLimit; l != (ratelimit.Limit{}) && (l.Requests <= 0 || l.Per <= 0 || l.Burst <= 0) {
		return nil, fmt.Errorf("proxy: InvalidKeyLimit %s must be zero or have positive requests, per and burst", l)
	}
	if cfg.HeaderPrefix == "" {
		cfg.HeaderPrefix = DefaultHeaderPrefix
	}
	names, err := newHeaderNames(cfg.HeaderPrefix)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, errors.New("proxy: TrustedProxies holds an invalid prefix")
		}
	}
	ids, err := newIDGenerator()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		format:    cfg.Format,
		redact:    keystore.NewRedactor(cfg.Format, cfg.AdminTokens),
		resolver:  cfg.Resolver,
		limiter:   cfg.Limiter,
		rlHeaders: cfg.RateLimitHeaders,
		throttle:  newThrottle(cfg.InvalidKeyLimit, cfg.ThrottleClients),
		recorder:  cfg.Recorder,
		usage:     cfg.Usage,
		log:       cfg.Logger,
		accessLog: cfg.AccessLog && cfg.Logger != nil,
		now:       cfg.Now,
		upstream:  cfg.Upstream,
		trusted:   normalisePrefixes(cfg.TrustedProxies),
		names:     names,
		ids:       ids,
		problems:  newProblems(),
		m:         m,
	}
	h.cached, _ = cfg.Resolver.(cachedLookup) // decided once, not per throttled request
	// A peek is only for the headers: without them, none is made.
	if cfg.RateLimitHeaders != nil {
		h.peeker, _ = cfg.Limiter.(limitPeeker)
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.now == nil {
		h.now, h.realClock = time.Now, true
	}
	transport := cfg.Transport
	if transport == nil {
		// Bodyless plain-HTTP requests, most API calls, make their round
		// trip on the handler's goroutine; the rest go through net/http.
		transport = h1.New(NewTransport(cfg.UpstreamTimeout))
	}
	if t, ok := transport.(inlineRoundTripper); ok {
		transport = recyclingTransport{t}
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      transport,
		BufferPool:     newBufferPool(),
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.upstreamError,
		ErrorLog:       zap.NewStdLog(h.log),
	}
	return h, nil
}

// ServeHTTP authenticates, limits and forwards one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := h.begin(r)
	h.m.inFlight.Inc()
	defer h.finish(e)
	if _, ok := r.Header["Upgrade"]; ok {
		filterUpgrade(r.Header)
	}
	if p := h.admit(e); p != nil {
		h.refuse(w, e, p)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		e.body = bodyReader{rc: r.Body, e: e}
		r.Body = &e.body
	}
	e.w, e.upstreamAt = w, time.Since(e.start)
	// Without headers, the ReverseProxy's request copy clones none: rewrite
	// builds the outbound header from r's, less the hop-by-hop ones, once.
	in := r.WithContext(e)
	in.Header = nil
	h.rp.ServeHTTP(w, in)
	h.recycle(e)
}

// recycle gives back the outbound header map of a round trip made inline:
// the ReverseProxy has returned, and the transport was done with it.
func (h *Handler) recycle(e *exchange) {
	if e.spent != nil {
		h.headers.put(e.spent)
		e.spent = nil
	}
}

// begin prepares the request's exchange: clocks, request id and peer.
func (h *Handler) begin(r *http.Request) *exchange {
	e := &exchange{Context: r.Context(), req: r, start: time.Now()}
	e.now = e.start
	if !h.realClock {
		e.now = h.now()
	}
	// A client's id is kept for tracing, unless it holds what looks like a
	// key: the id goes into every log line and audit event.
	if v := r.Header["X-Request-Id"]; len(v) == 1 && validRequestID(v[0]) && !strings.Contains(v[0], h.format.Prefix()) && !h.redact.HasSecret(v[0]) {
		e.hv[hvRequestID] = v[0]
	} else {
		e.hv[hvRequestID] = h.ids.next(&e.idBuf)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		e.peer = host
		if len(h.trusted) > 0 {
			e.trusted = h.isTrusted(host)
		}
	}
	return e
}

// retryAfter renders d in whole seconds, rounded up and at least 1, so a
// client that obeys it never retries before a request could succeed.
func retryAfter(d time.Duration) string {
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return strconv.FormatInt(max(s, 1), 10)
}

func (h *Handler) writeRateLimit(hdr http.Header, e *exchange) {
	if e.limited && h.rlHeaders != nil {
		h.rlHeaders(&e.rlv, hdr, e.rl)
	}
}

// CloseIdleConnections closes the transport's idle backend connections
// (at shutdown), when the transport supports it.
func (h *Handler) CloseIdleConnections() {
	if c, ok := h.rp.Transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
