package admin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// keyJSON is a key as the admin API shows it everywhere but the create
// response: the display start, never the key.
type keyJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Start      string     `json:"start"`
	UserID     string     `json:"user_id"`
	TeamID     string     `json:"team_id"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// createdKeyJSON is the create response, the only place the key appears.
type createdKeyJSON struct {
	ID        string     `json:"id"`
	Key       string     `json:"key"`
	Name      string     `json:"name"`
	Start     string     `json:"start"`
	UserID    string     `json:"user_id"`
	TeamID    string     `json:"team_id"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func newKeyJSON(k keystore.Key) keyJSON {
	return keyJSON{
		ID: k.ID, Name: k.Name, Start: k.Start, UserID: k.UserID, TeamID: k.TeamID, Role: k.Role,
		CreatedAt: k.CreatedAt.UTC(), LastUsedAt: utc(k.LastUsedAt), ExpiresAt: utc(k.ExpiresAt), RevokedAt: utc(k.RevokedAt),
	}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func (h *Handler) createKey(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		fail(w, r, err)
		return
	}
	now := h.now().UTC()
	req, err := parseCreateKey(body, now)
	if err == nil {
		err = h.noSecrets("name", req.Name, "user_id", req.UserID, "team_id", req.TeamID)
	}
	if err != nil {
		fail(w, r, err)
		return
	}
	exchangeOf(r).subject = audit.Event{UserID: req.UserID, TeamID: req.TeamID, Role: req.Role}
	if !h.creatorRoles[req.Role] {
		fail(w, r, errForbiddenRole)
		return
	}
	secret, err := h.format.Generate()
	if err != nil {
		fail(w, r, fmt.Errorf("generating key: %w", err))
		return
	}
	id, err := keystore.NewID()
	if err != nil {
		fail(w, r, fmt.Errorf("generating key id: %w", err))
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	k, err := h.store.CreateKey(ctx, keystore.NewKey{
		ID: id, Hash: keystore.HashKey(secret), Start: h.format.Start(secret),
		Name: req.Name, UserID: req.UserID, TeamID: req.TeamID, Role: req.Role,
		CreatedAt: now, ExpiresAt: req.ExpiresAt, MaxActivePerTeam: h.maxActive,
	})
	if err != nil {
		fail(w, r, err)
		return
	}
	// Creating a key upserts its owner; a changed role or team changes the
	// identity of the owner's other keys, and is recorded as PutUser's
	// change would be: a move revokes the old team's keys.
	h.evict(ctx, w, k.EvictHashes)
	if k.OwnerChanged {
		h.record(r, http.StatusCreated, audit.Event{Type: audit.TypeUserUpdated, UserID: k.UserID, TeamID: k.TeamID, Role: k.Role})
	}
	h.recordMoveRevocations(r, http.StatusCreated, k.RevokedByMove)
	h.metrics.keysCreated.Inc()
	h.record(r, http.StatusCreated, audit.Event{Type: audit.TypeKeyCreated, KeyID: k.ID, UserID: k.UserID, TeamID: k.TeamID, Role: k.Role})
	w.Header().Set("Location", "/admin/v1/keys/"+k.ID)
	writeJSON(w, r, http.StatusCreated, createdKeyJSON{
		ID: k.ID, Key: secret, Name: k.Name, Start: k.Start, UserID: k.UserID, TeamID: k.TeamID, Role: k.Role,
		CreatedAt: k.CreatedAt.UTC(), ExpiresAt: utc(k.ExpiresAt),
	})
}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request) {
	p, err := params(r.URL.RawQuery, "team_id", "user_id", "include_revoked")
	if err != nil {
		fail(w, r, err)
		return
	}
	f := keystore.KeyFilter{TeamID: p["team_id"], UserID: p["user_id"]}
	if !validID(f.TeamID) {
		fail(w, r, badRequest("Query parameter "+idDetail("team_id")+" It is required."))
		return
	}
	if _, ok := p["user_id"]; ok && !validID(f.UserID) {
		fail(w, r, badRequest("Query parameter "+idDetail("user_id")))
		return
	}
	switch p["include_revoked"] {
	case "", "false":
	case "true":
		f.IncludeRevoked = true
	default:
		fail(w, r, badRequest(`Query parameter "include_revoked" must be true or false.`))
		return
	}
	keys, err := h.store.ListKeys(r.Context(), f)
	if err != nil {
		fail(w, r, err)
		return
	}
	out := struct {
		Keys []keyJSON `json:"keys"`
	}{make([]keyJSON, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, newKeyJSON(k))
	}
	writeJSON(w, r, http.StatusOK, out)
}

