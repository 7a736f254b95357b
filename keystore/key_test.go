package keystore

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
)

func mustFormat(tb testing.TB, prefix string) Format {
	tb.Helper()
	f, err := NewFormat(prefix)
	if err != nil {
		tb.Fatalf("NewFormat(%q): %v", prefix, err)
	}
	return f
}

func mustGenerate(tb testing.TB, f Format) string {
	tb.Helper()
	k, err := f.Generate()
	if err != nil {
		tb.Fatalf("Generate: %v", err)
	}
	return k
}

func TestNewFormat_ChecksPrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"wev_", true},
		{"acme_", true},
		{"A", true},
		{"sixteen_chars_ok", true},
		{"", false},
		{"seventeen_chars_x", false},
		{"wev-", false},
		{"wé_", false},
		{"wev ", false},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			_, err := NewFormat(tt.prefix)
			if (err == nil) != tt.ok {
				t.Fatalf("NewFormat(%q) error = %v, want ok=%v", tt.prefix, err, tt.ok)
			}
		})
	}
}

func TestGenerate_ProducesWellFormedKeys(t *testing.T) {
	for _, prefix := range []string{"wev_", "acme_", "x"} {
		t.Run(prefix, func(t *testing.T) {
			f := mustFormat(t, prefix)
			seen := make(map[string]bool)
			for range 200 {
				k := mustGenerate(t, f)
				if got, want := len(k), len(prefix)+randomLen+checksumLen; got != want {
					t.Fatalf("len(%q) = %d, want %d", k, got, want)
				}
				if !strings.HasPrefix(k, prefix) {
					t.Fatalf("%q lacks prefix %q", k, prefix)
				}
				for _, c := range k[len(prefix):] {
					if !strings.ContainsRune(base62, c) {
						t.Fatalf("%q holds non-base62 %q", k, c)
					}
				}
				if !f.Valid(k) {
					t.Fatalf("generated key %q is not Valid", k)
				}
				if seen[k] {
					t.Fatalf("duplicate key %q", k)
				}
				seen[k] = true
			}
		})
	}
}

func TestGenerate_UsesWholeAlphabet(t *testing.T) {
	f := mustFormat(t, "wev_")
	used := make(map[byte]bool)
	for range 300 {
		k := mustGenerate(t, f)
		for i := len("wev_"); i < len("wev_")+randomLen; i++ {
			used[k[i]] = true
		}
	}
	if len(used) != len(base62) {
		t.Fatalf("random part used %d of %d base62 characters", len(used), len(base62))
	}
}

func TestParse_ReturnsHashAndStart(t *testing.T) {
	f := mustFormat(t, "wev_")
	k := mustGenerate(t, f)
	p, err := f.Parse(k)
	if err != nil {
		t.Fatalf("Parse(%q): %v", k, err)
	}
	if p.Hash != Hash(sha256.Sum256([]byte(k))) {
		t.Fatalf("Hash is not SHA-256 of the key")
	}
	if p.Hash != HashKey(k) {
		t.Fatalf("Parse hash differs from HashKey")
	}
	if want := k[:len("wev_")+startLen]; p.Start != want || f.Start(k) != want {
		t.Fatalf("Start = %q / %q, want %q", p.Start, f.Start(k), want)
	}
}

func TestParse_RefusesMalformed(t *testing.T) {
	f := mustFormat(t, "wev_")
	acme := mustFormat(t, "acme_")
	good := mustGenerate(t, f)
	tests := []struct {
		name string
		key  string
	}{
		{"empty", ""},
		{"prefix only", "wev_"},
		{"one short", good[:len(good)-1]},
		{"one long", good + "0"},
		{"other prefix", mustGenerate(t, acme)},
		{"prefix case", "WEV_" + good[4:]},
		{"non-base62 in random part", good[:10] + "-" + good[11:]},
		{"non-base62 in checksum", good[:len(good)-1] + "_"},
		{"non-ASCII", good[:10] + "é" + good[12:]},
		{"space", good[:10] + " " + good[11:]},
		{"NUL", good[:10] + "\x00" + good[11:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if f.Valid(tt.key) {
				t.Fatalf("Valid(%q) = true", tt.key)
			}
			if _, err := f.Parse(tt.key); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) error = %v, want ErrMalformed", tt.key, err)
			}
		})
	}
}

