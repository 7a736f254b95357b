package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/keystore"
)

// A GitHub secret-scanning report naming a live key revokes it. The test
// signs the report with its own key; in production PublicKeys holds
// GitHub's, read with ParsePublicKeyPEM.
func ExampleSecretScanning() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyproxy-scan-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := keystore.OpenSQLite(ctx, filepath.Join(dir, "keyproxy.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	resolver, err := keystore.NewResolver(store, keystore.ResolverOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer resolver.Close()
	format, _ := keystore.NewFormat("wev_")

	github, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&github.PublicKey)
	pub, err := admin.ParsePublicKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		log.Fatal(err)
	}
	h, err := admin.New(admin.Config{Store: store, Evictor: resolver, Format: format, Tokens: []string{"a-long-random-admin-token"},
		SecretScanning: &admin.SecretScanning{PublicKeys: map[string]*ecdsa.PublicKey{"gh-key-1": pub}, Keys: store}})
	if err != nil {
		log.Fatal(err)
	}

	// A key someone committed to a public repository.
	key, _ := format.Generate()
	id, _ := keystore.NewID()
	if _, err := store.CreateKey(ctx, keystore.NewKey{ID: id, Hash: keystore.HashKey(key), Start: format.Start(key), Name: "ci",
		UserID: "u_42", TeamID: "t_7", Role: "owner", MaxActivePerTeam: 10}); err != nil {
		log.Fatal(err)
	}

	report := `[{"token":"` + key + `","type":"wevion_api_key","url":"https://github.com/o/r/blob/1/.env","source":"content"}]`
	digest := sha256.Sum256([]byte(report))
	sig, _ := ecdsa.SignASN1(rand.Reader, github, digest[:])
	req := httptest.NewRequest("POST", admin.SecretScanningPath, strings.NewReader(report))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Github-Public-Key-Identifier", "gh-key-1")
	req.Header.Set("Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)

	var verdicts []struct{ Label string }
	_ = json.Unmarshal(w.Body.Bytes(), &verdicts)
	identity, _ := resolver.Resolve(ctx, keystore.HashKey(key))
	fmt.Println("report:", w.Code, "label:", verdicts[0].Label, "revoked:", identity.Revoked)
	// Output:
	// report: 200 label: true_positive revoked: true
}
