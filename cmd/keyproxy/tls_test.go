package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA issues certificates for one test; nothing is committed.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate and key in PEM: a server certificate for
// 127.0.0.1, or a client certificate.
func (ca *testCA) issue(t *testing.T, serial int64, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "keyproxy-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *testCA) clientCert(t *testing.T) tls.Certificate {
	c, k := ca.issue(t, 7, true)
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func write(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tlsInstance is a keyproxy started on its own so the test can reach it
// over TLS and send it SIGHUP.
type tlsInstance struct {
	proxyAddr, adminAddr string
	hup                  chan os.Signal
	logs                 *syncBuffer
}

func startTLSInstance(t *testing.T, env ...string) *tlsInstance {
	t.Helper()
	return startServing(t, "", env...)
}

// startServing runs serve on file (may be empty) and env, on free ports.
func startServing(t *testing.T, file string, env ...string) *tlsInstance {
	t.Helper()
	dir := t.TempDir()
	env = append([]string{
		"KEYPROXY_STORE_DSN=" + filepath.Join(dir, "keyproxy.db"),
		"KEYPROXY_ADMIN_TOKENS=test-admin-token-0123456789",
		"KEYPROXY_SHUTDOWN_TIMEOUT=5s",
		"KEYPROXY_LOG_FLUSH_INTERVAL=0s",
	}, env...)
	cfg, err := LoadConfig(file, env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := &tlsInstance{proxyAddr: pl.Addr().String(), adminAddr: al.Addr().String(), hup: make(chan os.Signal, 1), logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, func() (*Config, error) { return LoadConfig(file, env) }, in.logs, in.hup, &listeners{proxy: pl, admin: al})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("keyproxy did not stop")
		}
	})
	// Ready once the proxy listener answers a TLS handshake or plain TCP.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", in.proxyAddr)
		if err == nil {
			c.Close()
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("not listening: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client returns an HTTPS client trusting roots; it opens a new connection
// per request, so every request sees the certificate served right now.
func httpsClient(t *testing.T, roots *x509.CertPool, mutate func(*tls.Config)) *http.Client {
	c := &tls.Config{RootCAs: roots}
	if mutate != nil {
		mutate(c)
	}
	tr := &http.Transport{TLSClientConfig: c, DisableKeepAlives: true, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestTLS_DataPlaneServesModernTLSAndHTTP2(t *testing.T) {
	be := newBackend(t)
	ca := newTestCA(t, "test CA")
	dir := t.TempDir()
	c, k := ca.issue(t, 2, false)
	in := startTLSInstance(t, "KEYPROXY_UPSTREAM_URL="+be.URL,
		"KEYPROXY_TLS_CERT_FILE="+write(t, filepath.Join(dir, "c.pem"), c), "KEYPROXY_TLS_KEY_FILE="+write(t, filepath.Join(dir, "k.pem"), k))
	url := "https://" + in.proxyAddr + "/x"

	res, err := httpsClient(t, ca.pool(), nil).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 || res.TLS.Version != tls.VersionTLS13 || res.ProtoMajor != 2 {
		t.Errorf("status %d, TLS %x, HTTP/%d: want 401 over TLS 1.3 and HTTP/2", res.StatusCode, res.TLS.Version, res.ProtoMajor)
	}
	for _, tt := range []struct {
		name   string
		mutate func(*tls.Config)
		ok     bool
	}{
		{"TLS 1.2 with an AEAD suite", func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		}, true},
		{"TLS 1.1", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, false},
		{"TLS 1.2 with CBC only", func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		}, false},
		{"a client that does not trust the CA", func(c *tls.Config) { c.RootCAs = x509.NewCertPool() }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := httpsClient(t, ca.pool(), tt.mutate).Get(url)
			if err == nil {
				res.Body.Close()
			}
			if (err == nil) != tt.ok {
				t.Errorf("err = %v, want success %v", err, tt.ok)
			}
		})
	}
	// Plain HTTP on the TLS port is no way in.
	pres, err := http.Get("http://" + in.proxyAddr + "/x")
	if err == nil {
		pres.Body.Close()
		if pres.StatusCode < 400 {
			t.Errorf("plain HTTP on the TLS listener: %d", pres.StatusCode)
		}
	}
}

func TestTLS_CertificateReloadedOnChangeAndOnSIGHUP(t *testing.T) {
	ca := newTestCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	c, k := ca.issue(t, 100, false)
	write(t, certFile, c)
	write(t, keyFile, k)
	in := startTLSInstance(t, "KEYPROXY_TLS_CERT_FILE="+certFile, "KEYPROXY_TLS_KEY_FILE="+keyFile)
	if s := servedSerial(t, in.proxyAddr, ca.pool()); s != 100 {
		t.Fatalf("serial %d at start", s)
	}

	// Rotated in place: picked up by a handshake within a few seconds.
	c2, k2 := ca.issue(t, 200, false)
	write(t, keyFile, k2)
	write(t, certFile, c2)
	deadline := time.Now().Add(5 * time.Second)
	for servedSerial(t, in.proxyAddr, ca.pool()) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("rotated certificate not served within 5s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	stCert, _ := os.Stat(certFile)
	stKey, _ := os.Stat(keyFile)

	// A broken file keeps the good certificate serving.
	write(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	time.Sleep(certCheckInterval + 100*time.Millisecond)
	if s := servedSerial(t, in.proxyAddr, ca.pool()); s != 200 {
		t.Fatalf("serial %d after a broken rotation, want the previous 200", s)
	}
	if !strings.Contains(in.logs.String(), "certificate not reloaded") {
		t.Error("a failed reload was not logged")
	}

	// SIGHUP reloads at once, even files that look unchanged (the size
	// and time of the certificate that serves, as some deploy tools leave
	// them), which the check on handshakes cannot see.
	c3, k3 := ca.issue(t, 300, false)
	for len(c3) != len(c2) || len(k3) != len(k2) {
		c3, k3 = ca.issue(t, 300, false)
	}
	write(t, keyFile, k3)
	write(t, certFile, c3)
	_ = os.Chtimes(certFile, stCert.ModTime(), stCert.ModTime())
	_ = os.Chtimes(keyFile, stKey.ModTime(), stKey.ModTime())
	time.Sleep(certCheckInterval + 100*time.Millisecond)
	if s := servedSerial(t, in.proxyAddr, ca.pool()); s != 200 {
		t.Fatalf("serial %d before SIGHUP: the files were meant to look unchanged", s)
	}
	in.hup <- os.Interrupt
	deadline = time.Now().Add(5 * time.Second)
	for servedSerial(t, in.proxyAddr, ca.pool()) != 300 {
		if time.Now().After(deadline) {
			t.Fatal("certificate not reloaded on SIGHUP")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTLS_AdminListenerRequiresClientCertificate(t *testing.T) {
	ca, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "other CA")
	dir := t.TempDir()
	c, k := ca.issue(t, 2, false)
	in := startTLSInstance(t,
		"KEYPROXY_ADMIN_TLS_CERT_FILE="+write(t, filepath.Join(dir, "c.pem"), c),
		"KEYPROXY_ADMIN_TLS_KEY_FILE="+write(t, filepath.Join(dir, "k.pem"), k),
		"KEYPROXY_ADMIN_TLS_CLIENT_CA_FILE="+write(t, filepath.Join(dir, "ca.pem"), clientCA.pem))
	for _, tt := range []struct {
		name string
		cert []tls.Certificate
		ok   bool
	}{
		{"no client certificate", nil, false},
		{"certificate from another CA", []tls.Certificate{otherCA.clientCert(t)}, false},
		{"certificate from the client CA", []tls.Certificate{clientCA.clientCert(t)}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := httpsClient(t, ca.pool(), func(c *tls.Config) { c.Certificates = tt.cert })
			for _, path := range []string{"/healthz", "/admin/v1/keys?team_id=t"} {
				req, _ := http.NewRequest("GET", "https://"+in.adminAddr+path, nil)
				req.Header.Set("Authorization", "Bearer test-admin-token-0123456789")
				res, err := cl.Do(req)
				if err == nil {
					res.Body.Close()
				}
				if (err == nil) != tt.ok || tt.ok && res.StatusCode != 200 {
					t.Errorf("%s: err %v, want success %v", path, err, tt.ok)
				}
			}
		})
	}
	// The data plane stays plain HTTP when only the admin listener has TLS.
	res, err := http.Get("http://" + in.proxyAddr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("data plane: %d", res.StatusCode)
	}
}

func TestTLS_UpstreamTrustsOnlyTheConfiguredCA(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	be.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	be.StartTLS()
	t.Cleanup(be.Close)
	dir := t.TempDir()
	beCA := write(t, filepath.Join(dir, "backend-ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: be.Certificate().Raw}))
	otherCA := write(t, filepath.Join(dir, "other-ca.pem"), newTestCA(t, "other").pem)
	for _, tt := range []struct {
		name   string
		env    []string
		status int
	}{
		{"with the backend's CA", []string{"KEYPROXY_UPSTREAM_CA_FILE=" + beCA}, 200},
		{"with another CA", []string{"KEYPROXY_UPSTREAM_CA_FILE=" + otherCA}, 502},
		{"with the system roots", nil, 502},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := startInstance(t, append([]string{"KEYPROXY_UPSTREAM_URL=" + be.URL}, tt.env...)...)
			resp, body := in.admin(t, http.MethodPost, "/admin/v1/keys", map[string]any{"name": "k", "user_id": "u", "team_id": "t", "role": "owner"})
			if resp.StatusCode != 201 {
				t.Fatalf("create: %d %s", resp.StatusCode, body)
			}
			resp, body = in.call(t, decode(t, body)["key"].(string), "/x")
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
		})
	}
}

func TestConfig_SecurityKeysValidated(t *testing.T) {
	ca := newTestCA(t, "ca")
	dir := t.TempDir()
	c, k := ca.issue(t, 2, false)
	_, otherKey := ca.issue(t, 3, false)
	cert, key := write(t, filepath.Join(dir, "c.pem"), c), write(t, filepath.Join(dir, "k.pem"), k)
	other := write(t, filepath.Join(dir, "other-k.pem"), otherKey)
	notPEM := write(t, filepath.Join(dir, "junk"), []byte("junk"))
	caFile := write(t, filepath.Join(dir, "ca.pem"), ca.pem)
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"certificate without key", []string{"KEYPROXY_TLS_CERT_FILE=" + cert}, "tls.cert_file"},
		{"key that does not match", []string{"KEYPROXY_TLS_CERT_FILE=" + cert, "KEYPROXY_TLS_KEY_FILE=" + other}, "tls.cert_file"},
		{"missing certificate file", []string{"KEYPROXY_ADMIN_TLS_CERT_FILE=" + dir + "/nope", "KEYPROXY_ADMIN_TLS_KEY_FILE=" + key}, "admin.tls.cert_file"},
		{"client CA without admin TLS", []string{"KEYPROXY_ADMIN_TLS_CLIENT_CA_FILE=" + caFile}, "admin.tls.client_ca_file"},
		{"client CA file not PEM", []string{"KEYPROXY_ADMIN_TLS_CERT_FILE=" + cert, "KEYPROXY_ADMIN_TLS_KEY_FILE=" + key, "KEYPROXY_ADMIN_TLS_CLIENT_CA_FILE=" + notPEM}, "admin.tls.client_ca_file"},
		{"upstream CA with an http upstream", []string{"KEYPROXY_UPSTREAM_CA_FILE=" + caFile}, "upstream.ca_file"},
		{"upstream CA not PEM", []string{"KEYPROXY_UPSTREAM_URL=https://backend", "KEYPROXY_UPSTREAM_CA_FILE=" + notPEM}, "upstream.ca_file"},
		{"negative invalid_keys", []string{"KEYPROXY_INVALID_KEYS_REQUESTS=-1"}, "invalid_keys.requests"},
		{"invalid_keys without burst", []string{"KEYPROXY_INVALID_KEYS_BURST=0"}, "invalid_keys.burst"},
		{"secret scanning without keys", []string{"KEYPROXY_SECRET_SCANNING_ENABLED=true"}, "secret_scanning.public_keys"},
		{"tiny report limit", []string{"KEYPROXY_SECRET_SCANNING_MAX_BODY_BYTES=10"}, "secret_scanning.max_body_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig("", tt.env)
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got %v, want one line naming %s", err, tt.want)
			}
		})
	}
	t.Run("secret scanning keys from a file and inline", func(t *testing.T) {
		pub := githubPEMForTest
		file := write(t, filepath.Join(dir, "gh.pem"), []byte(pub))
		yaml := "secret_scanning:\n  enabled: true\n  public_keys:\n    aaaa: " + file + "\n    bbbb: |\n" + indent(pub, "      ") +
			"    cccc: /nonexistent.pem\n    dddd: \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n\"\n"
		_, err := LoadConfig(writeFile(t, yaml), nil)
		if err == nil || !strings.Contains(err.Error(), "secret_scanning.public_keys.cccc") || !strings.Contains(err.Error(), "secret_scanning.public_keys.dddd") ||
			strings.Contains(err.Error(), ".aaaa") || strings.Contains(err.Error(), ".bbbb") {
			t.Errorf("got %v, want cccc and dddd named, aaaa and bbbb accepted", err)
		}
	})
}

func indent(s, prefix string) string {
	var b bytes.Buffer
	for _, line := range strings.SplitAfter(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + strings.TrimRight(line, "\n") + "\n")
	}
	return b.String()
}

