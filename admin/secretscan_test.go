package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// GitHub's published example: a report signed with the key it names.
const (
	githubExampleKeyID   = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
	githubExamplePayload = `[{"token":"some_token","type":"some_type","url":"some_url"}]`
	githubExampleSig     = "MEUCIQDKZokqnCjrRtw0tni+2Ltvl/uiMJ1EGumEsp1BsNr32AIgQY1YXD2nlj+XNfGK4rBfkMJ1JDOQcYXxa2sY8FNkrKc="
	githubExamplePEM     = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9MJJHnMfn2+H4xL4YaPDA4RpJqUq
kCmRCBnYERxZanmcpzQSXs1X/AljlKkbJ8qpVIW4clayyef9gWhFbNHWAA==
-----END PUBLIC KEY-----
`
)

const testScanKeyID = "test-key-1"

// scanEnv is an admin handler with secret scanning on, trusting GitHub's
// example key and a key the test signs with.
type scanEnv struct {
	*env
	signer *ecdsa.PrivateKey
}

func newScanEnv(t testing.TB, opts ...func(*admin.Config)) *scanEnv {
	t.Helper()
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	gh, err := admin.ParsePublicKeyPEM([]byte(githubExamplePEM))
	if err != nil {
		t.Fatal(err)
	}
	var store keystore.Backend
	e := newEnv(t, append([]func(*admin.Config){func(c *admin.Config) {
		store = c.Store.(keystore.Backend)
		c.SecretScanning = &admin.SecretScanning{
			PublicKeys: map[string]*ecdsa.PublicKey{githubExampleKeyID: gh, testScanKeyID: &signer.PublicKey},
			Keys:       store,
		}
	}}, opts...)...)
	return &scanEnv{env: e, signer: signer}
}

func sign(t testing.TB, k *ecdsa.PrivateKey, body string) string {
	d := sha256.Sum256([]byte(body))
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// report posts body as GitHub would: no admin token, a signature.
func (s *scanEnv) report(body string, hdr ...string) *httptest.ResponseRecorder {
	return serve(s.h, "POST", admin.SecretScanningPath, body, append([]string{"Authorization", "",
		"Github-Public-Key-Identifier", testScanKeyID, "Github-Public-Key-Signature", sign(s.t, s.signer, body)}, hdr...)...)
}

type verdict struct {
	TokenRaw  string `json:"token_raw"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

func verdicts(t testing.TB, w *httptest.ResponseRecorder) []verdict {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var v []verdict
	decode(t, w, &v)
	return v
}

// metricValue reads one counter child from the handler's registry.
func metricValue(t testing.TB, e *env, name, label, value string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func reportOf(tokens ...string) string {
	var b strings.Builder
	b.WriteString("[")
	for i, tok := range tokens {
		if i > 0 {
			b.WriteString(",")
		}
		j, _ := json.Marshal(tok)
		fmt.Fprintf(&b, `{"token":%s,"type":"wevion_api_key","url":"https://github.com/o/r/blob/abc/config.yml","source":"content"}`, j)
	}
	b.WriteString("]")
	return b.String()
}

func TestSecretScanning_AcceptsGitHubsPublishedExample(t *testing.T) {
	s := newScanEnv(t)
	w := serve(s.h, "POST", admin.SecretScanningPath, githubExamplePayload, "Authorization", "",
		"Github-Public-Key-Identifier", githubExampleKeyID, "Github-Public-Key-Signature", githubExampleSig)
	got := verdicts(t, w)
	if want := []verdict{{"some_token", "some_type", admin.LabelFalsePositive}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("verdicts %v, want %v", got, want)
	}
	// The same report with one byte changed is refused.
	w = serve(s.h, "POST", admin.SecretScanningPath, strings.Replace(githubExamplePayload, "some_url", "some_uri", 1), "Authorization", "",
		"Github-Public-Key-Identifier", githubExampleKeyID, "Github-Public-Key-Signature", githubExampleSig)
	wantProblem(t, w, http.StatusUnauthorized, "invalid_signature")
}

func TestSecretScanning_RevokesLiveKeysAndLabelsEveryToken(t *testing.T) {
	s := newScanEnv(t)
	live := s.create("ci", "u1", "t1", "owner")
	other := s.create("kept", "u1", "t1", "owner")
	unknown, _ := s.format.Generate()
	// Warm the cache, as a busy proxy would have it.
	if id, err := s.resolver.Resolve(context.Background(), keystore.HashKey(live.Key)); err != nil || id.Revoked {
		t.Fatalf("before: %+v %v", id, err)
	}
	s.evictor.reset()

	w := s.report(reportOf(live.Key, unknown, "wev_not_even_well_formed", "ghp_someone_elses", live.Key))
	got := verdicts(t, w)
	want := []string{admin.LabelTruePositive, admin.LabelFalsePositive, admin.LabelFalsePositive, admin.LabelFalsePositive, admin.LabelTruePositive}
	if len(got) != len(want) {
		t.Fatalf("%d verdicts for 5 tokens: %v", len(got), got)
	}
	for i, v := range got {
		if v.Label != want[i] || v.TokenType != "wevion_api_key" {
			t.Errorf("verdict %d: %+v, want label %s", i, v, want[i])
		}
	}
	if got[0].TokenRaw != live.Key || got[2].TokenRaw != "wev_not_even_well_formed" {
		t.Errorf("token_raw not echoed: %+v", got)
	}

	// Revoked in the store, and no cache serves the old identity.
	k, err := s.store.GetKey(context.Background(), live.ID)
	if err != nil || k.RevokedAt == nil {
		t.Fatalf("reported key not revoked: %+v %v", k, err)
	}
	if id, err := s.resolver.Resolve(context.Background(), keystore.HashKey(live.Key)); err != nil || !id.Revoked {
		t.Fatalf("cached identity after the report: %+v %v", id, err)
	}
	if ev := s.evictor.evicted(); len(ev) != 1 || ev[0] != keystore.HashKey(live.Key) {
		t.Errorf("evicted %v, want the reported key's hash once", ev)
	}
	if acks := w.Header().Get("Keyproxy-Revocation-Acks"); acks != "1/1" {
		t.Errorf("Keyproxy-Revocation-Acks %q, want 1/1 as for a DELETE", acks)
	}
	if lines := s.logs.FilterMessage("leaked API keys evicted").All(); len(lines) != 1 ||
		lines[0].ContextMap()["replicas_confirmed"] != int64(1) || lines[0].ContextMap()["keys"] != int64(1) {
		t.Errorf("eviction logged as %v, want one line with 1 key and 1 replica confirmed", lines)
	}
	if k, _ := s.store.GetKey(context.Background(), other.ID); k.RevokedAt != nil {
		t.Error("an unreported key was revoked")
	}

	var revoked []audit.Event
	for _, ev := range s.events.all() {
		if ev.Type == audit.TypeKeyRevoked {
			revoked = append(revoked, ev)
		}
	}
	if len(revoked) != 1 {
		t.Fatalf("%d key.revoked events, want 1: %+v", len(revoked), revoked)
	}
	ev := revoked[0]
	if ev.KeyID != live.ID || ev.UserID != "u1" || ev.TeamID != "t1" || ev.Actor != admin.SecretScanningActor ||
		ev.Outcome != admin.OutcomeLeaked || ev.Path != admin.SecretScanningPath || ev.RequestID == "" {
		t.Errorf("audit event %+v", ev)
	}
	for _, entry := range s.logs.All() {
		if line := fmt.Sprint(entry.Message, entry.ContextMap()); strings.Contains(line, live.Key) || strings.Contains(line, unknown) {
			t.Errorf("a reported token reached the log: %s", line)
		}
	}
	if v := metricValue(t, s.env, "keyproxy_secret_scanning_tokens_total", "label", "true_positive"); v != 2 {
		t.Errorf("true positives counted %v, want 2", v)
	}

	// Reported again: still a true positive, nothing revoked twice.
	got = verdicts(t, s.report(reportOf(live.Key)))
	if got[0].Label != admin.LabelTruePositive {
		t.Errorf("already revoked key labelled %s", got[0].Label)
	}
	if n := len(s.events.all()); n != 3 { // two creates, one revocation
		t.Errorf("%d audit events, want 3", n)
	}
	// Both reports are logged with where GitHub found the key.
	for _, msg := range []string{"leaked API key revoked on a GitHub secret-scanning report", "revoked API key reported again by GitHub secret scanning"} {
		lines := s.logs.FilterMessage(msg).All()
		if len(lines) != 1 || lines[0].ContextMap()["url"] != "https://github.com/o/r/blob/abc/config.yml" || lines[0].ContextMap()["key_id"] != live.ID {
			t.Errorf("%q logged %d times, want once with the key id and the url: %v", msg, len(lines), lines)
		}
	}
}

func TestSecretScanning_RefusesUnsignedOrMissignedReports(t *testing.T) {
	s := newScanEnv(t)
	live := s.create("ci", "u1", "t1", "owner")
	body := reportOf(live.Key)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := sign(t, s.signer, body)
	tests := []struct {
		name string
		hdr  []string // replaces the signature headers
	}{
		{"no signature headers", []string{"Github-Public-Key-Identifier", "", "Github-Public-Key-Signature", ""}},
		{"no identifier", []string{"Github-Public-Key-Identifier", ""}},
		{"no signature", []string{"Github-Public-Key-Signature", ""}},
		{"unknown identifier", []string{"Github-Public-Key-Identifier", "rotated-away"}},
		{"signed by another key", []string{"Github-Public-Key-Signature", sign(t, stranger, body)}},
		{"signature over another body", []string{"Github-Public-Key-Signature", sign(t, s.signer, body+" ")}},
		{"signature not base64", []string{"Github-Public-Key-Signature", "!!" + good}},
		{"signature truncated", []string{"Github-Public-Key-Signature", good[:len(good)-8]}},
		{"GitHub's key names our body", []string{"Github-Public-Key-Identifier", githubExampleKeyID}},
		{"overlong signature", []string{"Github-Public-Key-Signature", strings.Repeat("A", 600)}},
		{"admin token instead of a signature", []string{"Github-Public-Key-Identifier", "", "Github-Public-Key-Signature", "", "Authorization", "Bearer " + testToken}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, s.report(body, tt.hdr...), http.StatusUnauthorized, "invalid_signature")
		})
	}
	t.Run("two signatures", func(t *testing.T) {
		r := httptest.NewRequest("POST", admin.SecretScanningPath, strings.NewReader(body))
		r.Header.Set("Github-Public-Key-Identifier", testScanKeyID)
		r.Header.Add("Github-Public-Key-Signature", good)
		r.Header.Add("Github-Public-Key-Signature", good)
		w := httptest.NewRecorder()
		s.h.ServeHTTP(w, r)
		wantProblem(t, w, http.StatusUnauthorized, "invalid_signature")
	})
	if k, _ := s.store.GetKey(context.Background(), live.ID); k.RevokedAt != nil {
		t.Fatal("an unauthenticated report revoked a key")
	}
	if v := metricValue(t, s.env, "keyproxy_secret_scanning_reports_total", "result", "invalid_signature"); v != float64(len(tests)+1) {
		t.Errorf("invalid_signature counted %v times, want %d", v, len(tests)+1)
	}
}

