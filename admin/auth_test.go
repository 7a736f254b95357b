package admin_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wevion/keyproxy/admin"
	"github.com/wevion/keyproxy/keystore"
)

func TestAdminAuth_TokenChecks(t *testing.T) {
	e := newEnv(t)
	const challenge = `Bearer realm="keyproxy-admin"`
	tests := []struct {
		name          string
		authorization []string
		wantStatus    int
		wantChallenge string
	}{
		{"missing header", nil, 401, challenge},
		{"wrong token", []string{"Bearer wrong-token-0123456789abc"}, 401, challenge + `, error="invalid_token"`},
		{"prefix of a token", []string{"Bearer " + testToken[:len(testToken)-1]}, 401, challenge + `, error="invalid_token"`},
		{"token with a suffix", []string{"Bearer " + testToken + "x"}, 401, challenge + `, error="invalid_token"`},
		{"basic scheme", []string{"Basic " + testToken}, 401, challenge},
		{"scheme without token", []string{"Bearer "}, 401, challenge},
		{"two headers", []string{"Bearer " + testToken, "Bearer " + testToken}, 401, challenge},
		{"right token", []string{"Bearer " + testToken}, 200, ""},
		{"scheme is case-insensitive", []string{"bEARER " + testToken}, 200, ""},
		{"second configured token", []string{"Bearer " + otherToken}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/admin/v1/keys?team_id=t1", nil)
			for _, v := range tt.authorization {
				r.Header.Add("Authorization", v)
			}
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, r)
			if tt.wantStatus == 401 {
				wantProblem(t, w, 401, "unauthorized")
			} else if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantStatus, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tt.wantChallenge)
			}
		})
	}
}

func TestAdminAuth_UnknownAdminPathNeedsTokenBeforeNotFound(t *testing.T) {
	e := newEnv(t)
	wantProblem(t, e.do("GET", "/admin/v1/secrets", "", "Authorization", ""), 401, "unauthorized")
	wantProblem(t, e.do("GET", "/admin/v1/secrets", ""), 404, "not_found")
}

func TestAdminAuth_EncodedPathsStillNeedToken(t *testing.T) {
	e := newEnv(t)
	k := e.create("a", "u1", "t1", "owner")
	for _, p := range []string{"/%61dmin/v1/keys?team_id=t1", "/admin/v1/%6Beys/" + k.ID, "/admin/v1/keys/%6Bey_" + k.ID[4:]} {
		w := e.do("GET", p, "", "Authorization", "")
		if w.Code != 401 && w.Code != 404 && w.Code != 301 {
			t.Errorf("GET %s without token: %d %s", p, w.Code, w.Body)
		}
		if strings.Contains(w.Body.String(), k.ID) {
			t.Errorf("GET %s without token shows the key: %s", p, w.Body)
		}
	}
}

func TestAdminAuth_NoTokensConfiguredRefusesEverything(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.Tokens = nil })
	for _, auth := range []string{"", "Bearer " + testToken, "Bearer "} {
		wantProblem(t, e.do("GET", "/admin/v1/keys?team_id=t1", "", "Authorization", auth), 401, "unauthorized")
	}
	// Operators' endpoints still answer.
	if w := e.do("GET", "/healthz", "", "Authorization", ""); w.Code != 200 {
		t.Fatalf("/healthz: %d", w.Code)
	}
}

func TestAdminAuth_OperatorEndpointsNeedNoToken(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if w := e.do("GET", p, "", "Authorization", ""); w.Code != 200 {
			t.Errorf("GET %s without token: %d %s", p, w.Code, w.Body)
		}
	}
}

func TestNew_RefusesBadConfig(t *testing.T) {
	format, _ := keystore.NewFormat("wev_")
	store := openStore(t)
	ok := admin.Config{Store: store, Evictor: &recordingEvictor{}, Format: format, Tokens: []string{testToken}}
	tests := []struct {
		name     string
		mutate   func(*admin.Config)
		wantText string
	}{
		{"no store", func(c *admin.Config) { c.Store = nil }, "Store is required"},
		{"no evictor", func(c *admin.Config) { c.Evictor = nil }, "Evictor is required"},
		{"no format", func(c *admin.Config) { c.Format = keystore.Format{} }, "Format is required"},
		{"short token", func(c *admin.Config) { c.Tokens = []string{testToken, "short"} }, "admin.tokens[1]"},
		{"token with space", func(c *admin.Config) { c.Tokens = []string{"has a space in the token"} }, "admin.tokens[0]"},
		{"bad creator role", func(c *admin.Config) { c.CreatorRoles = []string{"Owner"} }, "creator_roles"},
		{"negative team bound", func(c *admin.Config) { c.MaxActivePerTeam = -1 }, "max_active_per_team"},
		{"readiness check without func", func(c *admin.Config) { c.Readiness = []admin.ReadinessCheck{{Name: "redis"}} }, "Readiness[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mutate(&cfg)
			_, err := admin.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), "has a space") {
				t.Fatalf("error echoes a token: %v", err)
			}
		})
	}
	if _, err := admin.New(ok); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

func TestActorHeader_Validated(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		actor  string
		status int
	}{
		{"email", "alice@example.com", 200},
		{"unicode name", "Zoë Ångström", 200},
		{"128 characters", strings.Repeat("a", 128), 200},
		{"129 characters", strings.Repeat("a", 129), 400},
		{"control character", "alice\x01", 400},
		{"tab", "alice\tbob", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.do("GET", "/admin/v1/keys?team_id=t1", "", "X-Actor-Id", tt.actor)
			if tt.status == 400 {
				wantProblem(t, w, 400, "invalid_request")
				return
			}
			if w.Code != tt.status {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
		})
	}
	r := httptest.NewRequest("GET", "/admin/v1/keys?team_id=t1", nil)
	r.Header.Set("Authorization", "Bearer "+testToken)
	r.Header.Add("X-Actor-Id", "alice")
	r.Header.Add("X-Actor-Id", "bob")
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	wantProblem(t, w, http.StatusBadRequest, "invalid_request")
}

func TestRequestID_KeptWhenWellFormedElseGenerated(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		in   string
		keep bool
	}{
		{"uuid", "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b", true},
		{"dotted", "req.1:2_3", true},
		{"absent", "", false},
		{"space", "req 1", false},
		{"too long", strings.Repeat("a", 129), false},
		{"quote", `req"1`, false},
		{"holding a key", "wev_1tPF0OGNvYw9lzZkYqNdWTDNl4ikTjMo1K7kXm", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.do("GET", "/admin/v1/keys/key_AAAAAAAAAAAAAAAAAAAA", "", "X-Request-Id", tt.in)
			p := wantProblem(t, w, 404, "not_found")
			got := w.Header().Get("X-Request-Id")
			if tt.keep && got != tt.in {
				t.Fatalf("X-Request-Id %q, want %q kept", got, tt.in)
			}
			if !tt.keep && (got == "" || got == tt.in) {
				t.Fatalf("X-Request-Id %q, want a generated one", got)
			}
			if p.RequestID != got {
				t.Fatalf("problem request_id %q, header %q", p.RequestID, got)
			}
		})
	}
}
