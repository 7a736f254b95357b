package h1

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// RoundTripInline's report is what lets a caller reuse req.Header: true
// only when this transport made the round trip, and then the caller may
// write the map while it reads the body (the race detector fails the test
// if the transport still touches it), also after an error or a
// cancellation.
func TestRoundTripInline_ReportsWhoMadeTheRoundTrip(t *testing.T) {
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strings.Repeat("x", 64<<10)) // read after the header is reused
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String() + "/"
	closed.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()

	cases := []struct {
		name       string
		req        func() *http.Request
		wantInline bool
		wantErr    bool
	}{
		{"GET", func() *http.Request { return newReq(t, bg, http.MethodGet, srv.URL+"/g", nil) }, true, false},
		{"HEAD", func() *http.Request { return newReq(t, bg, http.MethodHead, srv.URL+"/h", nil) }, true, false},
		{"refused connection", func() *http.Request { return newReq(t, bg, http.MethodGet, deadURL, nil) }, true, true},
		{"cancelled", func() *http.Request { return newReq(t, cancelled, http.MethodGet, srv.URL+"/c", nil) }, true, true},
		{"POST with a body", func() *http.Request {
			return newReq(t, bg, http.MethodPost, srv.URL+"/p", strings.NewReader("hello"))
		}, false, false},
		{"upgrade", func() *http.Request {
			req := newReq(t, bg, http.MethodGet, srv.URL+"/u", nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			return req
		}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			req := tc.req()
			req.Header.Set("X-Trace", "1")
			res, inline, err := r.tr.RoundTripInline(req)
			if inline != tc.wantInline {
				t.Errorf("inline = %v, want %v", inline, tc.wantInline)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tc.wantErr)
			}
			if inline {
				clear(req.Header)
				req.Header["X-Next-Request"] = []string{"reused"}
			}
			if res != nil {
				if _, err := io.Copy(io.Discard, res.Body); err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
			}
		})
	}
}
