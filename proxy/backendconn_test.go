package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
)

// TestBackendConnectionIsReusedAcrossRequests: requests without a body make
// their round trip inline (internal/h1) and keep one backend connection
// alive between them; a request with a body goes through net/http's
// transport and still arrives whole.
func TestBackendConnectionIsReusedAcrossRequests(t *testing.T) {
	e := newEnv(t)
	for _, method := range []string{"GET", "HEAD", "DELETE", "OPTIONS", "GET"} {
		res, _ := e.do(t, method, "/v1/things", [][2]string{bearer(e.validKey)})
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", method, res.StatusCode)
		}
	}
	got := e.up.requests()
	if len(got) != 5 {
		t.Fatalf("upstream saw %d requests, want 5", len(got))
	}
	for _, r := range got[1:] {
		if r.RemoteAddr != got[0].RemoteAddr {
			t.Errorf("%s came on connection %s, the first on %s: not reused", r.Method, r.RemoteAddr, got[0].RemoteAddr)
		}
	}

	e.up.handle(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/things", strings.NewReader(`{"name":"x"}`))
	req.Header.Set("Authorization", "Bearer "+e.validKey)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := e.up.requests(); res.StatusCode != http.StatusCreated || len(got) != 6 || got[5].Body != `{"name":"x"}` {
		t.Errorf("POST: status %d, backend saw %+v", res.StatusCode, got[len(got)-1])
	}
}

// TestEarlyHintsReachTheClient: a backend's 103 passes through to the
// client before the final response, as httputil does with net/http's
// transport.
func TestEarlyHintsReachTheClient(t *testing.T) {
	e := newEnv(t)
	e.up.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "done")
	})
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, http.StatusText(code)+": "+h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", e.srv.URL+"/page", nil)
	req.Header.Set("Authorization", "Bearer "+e.validKey)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(b) != "done" {
		t.Errorf("final response %d %q", res.StatusCode, b)
	}
	if len(hints) != 1 || hints[0] != "Early Hints: </app.css>; rel=preload; as=style" {
		t.Errorf("client saw 1xx %q, want one 103 with the Link header", hints)
	}
}
