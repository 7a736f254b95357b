package main

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/ratelimit"
)

// ListenerTLS is the certificate a listener serves; both files or neither.
// The files are read again when they change (checked at most once a
// second, on a handshake) and on SIGHUP.
type ListenerTLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// AdminTLS adds client-certificate authentication to the admin listener.
type AdminTLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ClientCAFile, when set, makes every admin connection present a
	// certificate issued by one of these CAs.
	ClientCAFile string `mapstructure:"client_ca_file"`
}

// InvalidKeys is the per-address budget of refused well-formed keys
// (proxy.Config.InvalidKeyLimit); requests 0 turns it off.
type InvalidKeys struct {
	Requests   int           `mapstructure:"requests"`
	Per        time.Duration `mapstructure:"per"`
	Burst      int           `mapstructure:"burst"`
	MaxClients int           `mapstructure:"max_clients"`
}

func (k InvalidKeys) limit() ratelimit.Limit {
	if k.Requests == 0 {
		return ratelimit.Limit{}
	}
	return ratelimit.Limit{Requests: k.Requests, Per: k.Per, Burst: k.Burst}
}

// SecretScanning turns on POST /github/secret-scanning on the admin listener.
type SecretScanning struct {
	Enabled bool `mapstructure:"enabled"`
	// PublicKeys are GitHub's secret-scanning public keys by identifier:
	// each value is the PEM text or the path of a PEM file.
	PublicKeys   map[string]string `mapstructure:"public_keys"`
	MaxBodyBytes int64             `mapstructure:"max_body_bytes"`
}

func setSecurityDefaults(v *viper.Viper) {
	v.SetDefault("tls.cert_file", "")
	v.SetDefault("tls.key_file", "")
	v.SetDefault("admin.tls.cert_file", "")
	v.SetDefault("admin.tls.key_file", "")
	v.SetDefault("admin.tls.client_ca_file", "")
	v.SetDefault("upstream.ca_file", "")
	v.SetDefault("invalid_keys.requests", 60)
	v.SetDefault("invalid_keys.per", time.Minute)
	v.SetDefault("invalid_keys.burst", 30)
	v.SetDefault("invalid_keys.max_clients", 100_000)
	v.SetDefault("secret_scanning.enabled", false)
	v.SetDefault("secret_scanning.public_keys", map[string]string{})
	v.SetDefault("secret_scanning.max_body_bytes", admin.DefaultReportMaxBytes)
}

// validateSecurity checks the TLS, throttle and secret-scanning keys. It
// reads the files they name, so check-config finds a bad certificate
// before a start does.
func (c *Config) validateSecurity() []string {
	var p []string
	add := func(key, format string, args ...any) {
		p = append(p, key+": "+fmt.Sprintf(format, args...))
	}
	checkPair := func(prefix, cert, key string) {
		switch {
		case cert == "" && key == "":
		case cert == "" || key == "":
			add(prefix+"cert_file", "cert_file and key_file must be set together")
		default:
			if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
				add(prefix+"cert_file", "%v", err)
			}
		}
	}
	checkPair("tls.", c.TLS.CertFile, c.TLS.KeyFile)
	checkPair("admin.tls.", c.Admin.TLS.CertFile, c.Admin.TLS.KeyFile)
	if f := c.Admin.TLS.ClientCAFile; f != "" {
		if c.Admin.TLS.CertFile == "" {
			add("admin.tls.client_ca_file", "needs admin.tls.cert_file and key_file: client certificates need TLS")
		}
		if _, err := loadCertPool(f); err != nil {
			add("admin.tls.client_ca_file", "%v", err)
		}
	}
	if f := c.Upstream.CAFile; f != "" {
		if u, err := url.Parse(c.Upstream.URL); err == nil && u.Scheme != "https" {
			add("upstream.ca_file", "is set but upstream.url is not https")
		}
		if _, err := loadCertPool(f); err != nil {
			add("upstream.ca_file", "%v", err)
		}
	}
	if k := c.InvalidKeys; k.Requests != 0 {
		if k.Requests < 0 {
			add("invalid_keys.requests", "must be positive, or 0 to turn the limit off")
		}
		if k.Per <= 0 {
			add("invalid_keys.per", "must be a positive duration")
		}
		if k.Burst <= 0 {
			add("invalid_keys.burst", "must be positive")
		}
	}
	if c.InvalidKeys.MaxClients < 1 {
		add("invalid_keys.max_clients", "must be at least 1")
	}
	if s := c.SecretScanning; s.Enabled {
		if len(s.PublicKeys) == 0 {
			add("secret_scanning.public_keys", "must name at least one key when secret_scanning.enabled is true")
		}
		_, problems := s.keys()
		p = append(p, problems...)
	}
	if n := c.SecretScanning.MaxBodyBytes; n < 1024 || n > 64<<20 {
		add("secret_scanning.max_body_bytes", "must be between 1024 and 67108864, got %d", n)
	}
	return p
}

// keys parses the configured public keys; each problem names its key.
func (s SecretScanning) keys() (map[string]*ecdsa.PublicKey, []string) {
	out := make(map[string]*ecdsa.PublicKey, len(s.PublicKeys))
	var problems []string
	for _, id := range sortedKeys(s.PublicKeys) {
		text := strings.TrimSpace(s.PublicKeys[id])
		b := []byte(text)
		if !strings.HasPrefix(text, "-----BEGIN") {
			var err error
			if b, err = os.ReadFile(text); err != nil {
				problems = append(problems, fmt.Sprintf("secret_scanning.public_keys.%s: neither PEM text nor a readable file: %v", id, err))
				continue
			}
		}
		k, err := admin.ParsePublicKeyPEM(b)
		if err != nil {
			problems = append(problems, fmt.Sprintf("secret_scanning.public_keys.%s: %v", id, err))
			continue
		}
		out[id] = k
	}
	return out, problems
}

// loadCertPool reads a PEM bundle of CA certificates.
func loadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
