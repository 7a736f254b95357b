package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The leaked-key response end to end: GitHub reports a live key, keyproxy
// revokes it at once, the key is refused, the audit trail says why.
func TestSecretScanning_LeakedKeyIsRevokedEndToEnd(t *testing.T) {
	be := newBackend(t)
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&signer.PublicKey)
	dir := t.TempDir()
	pemFile := write(t, filepath.Join(dir, "github.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	const keyID = "0a1b2c3d4e5f"
	cfg := writeFile(t, "upstream:\n  url: "+be.URL+"\nsecret_scanning:\n  enabled: true\n  public_keys:\n    "+keyID+": "+pemFile+"\n")
	in := startServing(t, cfg)
	const token = "test-admin-token-0123456789"
	adminDo := func(method, path, body string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+in.adminAddr+path, strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return do(t, req)
	}
	waitReady(t, "http://"+in.adminAddr+"/readyz")

	resp, body := adminDo("POST", "/admin/v1/keys", `{"name":"ci","user_id":"usr_leak","team_id":"team_leak","role":"owner"}`,
		"Authorization", "Bearer "+token, "Content-Type", "application/json")
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	created := decode(t, body)
	key, id := created["key"].(string), created["id"].(string)
	call := func() int {
		req, _ := http.NewRequest("GET", "http://"+in.proxyAddr+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, _ := do(t, req)
		return res.StatusCode
	}
	if got := call(); got != 200 {
		t.Fatalf("fresh key: %d", got)
	}

	report := `[{"token":"` + key + `","type":"wevion_api_key","url":"https://github.com/octo/app/blob/1/.env","source":"content"},` +
		`{"token":"wev_NotOneOfOurs","type":"wevion_api_key","url":"","source":"content"}]`
	digest := sha256.Sum256([]byte(report))
	sig, _ := ecdsa.SignASN1(rand.Reader, signer, digest[:])
	signature := base64.StdEncoding.EncodeToString(sig)

	// A forged report changes nothing.
	resp, body = adminDo("POST", "/github/secret-scanning", report, "Content-Type", "application/json",
		"Github-Public-Key-Identifier", keyID, "Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(append(sig[:len(sig)-1], sig[len(sig)-1]^1)))
	if resp.StatusCode != 401 || decode(t, body)["code"] != "invalid_signature" {
		t.Fatalf("forged report: %d %s", resp.StatusCode, body)
	}
	if got := call(); got != 200 {
		t.Fatalf("after a forged report the key answers %d", got)
	}

	// GitHub's report: no admin token, a signature.
	resp, body = adminDo("POST", "/github/secret-scanning", report, "Content-Type", "application/json",
		"Github-Public-Key-Identifier", keyID, "Github-Public-Key-Signature", signature)
	if resp.StatusCode != 200 {
		t.Fatalf("report: %d %s", resp.StatusCode, body)
	}
	var verdicts []map[string]string
	if err := json.Unmarshal(body, &verdicts); err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{
		{"token_raw": key, "token_type": "wevion_api_key", "label": "true_positive"},
		{"token_raw": "wev_NotOneOfOurs", "token_type": "wevion_api_key", "label": "false_positive"},
	}
	if b1, _ := json.Marshal(verdicts); !bytes.Equal(b1, mustJSON(want)) {
		t.Errorf("verdicts %s, want %s", b1, mustJSON(want))
	}
	if got := call(); got != 401 {
		t.Errorf("the reported key still answers %d", got)
	}

	// The customer reviews what happened: the revocation, by whom, why,
	// and the attempt with the key after it, in the key's trail and in its
	// team's (the web app asks by team).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = adminDo("GET", "/admin/v1/audit?key_id="+id, "", "Authorization", "Bearer "+token)
		_, teamBody := adminDo("GET", "/admin/v1/audit?team_id=team_leak", "", "Authorization", "Bearer "+token)
		if strings.Contains(string(body), `"type":"key.revoked"`) && strings.Contains(string(body), `"type":"auth.failed"`) &&
			strings.Contains(string(teamBody), `"type":"auth.failed"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the key's trail lacks its revocation or the attempt after it (or the team's lacks the attempt): %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var page struct{ Events []map[string]any }
	_ = json.Unmarshal(body, &page)
	for _, ev := range page.Events {
		if ev["type"] == "key.revoked" && (ev["actor"] != "github-secret-scanning" || ev["outcome"] != "leaked" || ev["team_id"] != "team_leak") {
			t.Errorf("revocation event %v", ev)
		}
		if ev["type"] == "auth.failed" && (ev["outcome"] != "invalid_key" || ev["user_id"] != "usr_leak" || ev["team_id"] != "team_leak" ||
			ev["key_start"] != key[:8] || ev["role"] != nil || ev["status"] != 401.0) {
			t.Errorf("attempt after the revocation: %v", ev)
		}
	}
	logs := in.logs.String()
	if strings.Contains(logs, key) {
		t.Error("the leaked key reached the log")
	}
	if !strings.Contains(logs, "leaked API key revoked") {
		t.Error("the revocation was not logged")
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
