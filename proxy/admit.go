package proxy

import (
	"errors"
	"net/http"
	"net/netip"

	"go.uber.org/zap"

	"github.com/wevion/keyproxy/keystore"
)

// admit decides whether the request goes upstream; it returns the problem
// that refuses it, or nil. The order is fixed: method → parse (no I/O) →
// the address's invalid-key budget → resolve → check → limit, and the first
// refusal ends it.
func (h *Handler) admit(e *exchange) *preparedProblem {
	// CONNECT would open a tunnel past every later check, and TRACE echoes
	// the request back with the identity headers we add.
	if m := e.req.Method; m == http.MethodConnect || m == http.MethodTrace {
		return &h.problems.method
	}
	token, st := bearerValue(e.req.Header["Authorization"])
	switch st {
	case tokenMissing:
		return &h.problems.missing
	case tokenInvalid:
		return &h.problems.invalid
	}
	// A well-formed key is base62 throughout, so only a token that fails
	// to parse is scanned for what bearerToken refuses.
	parsed, err := h.format.Parse(token)
	if err != nil {
		if plainToken(token) {
			e.keyStart = h.format.DisplayStart(token)
		}
		return &h.problems.invalid
	}
	e.keyStart = parsed.Start
	var client netip.Addr
	var id keystore.Identity
	var cached bool
	if h.throttle != nil {
		if client = h.throttleKey(e); client.IsValid() {
			if wait, blocked := h.throttle.blocked(client, e.start); blocked {
				// Keys this replica already knows cost no lookup: other
				// clients behind the flooder's address keep working.
				if id, cached = h.cachedIdentity(parsed.Hash); !cached {
					e.throttleWait = wait
					return &h.problems.throttled
				}
			}
		}
	}
	ctx := e.req.Context()
	if !cached {
		id, err = h.resolver.Resolve(ctx, parsed.Hash)
	}
	switch {
	case err == nil:
	case errors.Is(err, keystore.ErrNotFound):
		if client.IsValid() {
			h.throttle.fail(client, e.start)
		}
		return &h.problems.invalid
	case ctx.Err() != nil:
		return &h.problems.clientGone
	default:
		h.log.Warn("key resolution failed", zap.String("request_id", e.requestID()), zap.Error(err))
		return &h.problems.unavailable
	}
	switch id.Check(e.now) {
	case keystore.StatusValid:
	case keystore.StatusTeamInactive:
		e.authenticate(id)
		// Authenticated, so its answer carries the rate-limit headers too,
		// read without spending: only admitted requests do.
		if h.peeker != nil {
			e.rl, e.limited = h.peeker.Peek(ctx, id.UserID, id.Role), true
		}
		return &h.problems.inactive
	default:
		// The client learns nothing, but the trail names the key: attempts
		// with a revoked or expired key (a leak, a client not yet moved to
		// its replacement) show up in its team's audit and its key_id query.
		e.nameRefused(id)
		h.m.countRefused(id.Refusal(e.now))
		return &h.problems.invalid
	}
	e.authenticate(id)
	if h.limiter != nil {
		e.rl, e.limited = h.limiter.Allow(ctx, id.UserID, id.Role), true
		if !e.rl.Allowed {
			return &h.problems.rateLimited
		}
	}
	if h.usage != nil {
		h.usage.Touch(id.KeyID, e.now)
	}
	e.outcome = outcomeAllowed
	return nil
}

// cachedLookup is what a resolver with an in-process cache offers: a
// lookup without I/O (keystore.Resolver has it).
type cachedLookup interface {
	Cached(h keystore.Hash) (keystore.Identity, bool)
}

func (h *Handler) cachedIdentity(hash keystore.Hash) (keystore.Identity, bool) {
	if h.cached == nil {
		return keystore.Identity{}, false
	}
	return h.cached.Cached(hash)
}

// throttleKey is the address the throttle counts the request against: the
// audited client address; invalid when there is none (a Unix socket).
func (h *Handler) throttleKey(e *exchange) netip.Addr {
	ip := e.peer
	if e.trusted {
		ip = h.clientIP(e)
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Addr{}
	}
	return throttleKey(a)
}
