package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/ratelimit"
)

// statusClientClosed is logged (never written) when the client went away
// before an answer, as nginx does.
const statusClientClosed = 499

// maxUserAgent bounds the user agent kept in an audit event.
const maxUserAgent = 256

// Indexes into exchange.hv, the backing array of the one-value header
// slices this request sets, so setting them costs no allocation each.
const (
	hvUserID = iota
	hvTeamID
	hvRole
	hvKeyID
	hvRequestID
	hvForwardedFor
	hvForwardedHost
	hvForwardedProto
	hvLen
)

// exchange is one request's state. It is also the context of the request
// handed to the ReverseProxy: that is how Rewrite, ModifyResponse and the
// ErrorHandler find it, with one allocation instead of a context.WithValue
// on top of the request copy.
type exchange struct {
	context.Context // the inbound request's

	req   *http.Request
	w     http.ResponseWriter // the client's, for modifyResponse
	start time.Time           // monotonic, for durations
	now   time.Time           // Config.Now at the start, for checks and events
	// upstreamAt is when the round trip began, as an offset from start:
	// a time.Time would take the exchange into the next size class.
	upstreamAt time.Duration
	peer       string // the peer's IP as written in RemoteAddr

	// The byte-sized fields share the id buffer's last word: the exchange
	// stays at 512 bytes, the largest allocation without a malloc header
	// (TestExchangeFitsItsSizeClass).
	idBuf         [generatedIDLen]byte // a generated request id's bytes
	trusted       bool                 // the peer is a trusted proxy
	authenticated bool                 // hv holds the owner's ids and role
	limited       bool                 // rl holds a limiter decision, or a peek
	outcome       outcome

	keyStart     string
	rl           ratelimit.Result
	rlv          ratelimit.HeaderValues
	throttleWait time.Duration
	hv           [hvLen]string // hv[hvRequestID] is the request id
	// spent is the outbound header map of a round trip made inline, which
	// ServeHTTP gives back to the handler's headerMaps.
	spent http.Header

	// body wraps the request body so a read error (a malformed chunk, a
	// client that stops mid-body) is known to be the client's, not the
	// backend's, when the round trip fails.
	body       bodyReader
	bodyFailed atomic.Bool // set by the transport's writer goroutine
	status     int32       // beside bodyFailed: together one word
}

// requestID is the client's X-Request-Id, or one generated for it.
func (e *exchange) requestID() string { return e.hv[hvRequestID] }

// detachedRequestID is requestID in memory of its own. A generated id is
// written into idBuf, and an audit event that pointed there would keep
// the exchange, and the request and response it points to, reachable for
// as long as the event waits in the pipeline's batches: at half load that
// was a third of the live heap, marked by every collection
// (TestEventDoesNotKeepTheExchange). A client's id is a header value,
// already a string of its own.
func (e *exchange) detachedRequestID() string {
	id := e.requestID()
	if len(id) > 0 && unsafe.StringData(id) == &e.idBuf[0] {
		return strings.Clone(id)
	}
	return id
}

// bodyReader notes an error reading the client's body.
type bodyReader struct {
	rc io.ReadCloser
	e  *exchange
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.e.bodyFailed.Store(true)
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

type exchangeKey struct{}

// Value answers exchangeKey with the exchange itself and defers all other
// keys, including context's internal ones, to the inbound context.
func (e *exchange) Value(key any) any {
	if key == (exchangeKey{}) {
		return e
	}
	return e.Context.Value(key)
}

func exchangeFrom(ctx context.Context) *exchange {
	e, _ := ctx.Value(exchangeKey{}).(*exchange)
	return e
}

// sinceUpstream is how long the backend has had the request.
func (e *exchange) sinceUpstream() time.Duration { return time.Since(e.start) - e.upstreamAt }

// authenticate names the key's owner: in the identity headers, the log
// and the audit event. Only these strings of the identity are kept: the
// whole of it would take the exchange past 512 bytes, where an allocation
// carries a header and moves up two size classes.
func (e *exchange) authenticate(id keystore.Identity) {
	e.authenticated = true
	e.hv[hvUserID], e.hv[hvTeamID], e.hv[hvRole], e.hv[hvKeyID] = id.UserID, id.TeamID, id.Role, id.KeyID
}

// nameRefused keeps the ids of a key refused as invalid for its audit
// event and access line, without a role: the request acted as no one, and
// without authenticated, so nothing treats it as admitted.
func (e *exchange) nameRefused(id keystore.Identity) {
	e.hv[hvUserID], e.hv[hvTeamID], e.hv[hvKeyID] = id.UserID, id.TeamID, id.KeyID
}

// one returns hv[i] as a one-element header value that shares e's storage.
func (e *exchange) one(i int) []string { return e.hv[i : i+1 : i+1] }

// finish records the request once, whatever path it took (including the
// ReverseProxy's abort panic when a response body copy fails).
func (h *Handler) finish(e *exchange) {
	h.m.inFlight.Dec()
	d := time.Since(e.start)
	h.m.observe(e.outcome, int(e.status), d)
	// net/http takes any token as a method, a key too.
	method, path := h.redact.Redact(e.req.Method), h.redact.Redact(e.req.URL.Path)
	if h.accessLog {
		if ce := h.log.Check(zap.InfoLevel, "request"); ce != nil {
			ce.Write(zap.Inline(&accessLine{e: e, method: method, path: path, d: d}))
		}
	}
	if h.recorder != nil {
		h.recorder.Record(h.event(e, method, path, d))
	}
}

// accessLine is an access log line's fields, which zap adds to the line
// flat (zap.Inline). zap is handed one field instead of seven: the slice
// it keeps for the call is 64 bytes a request, not 448
// (BenchmarkServeHTTP/keyproxy+access-log).
type accessLine struct {
	e            *exchange
	method, path string // redacted
	d            time.Duration
}

func (l *accessLine) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	e := l.e
	enc.AddString("request_id", e.requestID())
	enc.AddString("key_id", e.hv[hvKeyID])
	enc.AddString("method", l.method)
	enc.AddString("path", l.path)
	enc.AddInt64("status", int64(e.status))
	enc.AddDuration("duration", l.d)
	enc.AddString("outcome", e.outcome.String())
	return nil
}

// event builds the audit event: api.request with the identity once the key
// was admitted (or refused for its team's subscription), auth.failed with
// the key's display start otherwise, and the key's and owner's ids when
// the key is one the store knows (revoked, expired, owner deactivated or
// moved). Never the key, not even one the client put in its path or
// user agent.
func (h *Handler) event(e *exchange, method, path string, d time.Duration) audit.Event {
	ev := audit.Event{
		Time:       e.now.UTC(),
		RequestID:  e.detachedRequestID(),
		Method:     method,
		Path:       path,
		Status:     int(e.status),
		DurationMS: float64(d) / float64(time.Millisecond),
		ClientIP:   h.clientIP(e),
		UserAgent:  truncateUTF8(h.redact.Redact(e.req.UserAgent()), maxUserAgent),
		Outcome:    e.outcome.String(),
	}
	if e.authenticated {
		ev.Type = audit.TypeAPIRequest
		ev.KeyID, ev.UserID, ev.TeamID, ev.Role = e.hv[hvKeyID], e.hv[hvUserID], e.hv[hvTeamID], e.hv[hvRole]
	} else {
		ev.Type = audit.TypeAuthFailed
		ev.KeyStart = e.keyStart
		ev.KeyID, ev.UserID, ev.TeamID = e.hv[hvKeyID], e.hv[hvUserID], e.hv[hvTeamID]
	}
	return ev
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
