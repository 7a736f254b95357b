package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"

	"go.uber.org/zap"

	"github.com/wevion/keyproxy/internal/problem"
)

// Stable problem codes of the data plane (DESIGN.md, "Data plane").
const (
	CodeMissingAPIKey        = "missing_api_key"
	CodeInvalidAPIKey        = "invalid_api_key"
	CodeSubscriptionInactive = "subscription_inactive"
	CodeRateLimited          = "rate_limited"
	CodeAuthUnavailable      = "auth_unavailable"
	CodeUpstreamUnavailable  = "upstream_unavailable"
	CodeUpstreamTimeout      = "upstream_timeout"
	// CodeAuthThrottled: the client presented too many invalid keys.
	CodeAuthThrottled = "auth_throttled"
	// CodeMethodNotAllowed: CONNECT and TRACE are never forwarded.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeInvalidRequestBody: the client's body could not be read (a
	// malformed chunk, or the client stopped sending) while forwarding it.
	CodeInvalidRequestBody = "invalid_request_body"
)

// preparedProblem is a problem rendered at start-up up to its request_id,
// with the response headers that go with it.
type preparedProblem struct {
	outcome outcome
	status  int
	head    []byte // the JSON document without request_id and closing brace
	wwwAuth []string
	allow   []string
}

type problems struct {
	missing, invalid, inactive, rateLimited, unavailable, badGateway, timeout, throttled, method, badBody preparedProblem
	// clientGone has no body: the client left, nothing is written.
	clientGone                              preparedProblem
	contentType, noStore, nosniff, retryOne []string
}

func newProblems() problems {
	prep := func(o outcome, status int, code, title, detail string, wwwAuth string) preparedProblem {
		b := problem.Problem{Status: status, Code: code, Title: title, Detail: detail}.AppendJSON(nil)
		p := preparedProblem{outcome: o, status: status, head: b[:len(b)-len("}\n")]}
		if wwwAuth != "" {
			p.wwwAuth = []string{wwwAuth}
		}
		return p
	}
	return problems{
		// One title and detail for every refused key, so responses do not
		// tell an unknown key from a revoked or expired one.
		missing: prep(outcomeMissingKey, http.StatusUnauthorized, CodeMissingAPIKey, "Missing API key",
			"Send the API key in the Authorization header as: Bearer <key>.", `Bearer realm="wevion"`),
		invalid: prep(outcomeInvalidKey, http.StatusUnauthorized, CodeInvalidAPIKey, "Invalid API key",
			"The API key is not valid.", `Bearer realm="wevion", error="invalid_token"`),
		inactive: prep(outcomeInactiveTeam, http.StatusForbidden, CodeSubscriptionInactive, "Subscription inactive",
			"The team's subscription is not active.", ""),
		rateLimited: prep(outcomeRateLimited, http.StatusTooManyRequests, CodeRateLimited, "Rate limit exceeded",
			"Too many requests for this user; retry after the number of seconds in Retry-After.", ""),
		unavailable: prep(outcomeUnavailable, http.StatusServiceUnavailable, CodeAuthUnavailable, "Authentication unavailable",
			"The API key cannot be verified right now; retry shortly.", ""),
		badGateway: prep(outcomeUpstreamError, http.StatusBadGateway, CodeUpstreamUnavailable, "Upstream unavailable",
			"The backend could not be reached.", ""),
		timeout: prep(outcomeUpstreamError, http.StatusGatewayTimeout, CodeUpstreamTimeout, "Upstream timeout",
			"The backend did not answer in time.", ""),
		throttled: prep(outcomeThrottled, http.StatusTooManyRequests, CodeAuthThrottled, "Too many invalid API keys",
			"Too many invalid API keys came from this address; retry after the number of seconds in Retry-After.", ""),
		method: methodProblem(prep),
		badBody: prep(outcomeBadBody, http.StatusBadRequest, CodeInvalidRequestBody, "Invalid request body",
			"The request body could not be read; check its framing (Content-Length or chunked encoding).", ""),
		clientGone:  preparedProblem{outcome: outcomeUnavailable, status: statusClientClosed},
		contentType: []string{"application/problem+json"},
		noStore:     []string{"no-store"},
		nosniff:     []string{"nosniff"},
		retryOne:    []string{"1"},
	}
}

