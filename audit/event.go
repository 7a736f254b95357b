// Package audit records one event per proxied request and per admin action,
// through an async pipeline into its sinks (log, store, Redis stream).
package audit

import "time"

// Event types.
const (
	TypeAPIRequest  = "api.request"
	TypeAuthFailed  = "auth.failed"
	TypeKeyCreated  = "key.created"
	TypeKeyUpdated  = "key.updated"
	TypeKeyRevoked  = "key.revoked"
	TypeUserUpdated = "user.updated"
	TypeTeamUpdated = "team.updated"
	// TypeAdminFailed is an admin request that would have changed
	// something (POST, PUT, PATCH, DELETE), or any admin request without
	// a valid admin token, that did not succeed: refused (4xx) or failed
	// (5xx). Its outcome is the problem's code, e.g. key_limit_reached.
	TypeAdminFailed = "admin.failed"
)

// Outcomes of an api.request or auth.failed event.
const (
	OutcomeAllowed       = "allowed"
	OutcomeRateLimited   = "rate_limited"
	OutcomeUpstreamError = "upstream_error"
	OutcomeInvalidKey    = "invalid_key"
	OutcomeMissingKey    = "missing_key"
	OutcomeInactiveTeam  = "subscription_inactive"
	OutcomeUnavailable   = "auth_unavailable"
	OutcomeSuccess       = "success" // admin actions
	// OutcomeAlreadyRevoked is a DELETE of a key that was revoked before:
	// 204 like the first, recorded, but not counted as a revocation by
	// whoever counts outcome success.
	OutcomeAlreadyRevoked = "already_revoked"
)

// Event is the one shape every sink writes and the query API returns.
// Fields that do not apply are omitted. It never holds a full key or token.
type Event struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Type       string    `json:"type"`
	RequestID  string    `json:"request_id,omitempty"`
	KeyID      string    `json:"key_id,omitempty"`
	KeyStart   string    `json:"key_start,omitempty"`
	UserID     string    `json:"user_id,omitempty"`
	TeamID     string    `json:"team_id,omitempty"`
	Role       string    `json:"role,omitempty"`
	Actor      string    `json:"actor,omitempty"`
	Method     string    `json:"method,omitempty"`
	Path       string    `json:"path,omitempty"`
	Status     int       `json:"status,omitempty"`
	DurationMS float64   `json:"duration_ms,omitempty"`
	ClientIP   string    `json:"client_ip,omitempty"`
	UserAgent  string    `json:"user_agent,omitempty"`
	Outcome    string    `json:"outcome,omitempty"`
}
