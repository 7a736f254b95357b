package admin

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxExpiryUnix (2200-01-01) bounds expires_at: stores keep times as 64-bit
// nanoseconds, and a client sending 9999-12-31 for "never" should omit the
// field instead.
const maxExpiryUnix = 7258118400

const (
	maxNameLen = 100
	maxIDLen   = 128
	maxRoleLen = 64
)

// createKeyRequest is the body of POST /admin/v1/keys.
type createKeyRequest struct {
	Name, UserID, TeamID, Role string
	ExpiresAt                  *time.Time
}

func parseCreateKey(body []byte, now time.Time) (createKeyRequest, error) {
	var req createKeyRequest
	o, err := parseObject(body, "name", "user_id", "team_id", "role", "expires_at")
	if err != nil {
		return req, err
	}
	if req.Name, err = nameField(o); err != nil {
		return req, err
	}
	if req.UserID, err = idField(o, "user_id"); err != nil {
		return req, err
	}
	if req.TeamID, err = idField(o, "team_id"); err != nil {
		return req, err
	}
	if req.Role, err = roleField(o); err != nil {
		return req, err
	}
	if req.ExpiresAt, _, err = o.expiry("expires_at"); err != nil {
		return req, err
	}
	if req.ExpiresAt != nil && !req.ExpiresAt.After(now) {
		return req, badRequest(`Field "expires_at" must be in the future.`)
	}
	return req, nil
}

// patchKeyRequest is the body of PATCH /admin/v1/keys/{id}: an absent member
// is left alone, "expires_at": null clears the expiry.
type patchKeyRequest struct {
	Name        *string
	ExpiresAt   *time.Time
	ClearExpiry bool
}

func (p patchKeyRequest) touchesExpiry() bool { return p.ExpiresAt != nil || p.ClearExpiry }

func parsePatchKey(body []byte, now time.Time) (patchKeyRequest, error) {
	var req patchKeyRequest
	o, err := parseObject(body, "name", "expires_at")
	if err != nil {
		return req, err
	}
	if _, ok := o["name"]; ok {
		if o.isNull("name") {
			return req, badRequest(`Field "name" cannot be null; a key always has a name.`)
		}
		name, err := nameField(o)
		if err != nil {
			return req, err
		}
		req.Name = &name
	}
	exp, present, err := o.expiry("expires_at")
	if err != nil {
		return req, err
	}
	req.ExpiresAt, req.ClearExpiry = exp, present && exp == nil
	if exp != nil && !exp.After(now) {
		return req, badRequest(`Field "expires_at" must be in the future; to end a key now, revoke it.`)
	}
	if req.Name == nil && !present {
		return req, badRequest(`The body must set "name" or "expires_at".`)
	}
	return req, nil
}

// putUserRequest is the body of PUT /admin/v1/users/{user_id}; PUT replaces,
// so every member is required.
type putUserRequest struct {
	TeamID, Role string
	Active       bool
}

func parsePutUser(body []byte) (putUserRequest, error) {
	var req putUserRequest
	o, err := parseObject(body, "team_id", "role", "active")
	if err != nil {
		return req, err
	}
	if req.TeamID, err = idField(o, "team_id"); err != nil {
		return req, err
	}
	if req.Role, err = roleField(o); err != nil {
		return req, err
	}
	req.Active, err = o.requiredBool("active")
	return req, err
}

// parsePutTeam reads the body of PUT /admin/v1/teams/{team_id}.
func parsePutTeam(body []byte) (active bool, err error) {
	o, err := parseObject(body, "active")
	if err != nil {
		return false, err
	}
	return o.requiredBool("active")
}

func nameField(o object) (string, error) {
	s, err := o.requiredStr("name")
	if err != nil {
		return "", err
	}
	name, ok := cleanName(s)
	if !ok {
		return "", badRequest(fmt.Sprintf(`Field "name" must be 1-%d characters without control characters.`, maxNameLen))
	}
	return name, nil
}

func idField(o object, field string) (string, error) {
	s, err := o.requiredStr(field)
	if err != nil {
		return "", err
	}
	if !validID(s) {
		return "", badRequest(idDetail(field))
	}
	return s, nil
}

func roleField(o object) (string, error) {
	s, err := o.requiredStr("role")
	if err != nil {
		return "", err
	}
	if !validRole(s) {
		return "", badRequest(fmt.Sprintf(`Field "role" must be 1-%d characters of [a-z0-9_].`, maxRoleLen))
	}
	return s, nil
}

func idDetail(field string) string {
	return fmt.Sprintf("%q must be 1-%d characters of [A-Za-z0-9._:@-].", field, maxIDLen)
}

// cleanName trims a key name and refuses control and bidirectional
// formatting characters, which would let a name disguise itself in a UI.
func cleanName(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxNameLen {
		return "", false
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return "", false
		}
	}
	return s, true
}

// validID checks a user or team id: the characters of opaque ids, emails
// and URNs, nothing that needs escaping in a path or a header.
func validID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && !strings.ContainsRune("._:@-", rune(c)) {
			return false
		}
	}
	return true
}

func validRole(s string) bool {
	if s == "" || len(s) > maxRoleLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// noSecrets refuses ids and names (pairs of field and value) that hold an
// API key or an admin token. They would reach the audit trail, the logs
// and key lists verbatim, and redacting them there would make the trail
// name the wrong user or team.
func (h *Handler) noSecrets(fieldValues ...string) error {
	for i := 0; i+1 < len(fieldValues); i += 2 {
		if h.redact.Holds(fieldValues[i+1]) {
			return badRequest(fmt.Sprintf("%q must not hold an API key or an admin token.", fieldValues[i]))
		}
	}
	return nil
}
