package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/proxy"
)

// certCheckInterval is how often a handshake may look at the certificate
// files' modification times.
const certCheckInterval = time.Second

// tls12Suites are the TLS 1.2 cipher suites offered: forward secrecy and
// AEAD only. TLS 1.3, preferred whenever the client has it, has only
// suites of that kind.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// certSource serves one listener's certificate, and the admin listener's
// client CAs, from files. It reads them again when they change (looked at
// on a handshake, at most once per certCheckInterval) and on SIGHUP; a
// file that does not load keeps the previous configuration serving.
type certSource struct {
	name                      string // the config key, for log lines
	certFile, keyFile, caFile string
	log                       *zap.Logger

	cur atomic.Pointer[tls.Config]

	mu        sync.Mutex
	nextCheck time.Time
	stamp     string // the files' sizes and times when cur was loaded
	badStamp  string // the last stamp that failed to load, logged once
}

func newCertSource(name, certFile, keyFile, caFile string, log *zap.Logger) (*certSource, error) {
	s := &certSource{name: name, certFile: certFile, keyFile: keyFile, caFile: caFile, log: log}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(s.fileStamp()); err != nil {
		return nil, err
	}
	return s, nil
}

// fileStamp changes when any of the files is replaced or rewritten.
func (s *certSource) fileStamp() string {
	stamp := ""
	for _, f := range []string{s.certFile, s.keyFile, s.caFile} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err == nil {
			stamp += fmt.Sprintf("%d/%d;", st.Size(), st.ModTime().UnixNano())
		} else {
			stamp += "missing;"
		}
	}
	return stamp
}

func (s *certSource) loadLocked(stamp string) error {
	pair, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("%s.cert_file: %w", s.name, err)
	}
	c := serverTLSConfig()
	c.Certificates = []tls.Certificate{pair}
	if s.caFile != "" {
		pool, err := loadCertPool(s.caFile)
		if err != nil {
			return fmt.Errorf("%s.client_ca_file: %w", s.name, err)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	s.cur.Store(c)
	s.stamp = stamp
	return nil
}

// reload reads the files now (SIGHUP); on failure the old ones keep serving.
func (s *certSource) reload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloadLocked(s.fileStamp(), "SIGHUP")
}

func (s *certSource) reloadLocked(stamp, why string) {
	if err := s.loadLocked(stamp); err != nil {
		if stamp != s.badStamp {
			s.badStamp = stamp
			s.log.Error("certificate not reloaded; the previous one keeps serving", zap.String("reason", why), zap.Error(err))
		}
		return
	}
	s.log.Info("certificate reloaded", zap.String("key", s.name), zap.String("reason", why))
}

// configForClient is the listener's GetConfigForClient: the current
// configuration, after a look at the files if none was taken lately. A
// handshake that finds another one looking does not wait for it.
func (s *certSource) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	if s.mu.TryLock() {
		if now := time.Now(); now.After(s.nextCheck) {
			s.nextCheck = now.Add(certCheckInterval)
			if stamp := s.fileStamp(); stamp != s.stamp {
				s.reloadLocked(stamp, "files changed")
			}
		}
		s.mu.Unlock()
	}
	return s.cur.Load(), nil
}

// serverTLSConfig is the policy both listeners serve: TLS 1.2 and later,
// AEAD suites with forward secrecy, HTTP/2 offered.
func serverTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12Suites,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// tlsReloaders re-reads every listener's certificate files.
type tlsReloaders []*certSource

func (r tlsReloaders) reload() {
	for _, s := range r {
		s.reload()
	}
}

// configureTLS makes each listener with certificate files serve TLS from
// them (serveOn then calls ServeTLS). It returns what SIGHUP reloads.
func configureTLS(cfg *Config, proxySrv, adminSrv *http.Server, log *zap.Logger) (tlsReloaders, error) {
	var out tlsReloaders
	for _, l := range []struct {
		name, cert, key, ca string
		srv                 *http.Server
	}{
		{"tls", cfg.TLS.CertFile, cfg.TLS.KeyFile, "", proxySrv},
		{"admin.tls", cfg.Admin.TLS.CertFile, cfg.Admin.TLS.KeyFile, cfg.Admin.TLS.ClientCAFile, adminSrv},
	} {
		if l.cert == "" {
			continue
		}
		src, err := newCertSource(l.name, l.cert, l.key, l.ca, log)
		if err != nil {
			return nil, err
		}
		base := serverTLSConfig()
		base.GetConfigForClient = src.configForClient
		l.srv.TLSConfig = base
		out = append(out, src)
	}
	return out, nil
}

// hardenProxy applies the security settings to the data plane's config:
// the invalid-key throttle and the upstream's CA bundle.
func hardenProxy(cfg *Config, pcfg *proxy.Config) error {
	pcfg.InvalidKeyLimit = cfg.InvalidKeys.limit()
	pcfg.ThrottleClients = cfg.InvalidKeys.MaxClients
	if cfg.Upstream.CAFile == "" {
		return nil
	}
	pool, err := loadCertPool(cfg.Upstream.CAFile)
	if err != nil {
		return fmt.Errorf("upstream.ca_file: %w", err)
	}
	t := proxy.NewTransport(cfg.Upstream.Timeout)
	// Only this bundle is trusted: an internal backend's CA, not the
	// system's hundred public ones.
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	pcfg.Transport = t
	return nil
}

// secretScanning builds the admin API's leak-report endpoint, nil when off.
func secretScanning(cfg *Config, keys admin.KeyResolver) (*admin.SecretScanning, error) {
	if !cfg.SecretScanning.Enabled {
		return nil, nil
	}
	pub, problems := cfg.SecretScanning.keys()
	if len(problems) > 0 {
		return nil, usageError{fmt.Errorf("%s", problems[0])}
	}
	return &admin.SecretScanning{PublicKeys: pub, Keys: keys, MaxBodyBytes: cfg.SecretScanning.MaxBodyBytes}, nil
}
