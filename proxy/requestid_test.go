package proxy

import (
	"strings"
	"sync"
	"testing"
)

func TestValidRequestID(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"3f1c2a9e-8b7d-4c6e-9f00-123456789abc", true},
		{"01HZX5.trace:span-1", true},
		{strings.Repeat("Z", 128), true},
		{"", false},
		{strings.Repeat("Z", 129), false},
		{"a b", false},
		{"a_b", true},
		{"a/b", false},
		{"é", false},
		{"a\nb", false},
		{`"`, false},
	} {
		if got := validRequestID(tt.id); got != tt.want {
			t.Errorf("validRequestID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestGeneratedRequestIDsAreWellFormedAndDistinct(t *testing.T) {
	g1, err := newIDGenerator()
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := newIDGenerator()
	var mu sync.Mutex
	seen := make(map[string]bool)
	var wg sync.WaitGroup
	for _, g := range []*idGenerator{g1, g2, g1, g2} {
		wg.Go(func() {
			for range 1000 {
				id := g.next(new([generatedIDLen]byte))
				if !validRequestID(id) {
					t.Errorf("generated %q is not a valid request id", id)
				}
				mu.Lock()
				if seen[id] {
					t.Errorf("%q generated twice", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// FuzzRequestID: an accepted id is 1-128 bytes of [A-Za-z0-9._:-], so it can
// go into a header, a log line and a JSON string unescaped.
func FuzzRequestID(f *testing.F) {
	for _, s := range []string{"abc", "", "a b", strings.Repeat("x", 129), "3f1c2a9e-8b7d", "é", "\"}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !validRequestID(s) {
			return
		}
		if len(s) == 0 || len(s) > 128 {
			t.Fatalf("accepted length %d", len(s))
		}
		if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") != "" {
			t.Fatalf("accepted %q", s)
		}
	})
}

func TestRedactKeys(t *testing.T) {
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
		if got := redactKeys(tt.in, "wev_"); got != tt.want {
			t.Errorf("redactKeys(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = redactKeys("/v1/projects/42/tasks", "wev_") }); n != 0 {
		t.Errorf("a path without the prefix costs %v allocations", n)
	}
}

// FuzzRedactKeys: no run of the prefix and redactMin base62 characters
// survives, and text without the prefix is untouched.
func FuzzRedactKeys(f *testing.F) {
	for _, s := range []string{"/v1/wev_1tPF0OGNvYw9lzZkYqNdWTDNl4ikTjMo1K7kXm", "wev_wev_wev_12345678", "/plain", "wev_", "éwev_abcdefgh\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := redactKeys(s, "wev_")
		if !strings.Contains(s, "wev_") && got != s {
			t.Fatalf("%q changed to %q", s, got)
		}
		for i := strings.Index(got, "wev_"); i >= 0; {
			j := i + 4
			for j < len(got) && isBase62(got[j]) {
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
