package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// SecretScanningPath is where GitHub's secret-scanning partner reports are
// received, on the admin listener and without the admin token: the report's
// signature is its authentication.
const SecretScanningPath = "/github/secret-scanning"

// Audit facts of a revocation caused by a leak report.
const (
	SecretScanningActor = "github-secret-scanning"
	OutcomeLeaked       = "leaked"
)

// Labels of GitHub's secret-scanning feedback format.
const (
	LabelTruePositive  = "true_positive"
	LabelFalsePositive = "false_positive"
)

// DefaultReportMaxBytes bounds a report's body when
// SecretScanning.MaxBodyBytes is zero: GitHub batches matches, each a few
// hundred bytes with its URL.
const DefaultReportMaxBytes = 1 << 20

// maxReportTokens bounds the matches one report may carry; GitHub batches
// matches, but a report far larger than this is not one we can act on in
// one request's time.
const maxReportTokens = 1000

// KeyResolver finds the key a token hashes to, whatever its state: the
// store of record, not a cache, so a key made a moment ago on another
// replica is found.
type KeyResolver interface {
	Resolve(ctx context.Context, h keystore.Hash) (keystore.Identity, error)
}

// SecretScanning enables POST /github/secret-scanning.
type SecretScanning struct {
	// PublicKeys verify report signatures, by GitHub's key identifier
	// (compared case-insensitively). At least one is required.
	PublicKeys map[string]*ecdsa.PublicKey
	// Keys finds the reported keys; usually the Store.
	Keys KeyResolver
	// MaxBodyBytes bounds a report (413 beyond); zero means
	// DefaultReportMaxBytes.
	MaxBodyBytes int64
}

var errBadSignature = newAPIError(http.StatusUnauthorized, "invalid_signature", "Invalid signature",
	"The report must be signed with a configured GitHub secret-scanning key (Github-Public-Key-Identifier, Github-Public-Key-Signature).")

// ParsePublicKeyPEM reads an ECDSA P-256 public key (PEM "PUBLIC KEY", as
// GitHub publishes its secret-scanning keys).
func ParsePublicKeyPEM(b []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New(`admin: no PEM "PUBLIC KEY" block`)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin: parsing public key: %w", err)
	}
	ec, ok := k.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("admin: the public key is not ECDSA P-256")
	}
	return ec, nil
}

// secretScanner holds what the handler prepared from SecretScanning.
type secretScanner struct {
	keys    map[string]*ecdsa.PublicKey // identifier, lower-cased
	lookup  KeyResolver
	maxBody int64
}

func newSecretScanner(c *SecretScanning) (*secretScanner, error) {
	if c == nil {
		return nil, nil
	}
	if c.Keys == nil {
		return nil, errors.New("admin: SecretScanning.Keys is required")
	}
	if len(c.PublicKeys) == 0 {
		return nil, errors.New("admin: SecretScanning.PublicKeys must hold at least one key")
	}
	s := &secretScanner{keys: make(map[string]*ecdsa.PublicKey, len(c.PublicKeys)), lookup: c.Keys, maxBody: c.MaxBodyBytes}
	switch {
	case s.maxBody == 0:
		s.maxBody = DefaultReportMaxBytes
	case s.maxBody < 0:
		return nil, fmt.Errorf("admin: SecretScanning.MaxBodyBytes must be positive, got %d", s.maxBody)
	}
	for id, k := range c.PublicKeys {
		if id == "" || k == nil || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("admin: SecretScanning.PublicKeys[%q] must be an ECDSA P-256 key under a non-empty identifier", id)
		}
		s.keys[strings.ToLower(id)] = k
	}
	return s, nil
}

// verify checks GitHub's signature over the raw body: ECDSA P-256 over
// SHA-256, ASN.1 DER, base64 in Github-Public-Key-Signature, the key named
// by Github-Public-Key-Identifier.
func (s *secretScanner) verify(hdr http.Header, body []byte) (keyID string, ok bool) {
	ids, sigs := hdr.Values("Github-Public-Key-Identifier"), hdr.Values("Github-Public-Key-Signature")
	if len(ids) != 1 || len(sigs) != 1 || len(sigs[0]) > 512 {
		return "", false
	}
	pub, known := s.keys[strings.ToLower(ids[0])]
	if !known {
		return ids[0], false
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sigs[0]))
	if err != nil {
		return ids[0], false
	}
	digest := sha256.Sum256(body)
	return ids[0], ecdsa.VerifyASN1(pub, digest[:], sig)
}

// reportedToken is one match of a report; token is the leaked string, url
// where GitHub found it.
type reportedToken struct {
	Token, Type, URL string
}

// maxReportURL bounds the url a log line repeats.
const maxReportURL = 512