func TestSecretScanning_RefusedReports(t *testing.T) {
	s := newScanEnv(t, func(c *admin.Config) { c.SecretScanning.MaxBodyBytes = 64 << 10 })
	tests := []struct {
		name, body string
		status     int
		code       string
	}{
		{"object instead of array", `{"token":"x"}`, 400, "invalid_request"},
		{"token not a string", `[{"token":42}]`, 400, "invalid_request"},
		{"token missing", `[{"type":"x"}]`, 400, "invalid_request"},
		{"null entry", `[null]`, 400, "invalid_request"},
		{"type not a string", `[{"token":"x","type":["a"]}]`, 400, "invalid_request"},
		{"not JSON", `[{"token":`, 400, "invalid_request"},
		{"too many tokens", "[" + strings.Repeat(`{"token":"x"},`, 1000) + `{"token":"x"}]`, 400, "invalid_request"},
		{"over the body limit", "[" + strings.Repeat(`{"token":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},`, 2000) + `{"token":"x"}]`, 413, "request_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, s.report(tt.body), tt.status, tt.code)
		})
	}
	t.Run("unknown members are ignored", func(t *testing.T) {
		got := verdicts(t, s.report(`[{"token":"x","type":"t","url":"","source":"npm","new_field":{"a":1}}]`))
		if len(got) != 1 || got[0].Label != admin.LabelFalsePositive {
			t.Errorf("%+v", got)
		}
	})
	t.Run("empty report", func(t *testing.T) {
		if got := verdicts(t, s.report(`[]`)); len(got) != 0 {
			t.Errorf("%+v", got)
		}
	})
}