// githubPEMForTest is GitHub's published example secret-scanning key.
const githubPEMForTest = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9MJJHnMfn2+H4xL4YaPDA4RpJqUq
kCmRCBnYERxZanmcpzQSXs1X/AljlKkbJ8qpVIW4clayyef9gWhFbNHWAA==
-----END PUBLIC KEY-----
`

// The operator CLI reaches an admin listener that wants a client
// certificate, given --ca-file, --cert-file and --key-file.
func TestCLI_ReachesAdminListenerWithClientCertificate(t *testing.T) {
	ca, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	dir := t.TempDir()
	c, k := ca.issue(t, 2, false)
	in := startTLSInstance(t,
		"KEYPROXY_ADMIN_TLS_CERT_FILE="+write(t, filepath.Join(dir, "c.pem"), c),
		"KEYPROXY_ADMIN_TLS_KEY_FILE="+write(t, filepath.Join(dir, "k.pem"), k),
		"KEYPROXY_ADMIN_TLS_CLIENT_CA_FILE="+write(t, filepath.Join(dir, "clientca.pem"), clientCA.pem))
	cc, ck := clientCA.issue(t, 9, true)
	caFile := write(t, filepath.Join(dir, "ca.pem"), ca.pem)
	certFile := write(t, filepath.Join(dir, "cc.pem"), cc)
	keyFile := write(t, filepath.Join(dir, "ck.pem"), ck)
	env := []string{"KEYPROXY_ADMIN_TOKEN=test-admin-token-0123456789"}
	base := []string{"keys", "list", "--team", "t", "--json", "--admin-url", "https://" + in.adminAddr, "--ca-file", caFile}
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"with the client certificate", []string{"--cert-file", certFile, "--key-file", keyFile}, exitOK},
		{"without a client certificate", nil, exitFailure},
		{"certificate without its key", []string{"--cert-file", certFile}, exitBadUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append(append([]string{}, base...), tt.args...), env, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s%s", code, tt.code, stdout.String(), stderr.String())
			}
			if tt.code == exitOK && !strings.Contains(stdout.String(), `"keys"`) {
				t.Errorf("output %q", stdout.String())
			}
		})
	}
}
