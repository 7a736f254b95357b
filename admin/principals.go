package admin

import (
	"net/http"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

type userJSON struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"team_id"`
	Role      string    `json:"role"`
	Active    bool      `json:"active"`
	UpdatedAt time.Time `json:"updated_at"`
	// RevokedKeyIDs are the keys this change revoked by moving the user to
	// another team; absent when it revoked none.
	RevokedKeyIDs []string `json:"revoked_key_ids,omitempty"`
}

// OutcomeOwnerMoved is the outcome of a key.revoked event for a key that
// ended because its owner moved to another team (a PUT of the user, or a
// create that named another team): a key never follows its owner.
const OutcomeOwnerMoved = "owner_moved"

type teamJSON struct {
	ID        string    `json:"id"`
	Active    bool      `json:"active"`
	UpdatedAt time.Time `json:"updated_at"`
}

// putUser replaces a user. Its keys inherit the new role, state and team on
// their next request, so their cached identities are evicted first.
func (h *Handler) putUser(w http.ResponseWriter, r *http.Request) {
	userID := r.PathValue("user_id")
	if !validID(userID) {
		fail(w, r, badRequest("Path parameter "+idDetail("user_id")))
		return
	}
	body, err := readBody(r)
	if err != nil {
		fail(w, r, err)
		return
	}
	req, err := parsePutUser(body)
	if err == nil {
		err = h.noSecrets("user_id", userID, "team_id", req.TeamID)
	}
	if err != nil {
		fail(w, r, err)
		return
	}
	exchangeOf(r).subject = audit.Event{UserID: userID, TeamID: req.TeamID, Role: req.Role}
	ctx, cancel := detached(r)
	defer cancel()
	c, err := h.store.PutUser(ctx, keystore.User{ID: userID, TeamID: req.TeamID, Role: req.Role, Active: req.Active, UpdatedAt: h.now().UTC()})
	if err != nil {
		fail(w, r, err)
		return
	}
	h.evict(ctx, w, c.Evict)
	u := c.User
	h.record(r, http.StatusOK, audit.Event{Type: audit.TypeUserUpdated, UserID: u.ID, TeamID: u.TeamID, Role: u.Role})
	out := userJSON{ID: u.ID, TeamID: u.TeamID, Role: u.Role, Active: u.Active, UpdatedAt: u.UpdatedAt.UTC()}
	h.recordMoveRevocations(r, http.StatusOK, c.Revoked)
	for _, k := range c.Revoked {
		out.RevokedKeyIDs = append(out.RevokedKeyIDs, k.ID)
	}
	writeJSON(w, r, http.StatusOK, out)
}

// recordMoveRevocations records a key.revoked event, in the key's own team,
// for each key that a move of its owner revoked, and counts them.
func (h *Handler) recordMoveRevocations(r *http.Request, status int, keys []keystore.Key) {
	for _, k := range keys {
		h.metrics.keysRevoked.Inc()
		h.record(r, status, audit.Event{Type: audit.TypeKeyRevoked, KeyID: k.ID, UserID: k.UserID, TeamID: k.TeamID,
			Role: k.Role, Outcome: OutcomeOwnerMoved})
	}
}

// putTeam sets a team's subscription state; its keys follow at once.
func (h *Handler) putTeam(w http.ResponseWriter, r *http.Request) {
	teamID := r.PathValue("team_id")
	if !validID(teamID) {
		fail(w, r, badRequest("Path parameter "+idDetail("team_id")))
		return
	}
	body, err := readBody(r)
	if err != nil {
		fail(w, r, err)
		return
	}
	active, err := parsePutTeam(body)
	if err == nil {
		err = h.noSecrets("team_id", teamID)
	}
	if err != nil {
		fail(w, r, err)
		return
	}
	exchangeOf(r).subject = audit.Event{TeamID: teamID}
	ctx, cancel := detached(r)
	defer cancel()
	t, hashes, err := h.store.PutTeam(ctx, keystore.Team{ID: teamID, Active: active, UpdatedAt: h.now().UTC()})
	if err != nil {
		fail(w, r, err)
		return
	}
	h.evict(ctx, w, hashes)
	h.record(r, http.StatusOK, audit.Event{Type: audit.TypeTeamUpdated, TeamID: t.ID})
	writeJSON(w, r, http.StatusOK, teamJSON{ID: t.ID, Active: t.Active, UpdatedAt: t.UpdatedAt.UTC()})
}
