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