// tokenVerdict is one entry of the answer GitHub expects.
type tokenVerdict struct {
	TokenRaw  string `json:"token_raw"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// parseReport reads a report: a JSON array of objects, each with a string
// "token" and optional string "type", "url" and "source". Other members are
// ignored, since GitHub may add some; the array's length is bounded.
func parseReport(body []byte) ([]reportedToken, error) {
	var raw []object
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, badRequest("The report must be a JSON array of objects with a string \"token\".")
	}
	if len(raw) > maxReportTokens {
		return nil, badRequest(fmt.Sprintf("A report may carry at most %d tokens.", maxReportTokens))
	}
	out := make([]reportedToken, 0, len(raw))
	for _, o := range raw {
		if o == nil {
			return nil, badRequest("Every report entry must be an object.")
		}
		tok, err := o.requiredStr("token")
		if err != nil {
			return nil, err
		}
		typ, _, err := o.str("type")
		if err != nil {
			return nil, err
		}
		u, _, err := o.str("url")
		if err != nil {
			return nil, err
		}
		if _, _, err := o.str("source"); err != nil {
			return nil, err
		}
		out = append(out, reportedToken{Token: tok, Type: typ, URL: u})
	}
	return out, nil
}

// secretScanningReport revokes every live key a signed report names and
// answers each token's label: true_positive for a key this service issued
// (whether revoked now or before), false_positive for anything else.
func (h *Handler) secretScanningReport(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		fail(w, r, err)
		return
	}
	keyID, ok := h.scanner.verify(r.Header, body)
	if !ok {
		h.metrics.scanReports.WithLabelValues("invalid_signature").Inc()
		// The identifier is public; naming it helps after GitHub rotates keys.
		h.log.Warn("secret-scanning report refused: bad signature", zap.String("key_identifier", truncate(keyID, 128)))
		fail(w, r, errBadSignature)
		return
	}
	tokens, err := parseReport(body)
	if err != nil {
		h.metrics.scanReports.WithLabelValues("invalid_request").Inc()
		fail(w, r, err)
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	verdicts, hashes, err := h.revokeLeaked(ctx, r, tokens)
	// Evict whatever was revoked, even if a later token failed: those
	// revocations are committed. The answer's header and the log say how
	// many replicas confirmed, as for a DELETE.
	if len(hashes) > 0 {
		confirmed, replicas := h.evict(ctx, w, hashes)
		log := h.log.Info
		if confirmed < replicas {
			log = h.log.Warn // the others stop within cache.ttl
		}
		log("leaked API keys evicted", zap.Int("keys", len(hashes)), zap.Int("replicas_confirmed", confirmed), zap.Int("replicas", replicas))
	}
	if err != nil {
		h.metrics.scanReports.WithLabelValues("failed").Inc()
		fail(w, r, err) // GitHub retries a failed delivery
		return
	}
	h.metrics.scanReports.WithLabelValues("accepted").Inc()
	writeJSON(w, r, http.StatusOK, verdicts)
}

// revokeLeaked labels each token and revokes the live keys among them. It
// returns the hashes to evict: every key found, revoked now or before (an
// eviction is idempotent and heals a replica that missed one).
func (h *Handler) revokeLeaked(ctx context.Context, r *http.Request, tokens []reportedToken) ([]tokenVerdict, []keystore.Hash, error) {
	verdicts := make([]tokenVerdict, 0, len(tokens))
	var hashes []keystore.Hash
	seen := make(map[keystore.Hash]string, len(tokens))
	for _, t := range tokens {
		v := tokenVerdict{TokenRaw: t.Token, TokenType: t.Type, Label: LabelFalsePositive}
		// Not our format or checksum: no lookup.
		if h.format.Valid(t.Token) {
			hash := keystore.HashKey(t.Token)
			label, dup := seen[hash]
			if !dup {
				var found bool
				var err error
				if label, found, err = h.revokeOne(ctx, r, hash, t.URL); err != nil {
					return nil, hashes, err
				}
				if found {
					hashes = append(hashes, hash)
				}
				seen[hash] = label
			}
			v.Label = label
		}
		verdicts = append(verdicts, v)
		h.metrics.scanTokens.WithLabelValues(v.Label).Inc()
	}
	return verdicts, hashes, nil
}

// revokeOne revokes one reported key if it is live. Both a revocation and a
// report of a key revoked before are logged with where GitHub found it: the
// team will want to remove it from there either way.
func (h *Handler) revokeOne(ctx context.Context, r *http.Request, hash keystore.Hash, foundAt string) (label string, found bool, err error) {
	id, err := h.scanner.lookup.Resolve(ctx, hash)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return LabelFalsePositive, false, nil
	case err != nil:
		return "", false, fmt.Errorf("secret scanning: looking up a reported key: %w", err)
	}
	where := zap.String("url", truncate(h.redact.Redact(foundAt), maxReportURL))
	if id.Revoked {
		h.log.Warn("revoked API key reported again by GitHub secret scanning",
			zap.String("key_id", id.KeyID), zap.String("team_id", id.TeamID), zap.String("user_id", id.UserID), where)
		return LabelTruePositive, true, nil
	}
	at := h.now()
	k, err := h.store.RevokeKey(ctx, id.KeyID, at)
	if errors.Is(err, keystore.ErrNotFound) {
		return LabelFalsePositive, false, nil // deleted between the two reads
	}
	if err != nil {
		return "", false, fmt.Errorf("secret scanning: revoking %s: %w", id.KeyID, err)
	}
	if revokedNow(k, at) {
		h.metrics.keysRevoked.Inc()
	}
	h.log.Warn("leaked API key revoked on a GitHub secret-scanning report",
		zap.String("key_id", k.ID), zap.String("team_id", k.TeamID), zap.String("user_id", k.UserID), where)
	h.record(r, http.StatusOK, audit.Event{Type: audit.TypeKeyRevoked, KeyID: k.ID, UserID: k.UserID, TeamID: k.TeamID,
		Role: k.Role, Actor: SecretScanningActor, Outcome: OutcomeLeaked})
	return LabelTruePositive, true, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "")
	}
	return strings.ToValidUTF8(s, "")
}
