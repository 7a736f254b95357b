package h1

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
)

func TestRoundTrip_Informational(t *testing.T) {
	const final = okResponse
	cont := "HTTP/1.1 100 Continue\r\n\r\n"
	for _, tc := range []struct {
		name       string
		resp       string
		wantCodes  []int
		wantLink   string
		wantStatus int // 0: an error
	}{
		{
			name:       "103 Early Hints reach the trace",
			resp:       "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + final,
			wantCodes:  []int{103},
			wantLink:   "</s.css>; rel=preload",
			wantStatus: 200,
		},
		{"five are allowed", strings.Repeat(cont, 5) + final, []int{100, 100, 100, 100, 100}, "", 200},
		{"six are too many", strings.Repeat(cont, 6) + final, []int{100, 100, 100, 100, 100}, "", 0},
		{"101 unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", nil, "", 0},
		// net/http takes only 100-199 as informational.
		{"status below 100 is final", "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok", nil, "", 99},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, answer(always(tc.resp)))
			// A head read that waits for more than the backend sent fails
			// instead of hanging the test.
			r := newRig(t, func(fb *http.Transport) { fb.ResponseHeaderTimeout = bound })
			var codes []int
			var link string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				codes = append(codes, code)
				link = h.Get("Link")
				return nil
			}}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			res, err := r.tr.RoundTrip(newReq(t, ctx, http.MethodGet, srv.url()+"/", nil))
			if tc.wantStatus == 0 {
				if err == nil {
					_ = res.Body.Close()
					t.Fatalf("RoundTrip = %d, want an error", res.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				_ = res.Body.Close()
				if res.StatusCode != tc.wantStatus || string(body) != "ok" {
					t.Errorf("final response = %d %q, want %d \"ok\"", res.StatusCode, body, tc.wantStatus)
				}
			}
			if !equalInts(codes, tc.wantCodes) || link != tc.wantLink {
				t.Errorf("trace saw %v with Link %q, want %v with %q", codes, link, tc.wantCodes, tc.wantLink)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRoundTrip_ResponseHeadLimit(t *testing.T) {
	const limit = 1024
	hint := "HTTP/1.1 103 Early Hints\r\nLink: <" + strings.Repeat("h", 600) + ">\r\n\r\n"
	finalMid := "HTTP/1.1 200 OK\r\nX-Mid: " + strings.Repeat("m", 600) + "\r\nContent-Length: 2\r\n\r\nok"
	bigBody := strings.Repeat("b", 64<<10)
	for _, tc := range []struct {
		name     string
		resp     string
		trace    bool
		wantBody string // "": an error
	}{
		{"head over the limit", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2*limit) + "\r\nContent-Length: 2\r\n\r\nok", false, ""},
		{"body over the limit", "HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n" + bigBody, false, bigBody},
		// As in net/http: 1xx heads nobody asked for share the limit with
		// the final head; a trace that takes them takes responsibility,
		// and each head gets the whole limit.
		{"1xx and final head share the limit", hint + finalMid, false, ""},
		{"each head has the limit when the trace takes 1xx", hint + finalMid, true, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, answer(always(tc.resp)))
			r := newRig(t, func(fb *http.Transport) { fb.MaxResponseHeaderBytes = limit })
			ctx := context.Background()
			if tc.trace {
				ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
					Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil },
				})
			}
			res, err := r.tr.RoundTrip(newReq(t, ctx, http.MethodGet, srv.url()+"/", nil))
			if tc.wantBody == "" {
				if err == nil {
					_ = res.Body.Close()
					t.Fatal("RoundTrip succeeded, want the head refused")
				}
				if !errors.Is(err, errHeadTooLarge) {
					t.Errorf("error = %v, want errHeadTooLarge", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil || string(body) != tc.wantBody {
				t.Errorf("body: %d bytes, err %v; want %d bytes", len(body), err, len(tc.wantBody))
			}
		})
	}
}
