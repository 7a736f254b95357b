// Package admin serves the management API on its own listener: keys, users,
// teams and audit queries under /admin/v1 (admin bearer token required), and
// /healthz, /readyz and /metrics for operators (no token).
package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// Store is the part of the store of record the admin API uses.
type Store interface {
	CreateKey(ctx context.Context, k keystore.NewKey) (keystore.Key, error)
	GetKey(ctx context.Context, id string) (keystore.Key, error)
	ListKeys(ctx context.Context, f keystore.KeyFilter) ([]keystore.Key, error)
	UpdateKey(ctx context.Context, id string, u keystore.KeyUpdate) (keystore.Key, error)
	RevokeKey(ctx context.Context, id string, at time.Time) (keystore.Key, error)
	PutUser(ctx context.Context, u keystore.User) (keystore.UserChange, error)
	PutTeam(ctx context.Context, t keystore.Team) (keystore.Team, []keystore.Hash, error)
	Ping(ctx context.Context) error
}

// Evictor drops cached identities after a change, on every replica it
// reaches, and says how many replicas confirmed out of how many it knows.
type Evictor interface {
	Evict(ctx context.Context, hashes []keystore.Hash) (confirmed, replicas int)
}

// Recorder receives one audit event per successful admin action.
type Recorder interface {
	Record(audit.Event)
}

// AuditQuerier answers GET /admin/v1/audit.
type AuditQuerier interface {
	Query(ctx context.Context, q audit.Query) (audit.Page, error)
}

// ReadinessCheck is one extra condition of /readyz (the store is always checked).
type ReadinessCheck struct {
	Name  string
	Check func(ctx context.Context) error
	// Degrades marks a dependency the replica can serve without (Redis:
	// keys then resolve from the store). Its failure is reported in the
	// body as "degraded" but keeps /readyz at 200, so that a Redis outage
	// does not make the load balancer drop every replica at once.
	Degrades bool
}

// Config wires the handler. Store, Evictor and Format are required.
type Config struct {
	Store   Store
	Evictor Evictor
	// Recorder is optional: nil records nothing.
	Recorder Recorder
	// Audit is optional: nil makes GET /admin/v1/audit answer 501.
	Audit AuditQuerier
	// Format generates new keys (keys.prefix).
	Format keystore.Format
	// Tokens are the admin bearer tokens (admin.tokens). Each must be at
	// least 16 characters without whitespace. None configured: every
	// /admin/v1 call is refused (fail closed).
	Tokens []string
	// CreatorRoles may create keys (keys.creator_roles); default owner,
	// admin, super_admin.
	CreatorRoles []string
	// MaxActivePerTeam bounds a team's active keys (keys.max_active_per_team);
	// default 10.
	MaxActivePerTeam int
	// MaxBodyBytes bounds a request body; default 64 KiB. Larger bodies get
	// 400 invalid_request, at once when Content-Length announces more.
	MaxBodyBytes int64
	// Readiness adds checks to /readyz (Redis, for instance).
	Readiness []ReadinessCheck
	// Logger gets one line per request; nil logs nothing.
	Logger *zap.Logger
	// Registerer receives the admin metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock for stored times; default time.Now.
	Now func() time.Time
	// Metrics is served at /metrics without a token; nil answers 404.
	Metrics http.Handler
	// SecretScanning, when set, serves POST /github/secret-scanning (no
	// admin token: GitHub's signature authenticates the report).
	SecretScanning *SecretScanning
}

const (
	defaultMaxActivePerTeam = 10
	defaultMaxBodyBytes     = 64 << 10
	minTokenLen             = 16
	// mutationTimeout bounds a change and its cache eviction, which run
	// detached from the client so a disconnect cannot leave a committed
	// change with stale caches.
	mutationTimeout = 10 * time.Second
	readyTimeout    = 2 * time.Second
)

// Handler is the admin API's http.Handler.
type Handler struct {
	store        Store
	evictor      Evictor
	recorder     Recorder
	audit        AuditQuerier
	format       keystore.Format
	redact       keystore.Redactor // keys and admin tokens, for logs and audit events
	tokens       [][sha256.Size]byte
	creatorRoles map[string]bool
	maxActive    int
	maxBody      int64
	readiness    []ReadinessCheck
	log          *zap.Logger
	now          func() time.Time
	metricsH     http.Handler
	scanner      *secretScanner
	metrics      *metrics
	mux          *http.ServeMux
}

