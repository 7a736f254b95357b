package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// adminClient is the operator CLI's side of the admin API.
type adminClient struct {
	base  *url.URL
	token string
	actor string
	http  *http.Client
}

// clientTLS are the CLI's options for an admin listener served over TLS,
// possibly one that asks for a client certificate (admin.tls.client_ca_file).
type clientTLS struct{ caFile, certFile, keyFile string }

func (o clientTLS) config() (*tls.Config, error) {
	if o.caFile == "" && o.certFile == "" && o.keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--ca-file: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageError{fmt.Errorf("--ca-file %s holds no PEM certificate", o.caFile)}
		}
		cfg.RootCAs = pool
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, usageError{errors.New("--cert-file and --key-file go together")}
	}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--cert-file/--key-file: %w", err)}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func newAdminClient(base, token, tokenFile, actor string, tlsOpts clientTLS) (*adminClient, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Errorf("--admin-url must be an http(s) URL, got %q", base)}
	}
	if token == "" && tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--token-file: %w", err)}
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, usageError{errors.New("no admin token: set KEYPROXY_ADMIN_TOKEN or pass --token-file")}
	}
	tlsCfg, err := tlsOpts.config()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return &adminClient{base: u, token: token, actor: actor, http: &http.Client{Timeout: 30 * time.Second, Transport: tr}}, nil
}

// apiError is a problem answer of the admin API.
type apiError struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%d %s", e.Status, e.Code)
	if e.Detail != "" {
		return msg + ": " + e.Detail
	}
	if e.Title != "" {
		return msg + ": " + e.Title
	}
	return msg
}

// do sends body as JSON and decodes a JSON answer into out (if not nil).
func (c *adminClient) do(ctx context.Context, method, path string, query url.Values, body, out any) (http.Header, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.actor != "" {
		req.Header.Set("X-Actor-Id", c.actor)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API unreachable: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		ae := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, ae) != nil || ae.Code == "" {
			ae.Code = http.StatusText(resp.StatusCode)
		}
		return resp.Header, ae
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("unexpected admin API answer: %w", err)
		}
	}
	return resp.Header, nil
}
