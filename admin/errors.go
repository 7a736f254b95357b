package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/wevion/keyproxy/internal/problem"
	"github.com/wevion/keyproxy/keystore"
)

// apiError is an error with the status and stable code a client sees.
type apiError struct {
	status int
	code   string
	title  string
	detail string
	// echo is client input that detail quotes where it says echoAt. fail
	// fills it in after removing keys and admin tokens (a client that put
	// one in a field or parameter name got it back whole otherwise), and
	// cuts it short.
	echo string
}

// echoAt marks where an apiError's detail quotes its echo.
const echoAt = "{input}"

func (e *apiError) Error() string {
	return "admin: " + e.code + ": " + strings.Replace(e.detail, echoAt, `"…"`, 1)
}

// render is the detail a client sees.
func (e *apiError) render(redact keystore.Redactor) string {
	if e.echo == "" {
		return e.detail
	}
	return strings.Replace(e.detail, echoAt, quoteShort(redact.Redact(e.echo)), 1)
}

var (
	errUnauthorized         = newAPIError(http.StatusUnauthorized, "unauthorized", "Unauthorized", "A valid admin token is required.")
	errNotFound             = newAPIError(http.StatusNotFound, "not_found", "Not found", "No such resource.")
	errForbiddenRole        = newAPIError(http.StatusForbidden, "forbidden_role", "Role may not create keys", "Only the configured creator roles may create API keys.")
	errSubscriptionInactive = newAPIError(http.StatusForbidden, "subscription_inactive", "Subscription inactive", "The team's subscription is inactive.")
	errUserInactive         = newAPIError(http.StatusConflict, "user_inactive", "User deactivated", "The user is deactivated; reactivate them (PUT /admin/v1/users/{user_id}) before creating a key.")
	errKeyLimit             = newAPIError(http.StatusConflict, "key_limit_reached", "Key limit reached", "The team has reached its limit of active keys; revoke one to create another.")
	errKeyExpired           = newAPIError(http.StatusConflict, "key_expired", "Key expired", "An expired key cannot be given a new expiry; create a new key.")
	errConflict             = newAPIError(http.StatusConflict, "conflict", "Conflict", "The change conflicts with the current state; retry.")
	errReportTooLarge       = newAPIError(http.StatusRequestEntityTooLarge, "request_too_large", "Request too large", "The report body is too large.")
	errMediaType            = newAPIError(http.StatusUnsupportedMediaType, "unsupported_media_type", "Unsupported media type", "The request body must be application/json.")
	errAuditUnavailable     = newAPIError(http.StatusNotImplemented, "audit_query_unavailable", "Audit query unavailable", "No audit sink that can be queried is configured.")
	errStoreUnavailable     = newAPIError(http.StatusServiceUnavailable, "store_unavailable", "Store unavailable", "The key store is unavailable; retry later.")
	// errClientGone is what the log and metrics show when the client hung up
	// before the answer (nginx's 499); the client never sees it.
	errClientGone = newAPIError(499, "client_closed_request", "Client closed request", "The client closed the connection.")
	errInternal   = newAPIError(http.StatusInternalServerError, "internal", "Internal error", "The request failed; the request id identifies it in the logs.")
)

func newAPIError(status int, code, title, detail string) *apiError {
	return &apiError{status: status, code: code, title: title, detail: detail}
}

func badRequest(detail string) *apiError {
	return newAPIError(http.StatusBadRequest, "invalid_request", "Invalid request", detail)
}

// badInput is badRequest quoting the client's input where detail says
// echoAt.
func badInput(detail, input string) *apiError {
	e := badRequest(detail)
	e.echo = input
	return e
}

// bodyTooLarge refuses a body over limit bytes: on the admin API it is 400
// invalid_request like any other body the API cannot take; a secret-scanning
// report (GitHub's format, not the admin API) keeps 413.
func bodyTooLarge(r *http.Request, limit int64) *apiError {
	if r.URL.Path == SecretScanningPath {
		return errReportTooLarge
	}
	return badRequest(fmt.Sprintf("The request body is over the limit of %d bytes.", limit))
}

// fail writes err as a problem. Store sentinels map to their codes; anything
// unexpected becomes 500 internal and is kept for the log line, never shown.
func fail(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeOf(r)
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, keystore.ErrNotFound):
		ae = errNotFound
	case errors.Is(err, keystore.ErrTeamInactive):
		ae = errSubscriptionInactive
	case errors.Is(err, keystore.ErrUserInactive):
		ae = errUserInactive
	case errors.Is(err, keystore.ErrKeyLimitReached):
		ae = errKeyLimit
	case errors.Is(err, keystore.ErrConflict):
		ae = errConflict
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		ae = errClientGone
	case errors.Is(err, keystore.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		ae, x.err = errStoreUnavailable, err
	default:
		ae, x.err = errInternal, err
	}
	x.code = ae.code
	if ae.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	problem.Write(w, problem.Problem{Status: ae.status, Code: ae.code, Title: ae.title, Detail: ae.render(x.redact), RequestID: x.requestID})
}

func methodNotAllowed(allow string) http.HandlerFunc {
	err := newAPIError(http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed", "Allowed methods: "+allow+".")
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		fail(w, r, err)
	}
}

func sortedJoin(s []string) string {
	slices.Sort(s)
	return strings.Join(s, ", ")
}
