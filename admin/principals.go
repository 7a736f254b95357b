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
}

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
	u, hashes, err := h.store.PutUser(ctx, keystore.User{ID: userID, TeamID: req.TeamID, Role: req.Role, Active: req.Active, UpdatedAt: h.now().UTC()})
	if err != nil {
		fail(w, r, err)
		return
	}
	h.evict(ctx, w, hashes)
	h.record(r, http.StatusOK, audit.Event{Type: audit.TypeUserUpdated, UserID: u.ID, TeamID: u.TeamID, Role: u.Role})
	writeJSON(w, r, http.StatusOK, userJSON{ID: u.ID, TeamID: u.TeamID, Role: u.Role, Active: u.Active, UpdatedAt: u.UpdatedAt.UTC()})
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
