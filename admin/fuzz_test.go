package admin_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wevion/keyproxy/admin"
)

// checkFuzzResponse: the handler may refuse anything, but never with a 5xx,
// always with a problem, and never echoing much of the input.
func checkFuzzResponse(t *testing.T, w *httptest.ResponseRecorder) {
	if w.Code >= 500 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if !json.Valid(w.Body.Bytes()) && w.Body.Len() > 0 {
		t.Fatalf("body is not JSON: %q", w.Body)
	}
	if w.Code >= 400 {
		var p problemBody
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Code == "" || p.Status != w.Code {
			t.Fatalf("status %d with a body that is no problem: %s", w.Code, w.Body)
		}
		if len(p.Detail) > 300 {
			t.Fatalf("detail of %d bytes", len(p.Detail))
		}
	}
}

func FuzzCreateKeyRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"n","user_id":"u1","team_id":"t1","role":"owner"}`,
		`{"name":"n","user_id":"u1","team_id":"t1","role":"owner","expires_at":"2100-01-02T03:04:05Z"}`,
		`{"name":"n","user_id":"u1","team_id":"t1","role":"owner","expires_at":"2100-01-02T03:04:05.999999999+14:00"}`,
		`{"name":"\u0000","user_id":"u1","team_id":"t1","role":"owner"}`,
		`{"name":"n","user_id":"u1","team_id":"t1","role":"owner","expires_at":"99999-01-01T00:00:00Z"}`,
		`{"name":{"a":[1,2,{"b":null}]},"user_id":"u1"}`,
		`{"name":"n"} {"name":"m"}`,
		`[]`, `""`, `{`, `{"name":"\ud800"}`, "{\"name\":\"\xff\"}",
	} {
		f.Add(s)
	}
	e := newEnv(f, func(c *admin.Config) { c.MaxActivePerTeam = 1 << 30 })
	f.Fuzz(func(t *testing.T, body string) {
		checkFuzzResponse(t, serve(e.h, "POST", "/admin/v1/keys", body))
	})
}

func FuzzPatchKeyRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"renamed"}`, `{"expires_at":null}`, `{"expires_at":"2100-01-01T00:00:00Z"}`,
		`{"name":"x","expires_at":"2100-01-01T00:00:00Z"}`, `{"name":null}`, `{}`, `{"expires_at":"0000-01-01T00:00:00Z"}`,
		`{"expires_at":"2199-12-31T23:59:59.999999999Z"}`, `{"expires_at":"2200-01-01T00:00:00Z"}`, `{"expires_at":"2100-01-01T00:00:00-23:59"}`,
	} {
		f.Add(s)
	}
	e := newEnv(f)
	k := e.create("fuzzed", "u1", "t1", "owner")
	f.Fuzz(func(t *testing.T, body string) {
		checkFuzzResponse(t, serve(e.h, "PATCH", "/admin/v1/keys/"+k.ID, body))
	})
}

func FuzzPutUserRequest(f *testing.F) {
	for _, s := range []string{
		`{"team_id":"t1","role":"member","active":true}`, `{"team_id":"t2","role":"owner","active":false}`,
		`{"team_id":"t1","role":"member","active":"true"}`, `{"team_id":"t1","role":"member"}`,
		`{"team_id":"t1","role":"member","active":true,"active":false}`, `{"team_id":"t1","role":"member","active":tru}`,
	} {
		f.Add(s)
	}
	e := newEnv(f)
	e.create("fuzzed", "u1", "t1", "owner")
	f.Fuzz(func(t *testing.T, body string) {
		checkFuzzResponse(t, serve(e.h, "PUT", "/admin/v1/users/u1", body))
	})
}

func FuzzPutTeamRequest(f *testing.F) {
	for _, s := range []string{`{"active":true}`, `{"active":false}`, `{"active":null}`, `{"active":1}`, `{"Active":true}`, `{}`, `{"active":true}{}`} {
		f.Add(s)
	}
	e := newEnv(f)
	e.create("fuzzed", "u1", "t1", "owner")
	f.Fuzz(func(t *testing.T, body string) {
		checkFuzzResponse(t, serve(e.h, "PUT", "/admin/v1/teams/t1", body))
	})
}

// FuzzSecretScanningReport: whatever a correctly signed report holds, the
// answer is a verdict per token or a problem, never a 5xx, and only one of
// our keys is ever a true positive.
func FuzzSecretScanningReport(f *testing.F) {
	s := newScanEnv(f)
	live := s.create("leaked", "u1", "t1", "owner")
	for _, body := range []string{
		reportOf(live.Key), reportOf("wev_x", "ghp_abc"), `[]`, `[{"token":"a","type":"b","url":"c","source":"d"}]`,
		`[{"token":null}]`, `[1]`, `{"token":"x"}`, `[{"token":"x","token":"y"}]`, "[{\"token\":\"\xff\"}]",
		githubExamplePayload,
	} {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body string) {
		w := s.report(body)
		checkFuzzResponse(t, w)
		if w.Code != http.StatusOK {
			return
		}
		var got []verdict
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("200 without a verdict array: %s", w.Body)
		}
		for _, v := range got {
			switch {
			case v.Label == admin.LabelTruePositive && v.TokenRaw != live.Key:
				t.Fatalf("%q labelled a true positive", v.TokenRaw)
			case v.Label != admin.LabelTruePositive && v.Label != admin.LabelFalsePositive:
				t.Fatalf("label %q", v.Label)
			}
		}
	})
}