// keyID returns the {id} path value; anything that is not a key id cannot
// name a key, so it is 404 like an unknown one.
func keyID(r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !keystore.ValidID(id) {
		return id, false
	}
	exchangeOf(r).subject.KeyID = id
	return id, true
}

func (h *Handler) getKey(w http.ResponseWriter, r *http.Request) {
	id, ok := keyID(r)
	if !ok {
		fail(w, r, errNotFound)
		return
	}
	k, err := h.store.GetKey(r.Context(), id)
	if err != nil {
		fail(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, newKeyJSON(k))
}

func (h *Handler) patchKey(w http.ResponseWriter, r *http.Request) {
	id, ok := keyID(r)
	if !ok {
		fail(w, r, errNotFound)
		return
	}
	body, err := readBody(r)
	if err != nil {
		fail(w, r, err)
		return
	}
	now := h.now()
	req, err := parsePatchKey(body, now)
	if err == nil && req.Name != nil {
		err = h.noSecrets("name", *req.Name)
	}
	if err != nil {
		fail(w, r, err)
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	if req.touchesExpiry() {
		// A new expiry on an expired key would bring it back to life past
		// the team's active-key limit; the product says revoke and create.
		cur, err := h.store.GetKey(ctx, id)
		if err != nil {
			fail(w, r, err)
			return
		}
		if cur.ExpiresAt != nil && !now.Before(*cur.ExpiresAt) {
			fail(w, r, errKeyExpired)
			return
		}
	}
	k, err := h.store.UpdateKey(ctx, id, keystore.KeyUpdate{Name: req.Name, ExpiresAt: req.ExpiresAt, ClearExpiry: req.ClearExpiry})
	if err != nil {
		fail(w, r, err)
		return
	}
	// Cached identities carry the old expiry.
	h.evict(ctx, w, []keystore.Hash{k.Hash})
	h.record(r, http.StatusOK, audit.Event{Type: audit.TypeKeyUpdated, KeyID: k.ID, UserID: k.UserID, TeamID: k.TeamID, Role: k.Role})
	writeJSON(w, r, http.StatusOK, newKeyJSON(k))
}

func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request) {
	id, ok := keyID(r)
	if !ok {
		fail(w, r, errNotFound)
		return
	}
	at := h.now()
	ctx, cancel := detached(r)
	defer cancel()
	k, err := h.store.RevokeKey(ctx, id, at)
	if err != nil {
		fail(w, r, err)
		return
	}
	// Evict even when the key was already revoked: it is idempotent and
	// heals a replica that missed the first eviction.
	h.evict(ctx, w, []keystore.Hash{k.Hash})
	ev := audit.Event{Type: audit.TypeKeyRevoked, KeyID: k.ID, UserID: k.UserID, TeamID: k.TeamID, Role: k.Role}
	if revokedNow(k, at) {
		h.metrics.keysRevoked.Inc()
	} else {
		ev.Outcome = audit.OutcomeAlreadyRevoked
	}
	h.record(r, http.StatusNoContent, ev)
	w.WriteHeader(http.StatusNoContent)
}

// revokedNow reports whether RevokeKey at at revoked k, rather than finding
// it revoked: the store keeps the first revocation time. The tolerance
// covers PostgreSQL rounding to microseconds.
func revokedNow(k keystore.Key, at time.Time) bool {
	return k.RevokedAt != nil && k.RevokedAt.Sub(at).Abs() < time.Microsecond
}

// detached returns the context for a change and its eviction: it outlives
// a client that hangs up, so a committed change always reaches the caches.
func detached(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), mutationTimeout)
}

// evict evicts hashes on every replica and says in the answer how many
// confirmed, as DELETE does: a PUT that deactivates a user or a team, or a
// PATCH that ends a key, is as much a revocation. Nothing to evict, no
// header.
func (h *Handler) evict(ctx context.Context, w http.ResponseWriter, hashes []keystore.Hash) (confirmed, replicas int) {
	if len(hashes) == 0 {
		return 0, 0
	}
	confirmed, replicas = h.evictor.Evict(ctx, hashes)
	w.Header().Set("Keyproxy-Revocation-Acks", fmt.Sprintf("%d/%d", confirmed, replicas))
	return confirmed, replicas
}
