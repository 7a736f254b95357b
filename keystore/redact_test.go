package keystore

import (
	"strings"
	"testing"
)

func TestFormatRedact(t *testing.T) {
	f := mustFormat(t, "wev_")
	tests := []struct{ in, want string }{
		{"/v1/things", "/v1/things"},
		{"/v1/wev_", "/v1/wev_"},
		{"/v1/wev_7Hk2", "/v1/wev_7Hk2"},
		{"/v1/wev_1234567", "/v1/wev_1234567"},
		{"/v1/wev_12345678", "/v1/[redacted]"},
		{"/v1/wev_1tPF0OGNvYw9lzZkYqNdWTDNl4ikTjMo1K7kXm/x", "/v1/[redacted]/x"},
		{"/a/wev_1tPF0OGNvYw9lzZk/b/wev_abcdefghij", "/a/[redacted]/b/[redacted]"},
		{"curl/8 (key wev_1tPF0OGNvYw9lzZkYqNdWTDNl4ikTjMo1K7kXm)", "curl/8 (key [redacted])"},
		{"wev_wev_1tPF0OGNvYw9lzZk", "wev_[redacted]"},
	}
	for _, tt := range tests {
		if got := f.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = f.Redact("/v1/projects/42/tasks") }); n != 0 {
		t.Errorf("a path without the prefix costs %v allocations", n)
	}
	if got := (Format{}).Redact("/v1/x"); got != "/v1/x" {
		t.Errorf("the zero Format changed %q", got)
	}
}

// FuzzRedactKeys: no run of the prefix and redactMin base62 characters
// survives, and text without the prefix is untouched.
func FuzzRedactKeys(f *testing.F) {
	for _, s := range []string{"/v1/wev_1tPF0OGNvYw9lzZkYqNdWTDNl4ikTjMo1K7kXm", "wev_wev_wev_12345678", "/plain", "wev_", "éwev_abcdefgh\x00"} {
		f.Add(s)
	}
	format := mustFormat(f, "wev_")
	f.Fuzz(func(t *testing.T, s string) {
		got := format.Redact(s)
		if !strings.Contains(s, "wev_") && got != s {
			t.Fatalf("%q changed to %q", s, got)
		}
		for i := strings.Index(got, "wev_"); i >= 0; {
			j := i + 4
			for j < len(got) && base62Index[got[j]] != 0xff {
				j++
			}
			if j-i-4 >= redactMin {
				t.Fatalf("%q kept %q", s, got[i:j])
			}
			next := strings.Index(got[i+4:], "wev_")
			if next < 0 {
				break
			}
			i += 4 + next
		}
	})
}

func TestRedactor(t *testing.T) {
	const (
		token = "admin-token-0123456789"
		// A token holding what looks like a key: the token goes whole, not
		// just its key-like middle.
		keyish = "x-wev_abcdefghijklmnop-y"
	)
	key := mustGenerate(t, mustFormat(t, "wev_"))
	r := NewRedactor(mustFormat(t, "wev_"), []string{token, "", keyish, token})
	tests := []struct{ name, in, want string }{
		{"plain", "/v1/things", "/v1/things"},
		{"key", "/v1/" + key, "/v1/[redacted]"},
		{"token", "/api/" + token, "/api/[redacted]"},
		{"token as a substring", "ua" + token + "ua", "ua[redacted]ua"},
		{"token twice", token + "/" + token, "[redacted]/[redacted]"},
		{"key and token", "ua " + key + " " + token, "ua [redacted] [redacted]"},
		{"token holding a key-like run", "/" + keyish + "/", "/[redacted]/"},
		{"token prefix only", token[:15], token[:15]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Redact(tt.in)
			if got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if strings.Contains(got, token) || strings.Contains(got, key) || strings.Contains(got, keyish) {
				t.Errorf("a secret survived in %q", got)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.Redact("/v1/projects/42/tasks/and/more") }); n != 0 {
		t.Errorf("a path without secrets costs %v allocations", n)
	}
	if got := (Redactor{}).Redact("/v1/" + token); got != "/v1/"+token {
		t.Errorf("the zero Redactor changed the string to %q", got)
	}
}

// TestRedactorHolds: what the admin API refuses as an id or a name. A key
// or token anywhere in the string counts; a name that only starts like a
// key does not.
func TestRedactorHolds(t *testing.T) {
	const token = "admin-token-0123456789"
	key := mustGenerate(t, mustFormat(t, "wev_"))
	r := NewRedactor(mustFormat(t, "wev_"), []string{token})
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"usr_alice", false},
		{"wev_production", false},
		{"wev_wev_" + strings.Repeat("a", 20), false},
		{key, true},
		{"team-" + key + "-x", true},
		{key[:len(key)-6], true}, // the checksum cut off: still the secret part
		{"wev_x wev_" + key[4:], true},
		{token, true},
		{"a" + token, true},
		{token[:15], false},
	} {
		if got := r.Holds(tt.in); got != tt.want {
			t.Errorf("Holds(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