// Any single changed character after the prefix must fail the checksum: CRC32
// detects every single-symbol error, and the check covers the checksum too.
func TestParse_ChecksumCatchesAnySingleChangedChar(t *testing.T) {
	for _, prefix := range []string{"wev_", "acme_"} {
		f := mustFormat(t, prefix)
		for range 5 {
			k := []byte(mustGenerate(t, f))
			for i := len(prefix); i < len(k); i++ {
				orig := k[i]
				for j := 0; j < len(base62); j++ {
					if base62[j] == orig {
						continue
					}
					k[i] = base62[j]
					if f.Valid(string(k)) {
						t.Fatalf("%s: changing position %d to %q still validates: %s", prefix, i, base62[j], k)
					}
				}
				k[i] = orig
			}
			if !f.Valid(string(k)) {
				t.Fatal("restored key no longer validates")
			}
		}
	}
}

func TestDisplayStart_NeverLeaksMoreThanStart(t *testing.T) {
	f := mustFormat(t, "wev_")
	good := mustGenerate(t, f)
	tests := []struct {
		name, in, want string
	}{
		{"valid key", good, good[:8]},
		{"bad checksum still shows start", good[:len(good)-1] + flip(good[len(good)-1]), good[:8]},
		{"longer than a key", good + "extra", good[:8]},
		{"too short", good[:20], ""},
		{"other prefix", "sk_live_" + good[4:], ""},
		{"non-base62 in start", "wev_ab\"c" + good[8:], ""},
		{"control char in start", "wev_\nabc" + good[8:], ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.DisplayStart(tt.in)
			if got != tt.want {
				t.Fatalf("DisplayStart(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if len(got) > len("wev_")+startLen {
				t.Fatalf("DisplayStart leaked %d characters", len(got))
			}
		})
	}
}

func flip(c byte) string {
	if c == '0' {
		return "1"
	}
	return "0"
}

func TestNewID_ShapeAndValidID(t *testing.T) {
	id, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(id) || !strings.HasPrefix(id, IDPrefix) || len(id) != len(IDPrefix)+idRandomLen {
		t.Fatalf("NewID() = %q is not a valid id", id)
	}
	for _, bad := range []string{"", "key_", id + "x", id[:len(id)-1], "kex_" + id[4:], id[:10] + "/" + id[11:]} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	format := mustFormat(f, "wev_")
	good := mustGenerate(f, format)
	f.Add(good)
	f.Add(good[:len(good)-1] + "0")
	f.Add("wev_")
	f.Add("")
	f.Add("Bearer " + good)
	f.Add(strings.Repeat("\xff", 42))
	f.Fuzz(func(t *testing.T, s string) {
		p, err := format.Parse(s)
		start := format.DisplayStart(s)
		if len(start) > len("wev_")+startLen {
			t.Fatalf("DisplayStart(%q) = %q is too long", s, start)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v is not ErrMalformed", err)
			}
			return
		}
		if !format.Valid(s) {
			t.Fatalf("accepted %q does not re-validate", s)
		}
		if p.Hash != HashKey(s) || p.Start != start {
			t.Fatalf("Parse(%q) = %+v, inconsistent with HashKey/DisplayStart", s, p)
		}
		// Generate output always parses.
		k, err := format.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := format.Parse(k); err != nil {
			t.Fatalf("generated %q does not parse: %v", k, err)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	f := mustFormat(b, "wev_")
	k := mustGenerate(b, f)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Parse(k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	f := mustFormat(b, "wev_")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Generate(); err != nil {
			b.Fatal(err)
		}
	}
}
