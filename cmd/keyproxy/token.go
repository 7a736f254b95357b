package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tokenFilePath is where a generated admin token lives: admin.token_file,
// else beside the SQLite database, else in the working directory.
func tokenFilePath(c *Config) string {
	if c.Admin.TokenFile != "" {
		return c.Admin.TokenFile
	}
	if c.Store.Driver == "sqlite" {
		path := strings.TrimPrefix(c.Store.DSN, "file:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		return filepath.Join(filepath.Dir(path), "keyproxy.admin-token")
	}
	return "keyproxy.admin-token"
}

// adminTokens returns the configured tokens, or the token in the token file,
// creating that file (mode 0600) with a fresh random token on first start.
// created reports whether a new file was written.
func adminTokens(c *Config) (tokens []string, path string, created bool, err error) {
	if len(c.Admin.Tokens) > 0 {
		return c.Admin.Tokens, "", false, nil
	}
	path = tokenFilePath(c)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return nil, path, false, fmt.Errorf("admin token file %s holds no usable token (at least 16 characters)", path)
		}
		return []string{tok}, path, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, path, false, fmt.Errorf("reading admin token file: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, path, false, fmt.Errorf("generating admin token: %w", err)
	}
	tok := "kpa_" + base64.RawURLEncoding.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, path, false, fmt.Errorf("creating admin token file: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return nil, path, false, fmt.Errorf("writing admin token file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, path, false, fmt.Errorf("writing admin token file: %w", err)
	}
	return []string{tok}, path, true, nil
}
