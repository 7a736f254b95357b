package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip_ResponseHeaderTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		warm bool // a first request is answered and leaves the connection idle
	}{
		{"fresh connection", false},
		// A timeout on a reused connection is the backend's answer, not a
		// stale connection: sending the request again would double both the
		// wait and the load on a backend that is already slow.
		{"reused connection is not retried", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
				for {
					if _, ok := s.next(br); !ok {
						return
					}
					if !tc.warm || s.requests.Load() > 1 {
						s.stall(br)
						return
					}
					if _, err := io.WriteString(c, okResponse); err != nil {
						return
					}
				}
			})
			r := newRig(t, func(fb *http.Transport) { fb.ResponseHeaderTimeout = 100 * time.Millisecond })
			if tc.warm {
				get(t, r.tr, srv.url()+"/warm")
			}

			req := newReq(t, context.Background(), http.MethodGet, srv.url()+"/slow", nil)
			err := within(t, "RoundTrip", func() error {
				res, err := r.tr.RoundTrip(req)
				if err == nil {
					_ = res.Body.Close()
				}
				return err
			})
			if err == nil {
				t.Fatal("RoundTrip succeeded against a backend that never answers")
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("error %v is not a net.Error timeout (keyproxy answers those with 504)", err)
			}
			wantRequests := int64(1)
			if tc.warm {
				wantRequests = 2
			}
			if n := srv.requests.Load(); n != wantRequests {
				t.Errorf("backend read %d requests, want %d", n, wantRequests)
			}
			if n := srv.accepted.Load(); n != 1 {
				t.Errorf("backend accepted %d connections, want 1", n)
			}
		})
	}
}

// The header timeout bounds the wait for the head only: a body that
// trickles in slower, and the next request on the connection, are not
// cut short by it. The backend's pause only makes a leftover deadline
// show; no outcome here depends on timing.
func TestRoundTrip_HeaderTimeoutSparesBodyAndNextRequest(t *testing.T) {
	const timeout = 100 * time.Millisecond
	srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := s.next(br); !ok {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsl"); err != nil {
				return
			}
			time.Sleep(4 * timeout)
			if _, err := io.WriteString(c, "ow"); err != nil {
				return
			}
		}
	})
	r := newRig(t, func(fb *http.Transport) { fb.ResponseHeaderTimeout = timeout })
	for i := range 2 {
		var body string
		err := within(t, "GET", func() error {
			res, err := r.tr.RoundTrip(newReq(t, context.Background(), http.MethodGet, srv.url()+"/", nil))
			if err != nil {
				return err
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			body = string(b)
			return err
		})
		if err != nil || body != "slow" {
			t.Fatalf("GET %d: body %q, err %v; want \"slow\"", i+1, body, err)
		}
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

func TestRoundTrip_CancelWhileBackendStalls(t *testing.T) {
	for _, tc := range []struct {
		name string
		sent string // what the backend sends before it stalls
		body bool   // cancel once the body has begun, rather than before the head
	}{
		{"before the response head", "", false},
		{"during the body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stalled := make(chan struct{})
			srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
				if s.accepted.Load() > 1 {
					answer(always(okResponse))(s, c, br)
					return
				}
				if _, ok := s.next(br); !ok {
					return
				}
				if _, err := io.WriteString(c, tc.sent); err != nil {
					return
				}
				close(stalled)
				s.stall(br)
			})
			r := newRig(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if !tc.body {
				go func() {
					<-stalled
					cancel()
				}()
			}

			req := newReq(t, ctx, http.MethodGet, srv.url()+"/", nil)
			err := within(t, "the cancelled round trip", func() error {
				res, err := r.tr.RoundTrip(req)
				if err != nil {
					return err
				}
				defer res.Body.Close()
				if _, err := io.ReadFull(res.Body, make([]byte, len("partial"))); err != nil {
					return fmt.Errorf("reading what the backend sent: %w", err)
				}
				cancel()
				_, err = io.ReadAll(res.Body)
				return err
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error = %v, want context.Canceled", err)
			}
			waitFor(t, "the backend to see the connection closed", func() bool { return srv.hungUp.Load() == 1 })
			if n := idleCount(r.tr); n != 0 {
				t.Errorf("idle connections = %d, want 0", n)
			}
			get(t, r.tr, srv.url()+"/after")
			if n := srv.accepted.Load(); n != 2 {
				t.Errorf("backend accepted %d connections, want 2", n)
			}
		})
	}
}

// deadlineConn is a real connection that lets a test step in when the
// transport moves its read deadline, where a cancellation can race it.
type deadlineConn struct {
	net.Conn
	beforeRead func(time.Time)
	broken     chan<- struct{} // the request's context broke the deadline
}

func (c *deadlineConn) SetDeadline(d time.Time) error {
	err := c.Conn.SetDeadline(d)
	select {
	case c.broken <- struct{}{}:
	default:
	}
	return err
}

func (c *deadlineConn) SetReadDeadline(d time.Time) error {
	c.beforeRead(d)
	return c.Conn.SetReadDeadline(d)
}

// A cancellation breaks the connection's deadline from another goroutine;
// if it lands just before the transport sets or clears its header timeout,
// that must not undo it and leave the caller waiting on the backend.
func TestRoundTrip_CancelJustBeforeDeadlineMoves(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func(time.Time) bool
		sent string
	}{
		{"as the header timeout is set", func(d time.Time) bool { return !d.IsZero() }, ""},
		{"as the header timeout is cleared", time.Time.IsZero, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
				if _, ok := s.next(br); !ok {
					return
				}
				if _, err := io.WriteString(c, tc.sent); err != nil {
					return
				}
				s.stall(br)
			})
			r := newRig(t, func(fb *http.Transport) { fb.ResponseHeaderTimeout = time.Minute })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			broken := make(chan struct{}, 1)
			var once sync.Once
			r.inline.wrap = func(nc net.Conn) net.Conn {
				return &deadlineConn{Conn: nc, broken: broken, beforeRead: func(d time.Time) {
					if !tc.at(d) {
						return
					}
					once.Do(func() {
						cancel()
						select {
						case <-broken:
						case <-time.After(bound):
							t.Error("the cancellation never broke the deadline")
						}
					})
				}}
			}

			req := newReq(t, ctx, http.MethodGet, srv.url()+"/", nil)
			err := within(t, "the cancelled round trip", func() error {
				res, err := r.tr.RoundTrip(req)
				if err == nil {
					_, err = io.ReadAll(res.Body)
					_ = res.Body.Close()
				}
				return err
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error = %v, want context.Canceled", err)
			}
		})
	}
}