// forwardedMethods is the Allow header of the 405: the methods a backend
// API commonly serves. Any other method than CONNECT and TRACE is
// forwarded, so the backend has the last word.
const forwardedMethods = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"

func methodProblem(prep func(outcome, int, string, string, string, string) preparedProblem) preparedProblem {
	p := prep(outcomeMethodRefused, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed",
		"CONNECT and TRACE are not forwarded.", "")
	p.allow = []string{forwardedMethods}
	return p
}

// refuse answers with a prepared problem, and with the rate-limit headers
// when the limiter was asked. The shared header slices are never modified
// after start-up, only assigned.
func (h *Handler) refuse(w http.ResponseWriter, e *exchange, p *preparedProblem) {
	e.outcome, e.status = p.outcome, int32(p.status)
	if p.head == nil {
		return
	}
	hdr := w.Header()
	hdr["X-Request-Id"] = e.one(hvRequestID)
	hdr["Content-Type"] = h.problems.contentType
	hdr["Cache-Control"] = h.problems.noStore
	hdr["X-Content-Type-Options"] = h.problems.nosniff
	if p.wwwAuth != nil {
		hdr["Www-Authenticate"] = p.wwwAuth
	}
	if p.allow != nil {
		hdr["Allow"] = p.allow
	}
	h.writeRateLimit(hdr, e)
	switch p.outcome {
	case outcomeUnavailable:
		hdr["Retry-After"] = h.problems.retryOne
	case outcomeRateLimited:
		hdr["Retry-After"] = []string{retryAfter(e.rl.RetryAfter)}
	case outcomeThrottled:
		hdr["Retry-After"] = []string{retryAfter(e.throttleWait)}
	}
	w.WriteHeader(p.status)
	// The request id is [A-Za-z0-9._:-] only, so it needs no escaping.
	b := make([]byte, 0, len(p.head)+len(e.requestID())+len(`,"request_id":""}`)+1)
	b = append(b, p.head...)
	b = append(b, `,"request_id":"`...)
	b = append(b, e.requestID()...)
	b = append(b, "\"}\n"...)
	_, _ = w.Write(b)
}

// modifyResponse runs on the backend's answer before it is copied: it
// stamps the request id and rate-limit headers and drops any the backend
// sent, so the client sees one of each. Ours go straight into the client's
// header map, to which the ReverseProxy then adds the backend's: set on
// the backend's map they would grow it past its first eight entries and
// be copied a second time.
func (h *Handler) modifyResponse(res *http.Response) error {
	e := exchangeFrom(res.Request.Context())
	if e == nil {
		return nil
	}
	h.m.upstream.Observe(e.sinceUpstream().Seconds())
	e.status = int32(res.StatusCode)
	out := e.w.Header()
	out["X-Request-Id"] = e.one(hvRequestID)
	h.writeRateLimit(out, e)
	// Walk the smaller map: a backend's few headers, usually.
	if len(res.Header) < len(out) {
		for name := range res.Header {
			if _, ours := out[name]; ours {
				delete(res.Header, name)
			}
		}
	} else {
		for name := range out {
			delete(res.Header, name)
		}
	}
	return nil
}

// upstreamError is the ReverseProxy's ErrorHandler: the one place upstream
// failures become responses. A client that went away gets nothing (logged
// as 499); a client whose body could not be read gets 400; a timeout is
// 504; anything else is 502.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	e := exchangeFrom(r.Context())
	if e == nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	h.m.upstream.Observe(e.sinceUpstream().Seconds())
	if e.Context.Err() != nil {
		e.status = statusClientClosed // still outcome allowed: it was admitted
		return
	}
	p := &h.problems.badGateway
	switch {
	case e.bodyFailed.Load():
		// The client's body broke, not the backend: say so, and keep
		// the backend's error rate clean of it.
		h.refuse(w, e, &h.problems.badBody)
		return
	case isTimeout(err):
		p = &h.problems.timeout
	}
	h.log.Warn("upstream request failed",
		zap.String("request_id", e.requestID()),
		zap.Int("status", p.status),
		zap.String("error", safeError(err)))
	h.refuse(w, e, p)
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// safeError describes err without a URL: a *url.Error would carry the
// request's query string, where a client may have put a key.
func safeError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
