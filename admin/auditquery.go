package admin

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

const (
	defaultAuditLimit = 100
	maxCursorLen      = 512
)

func (h *Handler) queryAudit(w http.ResponseWriter, r *http.Request) {
	if h.audit == nil {
		fail(w, r, errAuditUnavailable)
		return
	}
	q, err := parseAuditQuery(r.URL.RawQuery)
	if err != nil {
		fail(w, r, err)
		return
	}
	page, err := h.audit.Query(r.Context(), q)
	if errors.Is(err, audit.ErrInvalidQuery) {
		err = badRequest("The audit query is invalid: a cursor must be a next_cursor from a previous page, and times within years 0001-9999.")
	}
	if err != nil {
		fail(w, r, err)
		return
	}
	if page.Events == nil {
		page.Events = []audit.Event{} // "events": [] rather than null
	}
	writeJSON(w, r, http.StatusOK, page)
}

func parseAuditQuery(raw string) (audit.Query, error) {
	q := audit.Query{Limit: defaultAuditLimit}
	p, err := params(raw, "team_id", "key_id", "user_id", "since", "until", "limit", "cursor")
	if err != nil {
		return q, err
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"team_id", &q.TeamID}, {"user_id", &q.UserID}} {
		if v, ok := p[f.name]; ok {
			if !validID(v) {
				return q, badRequest("Query parameter " + idDetail(f.name))
			}
			*f.dst = v
		}
	}
	if v, ok := p["key_id"]; ok {
		if !keystore.ValidID(v) {
			return q, badRequest(`Query parameter "key_id" must be a key id (key_ and 20 letters or digits).`)
		}
		q.KeyID = v
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if v, ok := p[f.name]; ok {
			t, err := time.Parse(time.RFC3339, v)
			if len(v) > 64 || err != nil {
				return q, badRequest(fmt.Sprintf("Query parameter %q must be an RFC 3339 time such as 2030-01-02T15:04:05Z.", f.name))
			}
			*f.dst = t.UTC()
		}
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return q, badRequest(`Query parameter "since" must be before "until".`)
	}
	if v, ok := p["limit"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > audit.MaxQueryLimit {
			return q, badRequest(fmt.Sprintf(`Query parameter "limit" must be a whole number from 1 to %d.`, audit.MaxQueryLimit))
		}
		q.Limit = n
	}
	if v, ok := p["cursor"]; ok {
		if v == "" || len(v) > maxCursorLen || !printableASCII(v) {
			return q, badRequest(`Query parameter "cursor" must be a next_cursor from a previous page.`)
		}
		q.Cursor = v
	}
	return q, nil
}

// params parses a query string in which every parameter is one of allowed
// and appears at most once: a typo or a repeated filter is an error, not a
// silently broader answer.
func params(raw string, allowed ...string) (map[string]string, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, badRequest("The query string is malformed.")
	}
	out := make(map[string]string, len(vals))
	for name, v := range vals {
		if !slices.Contains(allowed, name) {
			return nil, badInput("Unknown query parameter "+echoAt+".", name)
		}
		if len(v) != 1 {
			return nil, badRequest(fmt.Sprintf("Query parameter %q appears more than once.", name))
		}
		out[name] = v[0]
	}
	return out, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