func TestSecretScanning_StoreDownIsRetryable(t *testing.T) {
	s := newScanEnv(t)
	live := s.create("ci", "u1", "t1", "owner")
	s.store.Close()
	w := s.report(reportOf(live.Key))
	wantProblem(t, w, http.StatusServiceUnavailable, "store_unavailable")
	if strings.Contains(w.Body.String(), live.Key) {
		t.Error("the problem echoes the token")
	}
}

func TestSecretScanning_OffUnlessConfigured(t *testing.T) {
	e := newEnv(t)
	w := serve(e.h, "POST", admin.SecretScanningPath, githubExamplePayload, "Authorization", "",
		"Github-Public-Key-Identifier", githubExampleKeyID, "Github-Public-Key-Signature", githubExampleSig)
	wantProblem(t, w, http.StatusNotFound, "not_found")
	s := newScanEnv(t)
	w = serve(s.h, "GET", admin.SecretScanningPath, "")
	wantProblem(t, w, http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestSecretScanning_ConfigChecked(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	store := openStore(t)
	for name, sc := range map[string]*admin.SecretScanning{
		"no keys":          {Keys: store},
		"no resolver":      {PublicKeys: map[string]*ecdsa.PublicKey{"a": &p256.PublicKey}},
		"P-384 key":        {Keys: store, PublicKeys: map[string]*ecdsa.PublicKey{"a": &p384.PublicKey}},
		"empty identifier": {Keys: store, PublicKeys: map[string]*ecdsa.PublicKey{"": &p256.PublicKey}},
		"negative limit":   {Keys: store, PublicKeys: map[string]*ecdsa.PublicKey{"a": &p256.PublicKey}, MaxBodyBytes: -1},
	} {
		t.Run(name, func(t *testing.T) {
			format, _ := keystore.NewFormat("wev_")
			_, err := admin.New(admin.Config{Store: store, Evictor: &recordingEvictor{}, Format: format, SecretScanning: sc})
			if err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestParsePublicKeyPEM(t *testing.T) {
	pemOf := func(k any) string {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	tests := []struct {
		name, pem string
		ok        bool
	}{
		{"GitHub's example key", githubExamplePEM, true},
		{"generated P-256", pemOf(&p256.PublicKey), true},
		{"P-384", pemOf(&p384.PublicKey), false},
		{"RSA", pemOf(&rsaKey.PublicKey), false},
		{"not PEM", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE", false},
		{"private key block", strings.ReplaceAll(githubExamplePEM, "PUBLIC KEY", "PRIVATE KEY"), false},
		{"garbage inside", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := admin.ParsePublicKeyPEM([]byte(tt.pem)); (err == nil) != tt.ok {
				t.Errorf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
