package proxy

import (
	"strings"
	"testing"

	"github.com/wevion/keyproxy/keystore"
)

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		token  string
		status tokenStatus
	}{
		{"bearer", []string{"Bearer abc"}, "abc", tokenOK},
		{"lower-case scheme", []string{"bearer abc"}, "abc", tokenOK},
		{"upper-case scheme", []string{"BEARER abc"}, "abc", tokenOK},
		{"several spaces", []string{"Bearer   abc"}, "abc", tokenOK},
		{"token with base64 padding", []string{"Bearer ab+/c=="}, "ab+/c==", tokenOK},
		{"no header", nil, "", tokenMissing},
		{"empty value", []string{""}, "", tokenMissing},
		{"scheme only", []string{"Bearer"}, "", tokenMissing},
		{"scheme and spaces", []string{"Bearer   "}, "", tokenMissing},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", tokenMissing},
		{"scheme glued to token", []string{"Bearerabc"}, "", tokenMissing},
		{"tab separator", []string{"Bearer\tabc"}, "", tokenMissing},
		{"token alone", []string{"abc"}, "", tokenMissing},
		{"two tokens", []string{"Bearer abc def"}, "", tokenInvalid},
		{"trailing tab", []string{"Bearer abc\t"}, "", tokenInvalid},
		{"control character", []string{"Bearer ab\x00c"}, "", tokenInvalid},
		{"two lines", []string{"Bearer abc", "Bearer abc"}, "", tokenInvalid},
		{"two lines, one empty", []string{"Bearer abc", ""}, "", tokenInvalid},
		{"exactly 1 KiB", []string{"Bearer " + strings.Repeat("a", maxAuthorization-7)}, strings.Repeat("a", maxAuthorization-7), tokenOK},
		{"over 1 KiB", []string{"Bearer " + strings.Repeat("a", maxAuthorization-6)}, "", tokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, st := bearerToken(tt.values)
			if token != tt.token || st != tt.status {
				t.Errorf("bearerToken(%q) = %q, %d; want %q, %d", tt.values, token, st, tt.token, tt.status)
			}
		})
	}
}

// FuzzBearerToken: a token comes back only from one Bearer value, whole,
// non-empty and free of whitespace and control characters.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer wev_abc", "bearer  x", "Basic abc", "Bearer", "Bearer a b", "", "BEARER\x00"} {
		f.Add(s, false)
	}
	f.Add("Bearer abc", true)
	f.Fuzz(func(t *testing.T, v string, twice bool) {
		values := []string{v}
		if twice {
			values = append(values, v)
		}
		token, st := bearerToken(values)
		if st != tokenOK {
			if token != "" {
				t.Fatalf("refused value returned token %q", token)
			}
			return
		}
		switch {
		case twice:
			t.Fatal("two Authorization lines accepted")
		case len(v) > maxAuthorization:
			t.Fatal("overlong value accepted")
		case token == "" || !strings.HasSuffix(v, token):
			t.Fatalf("token %q is not the end of %q", token, v)
		case !strings.EqualFold(v[:6], "bearer"):
			t.Fatalf("scheme of %q is not Bearer", v)
		case strings.TrimLeft(v[6:len(v)-len(token)], " ") != "" || len(v)-len(token) < 7:
			t.Fatalf("%q: scheme and token not separated by spaces only", v)
		}
		for i := 0; i < len(token); i++ {
			if token[i] <= ' ' || token[i] == 0x7f {
				t.Fatalf("token %q holds byte %#x", token, token[i])
			}
		}
	})
}

// FuzzBearerValueSkipsNoCheck: admit skips bearerToken's byte scan for a
// token that is a well-formed key, so such a token must pass that scan,
// for every prefix a Format accepts.
func FuzzBearerValueSkipsNoCheck(f *testing.F) {
	// The skipped scan matters only if keys are found valid at all.
	format, _ := keystore.NewFormat("wev_")
	key, err := format.Generate()
	if err != nil {
		f.Fatal(err)
	}
	if token, st := bearerValue([]string{"Bearer " + key}); st != tokenOK || !format.Valid(token) {
		f.Fatalf("a generated key is not a valid bearer token: %d", st)
	}
	f.Add("wev_", "Bearer "+key)
	f.Add("wev_", "Bearer wev_abc")
	f.Add("a_", "bearer   a_0000000000000000000000000000000000000000000")
	f.Fuzz(func(t *testing.T, prefix, v string) {
		format, err := keystore.NewFormat(prefix)
		if err != nil {
			return
		}
		token, st := bearerValue([]string{v})
		full, fullSt := bearerToken([]string{v})
		if st != tokenOK {
			if fullSt != st || full != "" {
				t.Fatalf("bearerValue(%q) = %d, bearerToken = %q, %d", v, st, full, fullSt)
			}
			return
		}
		if plainToken(token) != (fullSt == tokenOK) {
			t.Fatalf("%q: plainToken %v, bearerToken status %d", v, plainToken(token), fullSt)
		}
		if format.Valid(token) && !plainToken(token) {
			t.Fatalf("well-formed key %q holds a space or control character", token)
		}
	})
}
