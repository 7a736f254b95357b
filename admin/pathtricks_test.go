package admin_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Every spelling of an admin path that a router, a normaliser or a proxy
// in front might read as /admin/v1/keys needs the admin token: none answers
// 2xx or shows a key without it. Sent over a real connection, so the
// request line reaches the server exactly as written.
func TestAdminPathTricks_NeverBypassTheToken(t *testing.T) {
	e := newEnv(t)
	k := e.create("secret-listing", "u1", "t1", "owner")
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	targets := []string{
		"/admin/v1/keys?team_id=t1",
		"//admin/v1/keys?team_id=t1",
		"///admin//v1//keys?team_id=t1",
		"/./admin/v1/keys?team_id=t1",
		"/admin/./v1/keys?team_id=t1",
		"/x/../admin/v1/keys?team_id=t1",
		"/healthz/../admin/v1/keys?team_id=t1",
		"/metrics/..;/admin/v1/keys?team_id=t1",
		"/%2e%2e/admin/v1/keys?team_id=t1",
		"/%2e/admin/v1/keys?team_id=t1",
		"/healthz/%2e%2e/admin/v1/keys?team_id=t1",
		"/healthz/..%2fadmin/v1/keys?team_id=t1",
		"/admin%2fv1%2fkeys?team_id=t1",
		"/admin%2Fv1%2Fkeys?team_id=t1",
		"/%61dmin/v1/keys?team_id=t1",
		"/%41DMIN/v1/keys?team_id=t1",
		"/ADMIN/v1/keys?team_id=t1",
		"/Admin/V1/Keys?team_id=t1",
		"/admin/v1/keys/?team_id=t1",
		"/admin/v1/keys/" + k.ID + "/",
		"/admin/v1/keys/" + k.ID + "/.",
		"/admin/v1/keys/" + k.ID + "%2f",
		"/admin/v1/keys%00?team_id=t1",
		"/admin/v1/keys%20?team_id=t1",
		"/admin/v1/keys;x=y?team_id=t1",
		"/admin/v1/keys#frag",
		"/admin/v1/keys\\?team_id=t1",
		"/admin\\v1\\keys?team_id=t1",
		"http://internal/admin/v1/keys?team_id=t1",
		"/admin/v1/keys/" + k.ID,
	}
	methods := []string{"GET", "HEAD", "POST", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PROPFIND", "get"}
	for _, target := range targets {
		for _, method := range methods {
			status, body := rawAdmin(t, srv, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n", method, target))
			if status >= 200 && status < 300 || strings.Contains(body, k.ID) || strings.Contains(body, "secret-listing") {
				t.Errorf("%s %s without a token: %d %s", method, target, status, body)
			}
			if status >= 300 && status < 400 {
				t.Errorf("%s %s: redirect %d (a redirect is a hint, not an answer; want a refusal)", method, target, status)
			}
		}
	}
	if n := len(e.evictor.evicted()); n != 0 {
		t.Errorf("%d evictions: a tricked request changed something", n)
	}
	if k2, _ := e.store.GetKey(t.Context(), k.ID); k2.RevokedAt != nil {
		t.Error("the key was revoked without a token")
	}
	// The same spellings with the token reach the route or are refused;
	// none does anything else.
	for _, target := range targets {
		status, _ := rawAdmin(t, srv, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", target, testToken))
		if status >= 500 {
			t.Errorf("GET %s with a token: %d", target, status)
		}
	}
}

func rawAdmin(t *testing.T, srv *httptest.Server, req string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
