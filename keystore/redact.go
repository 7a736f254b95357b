package keystore

import (
	"cmp"
	"slices"
	"strings"
)

// Redacted stands in a log line or an audit event for a secret that was
// removed from it.
const Redacted = "[redacted]"

// redactMin is the length of base62 run after the key prefix from which a
// string is treated as (part of) a key: longer than a display start
// (prefix + 4), far shorter than a key.
const redactMin = 8

// Redact replaces every run of the key prefix followed by redactMin or more
// base62 characters in s, so a key a client put in its path, user agent or
// actor name reaches neither a log nor the audit trail. s without the
// prefix is returned as is, without allocating.
func (f Format) Redact(s string) string {
	prefix := f.prefix
	i := strings.Index(s, prefix)
	if i < 0 || prefix == "" {
		return s
	}
	var b strings.Builder
	for i >= 0 {
		j := i + len(prefix)
		for j < len(s) && base62Index[s[j]] != 0xff {
			j++
		}
		if j-i-len(prefix) >= redactMin {
			b.WriteString(s[:i])
			b.WriteString(Redacted)
		} else {
			// Too short to be a key; the next prefix may start inside it.
			j = i + len(prefix)
			b.WriteString(s[:j])
		}
		s = s[j:]
		i = strings.Index(s, prefix)
	}
	b.WriteString(s)
	return b.String()
}

// Redactor removes the keys of one Format and a fixed set of other secrets
// (the admin tokens) from strings bound for logs and audit events. Build it
// once at start-up; the zero value redacts nothing.
type Redactor struct {
	format  Format
	secrets []string // longest first, so a secret holding another goes whole
	minLen  int      // of the secrets: a shorter string cannot hold one
}

// NewRedactor redacts f's keys and every secret in secrets (empty ones are
// ignored) wherever it occurs in a string.
func NewRedactor(f Format, secrets []string) Redactor {
	r := Redactor{format: f}
	for _, s := range secrets {
		if s != "" && !slices.Contains(r.secrets, s) {
			r.secrets = append(r.secrets, s)
		}
	}
	slices.SortFunc(r.secrets, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	if n := len(r.secrets); n > 0 {
		r.minLen = len(r.secrets[n-1])
	}
	return r
}

// Redact returns s with every secret, then every key, replaced by Redacted.
// The secrets go first so that a key-like run inside one cannot leave the
// rest of it behind. s holding neither is returned as is, without
// allocating, and s shorter than the shortest secret is not searched for
// secrets at all.
func (r Redactor) Redact(s string) string {
	if r.HasSecret(s) {
		for _, sec := range r.secrets {
			s = strings.ReplaceAll(s, sec, Redacted)
		}
	}
	return r.format.Redact(s)
}

// Holds reports whether s holds one of the secrets or a key: the prefix
// and at least a key's random part of base62. It is stricter than what
// Redact removes (from 8 characters on), so that input that merely starts
// like a key ("wev_production") can be refused by it without false alarms.
func (r Redactor) Holds(s string) bool {
	if r.HasSecret(s) {
		return true
	}
	prefix := r.format.prefix
	for i := strings.Index(s, prefix); i >= 0 && prefix != ""; {
		j := i + len(prefix)
		n := 0
		for j+n < len(s) && base62Index[s[j+n]] != 0xff {
			n++
		}
		if n >= randomLen {
			return true
		}
		k := strings.Index(s[j:], prefix)
		if k < 0 {
			break
		}
		i = j + k
	}
	return false
}

// HasSecret reports whether s holds one of the secrets (not a key: use
// the key prefix for that).
func (r Redactor) HasSecret(s string) bool {
	if len(r.secrets) == 0 || len(s) < r.minLen {
		return false
	}
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			return true
		}
	}
	return false
}