// New checks cfg, fills in defaults and registers the metrics.
func New(cfg Config) (*Handler, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("admin: Store is required"))
	}
	if cfg.Evictor == nil {
		errs = append(errs, errors.New("admin: Evictor is required (a change must reach the caches)"))
	}
	if cfg.Format.Prefix() == "" {
		errs = append(errs, errors.New("admin: Format is required (keystore.NewFormat)"))
	}
	h := &Handler{
		store:     cfg.Store,
		evictor:   cfg.Evictor,
		recorder:  cfg.Recorder,
		audit:     cfg.Audit,
		format:    cfg.Format,
		maxActive: cfg.MaxActivePerTeam,
		maxBody:   cfg.MaxBodyBytes,
		log:       cfg.Logger,
		now:       cfg.Now,
		metricsH:  cfg.Metrics,
	}
	for i, t := range cfg.Tokens {
		if len(t) < minTokenLen || strings.ContainsFunc(t, isSpaceOrControl) {
			// The token itself is never echoed, only its position.
			errs = append(errs, fmt.Errorf("admin: admin.tokens[%d] must be at least %d characters without whitespace", i, minTokenLen))
			continue
		}
		h.tokens = append(h.tokens, sha256.Sum256([]byte(t)))
	}
	h.redact = keystore.NewRedactor(cfg.Format, cfg.Tokens)
	roles := cfg.CreatorRoles
	if len(roles) == 0 {
		roles = []string{"owner", "admin", "super_admin"}
	}
	h.creatorRoles = make(map[string]bool, len(roles))
	for _, r := range roles {
		if !validRole(r) {
			errs = append(errs, fmt.Errorf("admin: keys.creator_roles: %q is not a role (1-64 of [a-z0-9_])", r))
		}
		h.creatorRoles[r] = true
	}
	switch {
	case h.maxActive == 0:
		h.maxActive = defaultMaxActivePerTeam
	case h.maxActive < 0:
		errs = append(errs, fmt.Errorf("admin: keys.max_active_per_team must be positive, got %d", h.maxActive))
	}
	switch {
	case h.maxBody == 0:
		h.maxBody = defaultMaxBodyBytes
	case h.maxBody < 0:
		errs = append(errs, fmt.Errorf("admin: MaxBodyBytes must be positive, got %d", h.maxBody))
	}
	for i, c := range cfg.Readiness {
		if c.Name == "" || c.Check == nil {
			errs = append(errs, fmt.Errorf("admin: Readiness[%d] needs a Name and a Check", i))
		}
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.now == nil {
		h.now = time.Now
	}
	scanner, err := newSecretScanner(cfg.SecretScanning)
	if err != nil {
		errs = append(errs, err)
	}
	h.scanner = scanner
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	h.readiness = append([]ReadinessCheck{{Name: "store", Check: cfg.Store.Ping}}, cfg.Readiness...)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	if len(h.tokens) == 0 {
		h.log.Warn("admin: no admin tokens configured; every /admin/v1 call will be refused (set admin.tokens or KEYPROXY_ADMIN_TOKENS)")
	}
	h.mux = h.routes()
	return h, nil
}

// route is one path and the handler of each method it accepts.
type route struct {
	path    string
	methods map[string]http.HandlerFunc
}

func (h *Handler) routes() *http.ServeMux {
	table := []route{
		{"/admin/v1/keys", map[string]http.HandlerFunc{http.MethodPost: h.createKey, http.MethodGet: h.listKeys}},
		{"/admin/v1/keys/{id}", map[string]http.HandlerFunc{http.MethodGet: h.getKey, http.MethodPatch: h.patchKey, http.MethodDelete: h.revokeKey}},
		{"/admin/v1/users/{user_id}", map[string]http.HandlerFunc{http.MethodPut: h.putUser}},
		{"/admin/v1/teams/{team_id}", map[string]http.HandlerFunc{http.MethodPut: h.putTeam}},
		{"/admin/v1/audit", map[string]http.HandlerFunc{http.MethodGet: h.queryAudit}},
		{"/healthz", map[string]http.HandlerFunc{http.MethodGet: h.healthz}},
		{"/readyz", map[string]http.HandlerFunc{http.MethodGet: h.readyz}},
		{"/metrics", map[string]http.HandlerFunc{http.MethodGet: h.serveMetrics}},
	}
	if h.scanner != nil {
		table = append(table, route{SecretScanningPath, map[string]http.HandlerFunc{http.MethodPost: h.secretScanningReport}})
	}
	mux := http.NewServeMux()
	for _, rt := range table {
		var allow []string
		for method, fn := range rt.methods {
			mux.HandleFunc(method+" "+rt.path, fn)
			allow = append(allow, method)
			if method == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
		// The method-less pattern is less specific than the method ones, so
		// it only sees the other methods: a 405 problem instead of the mux's
		// plain-text one.
		mux.HandleFunc(rt.path, methodNotAllowed(sortedJoin(allow)))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, r, errNotFound)
	})
	return mux
}

// ServeHTTP authenticates /admin requests, dispatches, then logs and counts
// the exchange.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	x := &exchange{requestID: h.requestID(r.Header.Get("X-Request-Id")), clientIP: clientIP(r.RemoteAddr), started: started, redact: h.redact}
	sw := &statusWriter{ResponseWriter: w}
	sw.Header().Set("X-Request-Id", x.requestID)
	limit := h.maxBody
	if h.scanner != nil && r.URL.Path == SecretScanningPath {
		limit = h.scanner.maxBody
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	r = r.WithContext(withExchange(r.Context(), x))

	_, pattern := h.mux.Handler(r)
	// Both the decoded path and the route decide, so no spelling of a path
	// (percent-encoding, say) reaches an admin handler without a token.
	admin := isAdminPath(r.URL.Path) || strings.Contains(pattern, "/admin/")
	if admin {
		sw.Header().Set("Cache-Control", "no-store")
	}
	switch {
	case admin && !h.authenticate(sw, r):
	case admin && !x.setActor(r.Header.Values("X-Actor-Id"), h.redact):
		fail(sw, r, badRequest("X-Actor-Id must be one value of at most 128 printable characters"))
	case r.ContentLength > limit:
		// Refused before reading: a client announcing more than we accept
		// must not hold the connection while it sends (or never sends) it.
		fail(sw, r, bodyTooLarge(r, limit))
	default:
		h.mux.ServeHTTP(sw, r)
	}
	if admin {
		h.recordFailure(r, sw.status(), x)
	}
	// A leak report is as notable as an admin call: log it at the same level.
	h.observe(r, sw, x, pattern, admin || r.URL.Path == SecretScanningPath, time.Since(started))
}

func isAdminPath(p string) bool { return p == "/admin" || strings.HasPrefix(p, "/admin/") }
