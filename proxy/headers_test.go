package proxy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/wevion/keyproxy/proxy"
)

// normalised spells a header name as CGI-style backends see it.
func normalised(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// checkIdentity asserts that the only headers with the identity prefix in
// any spelling are ours, with the resolved identity.
func checkIdentity(t *testing.T, e *env, got received, prefix string) {
	t.Helper()
	want := map[string]string{
		prefix + "User-Id": e.identity.UserID,
		prefix + "Team-Id": e.identity.TeamID,
		prefix + "Role":    e.identity.Role,
		prefix + "Key-Id":  e.identity.KeyID,
	}
	for name, v := range got.Header {
		if !strings.HasPrefix(normalised(name), normalised(prefix)) {
			continue
		}
		w, ours := want[name]
		if !ours {
			t.Errorf("client header %q: %q reached the upstream", name, v)
			continue
		}
		if len(v) != 1 || v[0] != w {
			t.Errorf("%s = %q, want [%q]", name, v, w)
		}
		delete(want, name)
	}
	for name := range want {
		t.Errorf("%s not forwarded", name)
	}
}

func TestClientCannotSpoofIdentityHeaders(t *testing.T) {
	e := newEnv(t)
	spoofs := [][2]string{
		bearer(e.validKey),
		{"X-Wevion-User-Id", "usr_evil"},
		{"X-Wevion-Team-Id", "team_evil"},
		{"x-wevion-role", "super_admin"},
		{"X_Wevion_Role", "super_admin"},
		{"x-wevion_user-id", "usr_evil"},
		{"X-WEVION-KEY-ID", "key_evil"},
		{"X_WEVION_KEY_ID", "key_evil"},
		{"X-Wevion-Impersonate", "usr_boss"},
		{"X_Request_Id", "spoofed"},
		{"X_Forwarded_For", "6.6.6.6"},
	}
	res, _ := e.do(t, "GET", "/v1/things", spoofs)
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	got := e.up.only(t)
	checkIdentity(t, e, got, "X-Wevion-")
	for name := range got.Header {
		if n := normalised(name); strings.Contains(name, "_") && (n == "x-request-id" || n == "x-forwarded-for") {
			t.Errorf("underscore spelling %q of a header we set reached the upstream", name)
		}
	}
}

// TestConnectionHeaderCannotStripIdentity: hop-by-hop removal runs before
// the identity headers are set, so naming them in Connection does nothing.
func TestConnectionHeaderCannotStripIdentity(t *testing.T) {
	e := newEnv(t)
	res, _ := e.do(t, "GET", "/v1/things", [][2]string{
		bearer(e.validKey),
		{"Connection", "X-Wevion-Role, X-Wevion-User-Id, X-Wevion-Team-Id, X-Wevion-Key-Id, X-Request-Id, X-Forwarded-For"},
	})
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	got := e.up.only(t)
	checkIdentity(t, e, got, "X-Wevion-")
	for _, h := range []string{"X-Request-Id", "X-Forwarded-For"} {
		if got.Header.Get(h) == "" {
			t.Errorf("%s stripped by Connection", h)
		}
	}
}

func TestCustomHeaderPrefix(t *testing.T) {
	e := newEnv(t, func(c *proxy.Config) { c.HeaderPrefix = "x-acme_" })
	e.do(t, "GET", "/", [][2]string{bearer(e.validKey), {"X-Acme-Role", "owner"}, {"X_ACME_TEAM_ID", "t"}, {"X-Wevion-Role", "not ours any more"}})
	got := e.up.only(t)
	checkIdentity(t, e, got, "X-Acme-")
	if v := got.Header.Get("X-Wevion-Role"); v != "not ours any more" {
		t.Errorf("X-Wevion-Role = %q: a header outside the prefix should pass", v)
	}
}

func TestRequestID(t *testing.T) {
	tests := []struct {
		name   string
		sent   []string
		keep   bool
		refuse bool // send no key: the id must be echoed on errors too
	}{
		{name: "well-formed id is kept", sent: []string{"req-01HZX.abc:42"}, keep: true},
		{name: "uuid is kept", sent: []string{"3f1c2a9e-8b7d-4c6e-9f00-123456789abc"}, keep: true},
		{name: "128 characters are kept", sent: []string{strings.Repeat("a", 128)}, keep: true},
		{name: "kept on a refusal", sent: []string{"trace-7"}, keep: true, refuse: true},
		{name: "missing is generated", sent: nil},
		{name: "generated on a refusal", sent: nil, refuse: true},
		{name: "129 characters are replaced", sent: []string{strings.Repeat("a", 129)}},
		{name: "a space is replaced", sent: []string{"a b"}},
		{name: "markup is replaced", sent: []string{"<script>"}},
		{name: "a quote is replaced", sent: []string{`a"b`}},
		{name: "an id holding a key is replaced", sent: []string{"wev_1tPF0OGNvYw9lzZkYqNdWTDNl4ikTjMo1K7kXm"}},
		{name: "two lines are replaced", sent: []string{"one", "two"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var h [][2]string
			if !tt.refuse {
				h = append(h, bearer(e.validKey))
			}
			for _, v := range tt.sent {
				h = append(h, [2]string{"X-Request-Id", v})
			}
			res, body := e.do(t, "GET", "/", h)
			echoed := res.Header.Values("X-Request-Id")
			if len(echoed) != 1 {
				t.Fatalf("response X-Request-Id = %q, want one value", echoed)
			}
			if tt.keep && echoed[0] != tt.sent[0] {
				t.Errorf("echoed %q, want the client's %q", echoed[0], tt.sent[0])
			}
			if !tt.keep {
				for _, s := range tt.sent {
					if echoed[0] == s {
						t.Errorf("malformed id %q kept", s)
					}
				}
				if echoed[0] == "" || len(echoed[0]) > 128 || strings.ContainsAny(echoed[0], " \"<>") {
					t.Errorf("generated id %q is not well-formed", echoed[0])
				}
			}
			if tt.refuse {
				checkProblem(t, res, body, 401, proxy.CodeMissingAPIKey)
				return
			}
			if got := e.up.only(t).Header.Values("X-Request-Id"); len(got) != 1 || got[0] != echoed[0] {
				t.Errorf("upstream X-Request-Id = %q, want [%q]", got, echoed[0])
			}
		})
	}
}

func TestGeneratedRequestIDsAreUnique(t *testing.T) {
	e := newEnv(t)
	seen := make(map[string]bool)
	for range 50 {
		res, _ := e.do(t, "GET", "/", nil)
		id := res.Header.Get("X-Request-Id")
		if seen[id] {
			t.Fatalf("request id %q generated twice", id)
		}
		seen[id] = true
	}
}

func TestForwardedHeaders(t *testing.T) {
	spoofed := [][2]string{
		{"X-Forwarded-For", "203.0.113.7, 10.0.0.5"},
		{"X-Forwarded-Host", "public.example"},
		{"X-Forwarded-Proto", "https"},
		{"Forwarded", "for=203.0.113.9;proto=https"},
	}
	tests := []struct {
		name      string
		trusted   []netip.Prefix
		wantXFF   string
		wantHost  string // empty: the proxy's own Host
		wantProto string
		wantIP    string // audit client_ip
	}{
		{name: "untrusted peer's headers are replaced",
			wantXFF: "127.0.0.1", wantProto: "http", wantIP: "127.0.0.1"},
		{name: "peer outside the trusted ranges is untrusted",
			trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			wantXFF: "127.0.0.1", wantProto: "http", wantIP: "127.0.0.1"},
		{name: "trusted peer's chain is appended to",
			trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			wantXFF: "203.0.113.7, 10.0.0.5, 127.0.0.1", wantHost: "public.example", wantProto: "https", wantIP: "10.0.0.5"},
		{name: "client is the right-most untrusted hop",
			trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
			wantXFF: "203.0.113.7, 10.0.0.5, 127.0.0.1", wantHost: "public.example", wantProto: "https", wantIP: "203.0.113.7"},
		{name: "mapped IPv4 range trusts an IPv4 peer",
			trusted: []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.0/104")},
			wantXFF: "203.0.113.7, 10.0.0.5, 127.0.0.1", wantHost: "public.example", wantProto: "https", wantIP: "10.0.0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *proxy.Config) { c.TrustedProxies = tt.trusted })
			e.do(t, "GET", "/", append([][2]string{bearer(e.validKey)}, spoofed...))
			got := e.up.only(t)
			if v := got.Header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != tt.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", v, tt.wantXFF)
			}
			wantHost := tt.wantHost
			if wantHost == "" {
				wantHost = strings.TrimPrefix(e.srv.URL, "http://")
			}
			if v := got.Header.Get("X-Forwarded-Host"); v != wantHost {
				t.Errorf("X-Forwarded-Host = %q, want %q", v, wantHost)
			}
			if v := got.Header.Get("X-Forwarded-Proto"); v != tt.wantProto {
				t.Errorf("X-Forwarded-Proto = %q, want %q", v, tt.wantProto)
			}
			if v, ok := got.Header["Forwarded"]; ok {
				t.Errorf("Forwarded = %q passed through", v)
			}
			if ev := e.rec.wait(t, 1); ev[0].ClientIP != tt.wantIP {
				t.Errorf("audit client_ip = %q, want %q", ev[0].ClientIP, tt.wantIP)
			}
		})
	}
}
