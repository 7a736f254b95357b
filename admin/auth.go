package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/wevion/keyproxy/audit"
	"unicode/utf8"

	"github.com/wevion/keyproxy/keystore"
)

const (
	adminChallenge = `Bearer realm="keyproxy-admin"`
	maxActorLen    = 128
	maxRequestID   = 128
)

// authenticate admits a request carrying one of the admin tokens and
// otherwise answers 401. Tokens are compared as SHA-256 digests, so every
// comparison takes the same time whatever the lengths, and every configured
// token is compared, so the timing does not reveal which one matched.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) bool {
	token, ok := bearer(r.Header.Values("Authorization"))
	if ok && h.tokenMatches(token) {
		return true
	}
	challenge := adminChallenge
	if ok {
		challenge += `, error="invalid_token"` // RFC 6750 §3.1: a token was presented
	}
	w.Header().Set("WWW-Authenticate", challenge)
	fail(w, r, errUnauthorized)
	return false
}

func (h *Handler) tokenMatches(token string) bool {
	given := sha256.Sum256([]byte(token))
	match := 0
	for i := range h.tokens {
		match |= subtle.ConstantTimeCompare(given[:], h.tokens[i][:])
	}
	return match == 1
}

// bearer extracts the token of a single "Bearer" Authorization header; the
// scheme is case-insensitive (RFC 9110 §11.1).
func bearer(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// exchange is what the admin API knows about one request beyond the
// request itself.
type exchange struct {
	requestID string
	actor     string
	clientIP  string
	started   time.Time
	// redact removes keys and admin tokens from what a problem echoes.
	redact keystore.Redactor
	// err is the unexpected error behind a 5xx, for the log line only.
	err error
	// code is the problem code the request was answered with, if any.
	code string
	// subject is what the action was about (key, user, team, role), set
	// by its handler once that input is valid and holds no secret, for
	// the audit event of an action that does not succeed.
	subject audit.Event
	// recorded is set once the handler has recorded the action's event.
	recorded bool
}

type exchangeKey struct{}

func exchangeOf(r *http.Request) *exchange { return exchangeFrom(r.Context()) }

func exchangeFrom(ctx context.Context) *exchange {
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok {
		return x
	}
	return &exchange{} // only when a handler is called outside ServeHTTP
}

func withExchange(ctx context.Context, x *exchange) context.Context {
	return context.WithValue(ctx, exchangeKey{}, x)
}

// setActor takes X-Actor-Id: at most one value of at most 128 printable
// characters, so the audit trail holds a name and not arbitrary bytes. A
// key or an admin token in it is redacted: the actor is logged and audited.
func (x *exchange) setActor(values []string, redact keystore.Redactor) bool {
	switch len(values) {
	case 0:
		return true
	case 1:
	default:
		return false
	}
	v := values[0]
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > maxActorLen {
		return false
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	x.actor = redact.Redact(v)
	return true
}

// requestID keeps a well-formed client X-Request-Id (1-128 characters of
// [A-Za-z0-9._:-]) so a trace spans systems, and otherwise makes one. An id
// holding the key prefix or an admin token is replaced: the id is logged
// and audited.
func (h *Handler) requestID(v string) string {
	if len(v) == 0 || len(v) > maxRequestID || strings.Contains(v, h.format.Prefix()) || h.redact.HasSecret(v) {
		return rand.Text()
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return rand.Text()
		}
	}
	return v
}

func clientIP(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
