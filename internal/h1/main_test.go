package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bound is how long anything that should be prompt may take before a test
// calls it stuck: generous, for -race on a busy machine.
const bound = 5 * time.Second

var errRefused = errors.New("test dialer refuses")

// dialer is a real loopback dialer that records what it dials, so a test
// can tell which transport opened a connection.
type dialer struct {
	mu    sync.Mutex
	addrs []string
	fail  bool
	wrap  func(net.Conn) net.Conn
}

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	fail, wrap := d.fail, d.wrap
	d.mu.Unlock()
	if fail {
		return nil, errRefused
	}
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, network, addr)
	if err != nil || wrap == nil {
		return nc, err
	}
	return wrap(nc), nil
}

func (d *dialer) count() int { return len(d.dialed()) }

func (d *dialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// rig is a Transport whose own dials and its fallback's are told apart:
// New copies the fallback's DialContext, and the fallback is given another
// one afterwards.
type rig struct {
	tr       *Transport
	fb       *http.Transport
	inline   *dialer
	fallback *dialer
}

func newRig(t *testing.T, configure func(fb *http.Transport)) *rig {
	t.Helper()
	r := &rig{inline: &dialer{}, fallback: &dialer{}}
	r.fb = &http.Transport{DialContext: r.inline.DialContext, DisableCompression: true}
	if configure != nil {
		configure(r.fb)
	}
	r.tr = New(r.fb)
	r.fb.DialContext = r.fallback.DialContext
	t.Cleanup(r.tr.CloseIdleConnections)
	return r
}

func newReq(t *testing.T, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do runs req and reads its whole body.
func do(t *testing.T, rt http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return res, string(b)
}

func get(t *testing.T, rt http.RoundTripper, url string) (*http.Response, string) {
	t.Helper()
	return do(t, rt, newReq(t, context.Background(), http.MethodGet, url, nil))
}

// waitFor polls cond: what the transport does in the background (pruning,
// closing) has no event a test could wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// within runs fn and fails the test if it does not return in time, so a
// transport that waits on a stalled backend fails rather than hangs.
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		t.Fatalf("%s: still waiting after %v", what, bound)
		return nil
	}
}

func idleCount(tr *Transport) int {
	tr.pool.mu.Lock()
	defer tr.pool.mu.Unlock()
	return tr.pool.n
}

// connCounter counts an httptest server's connections as the server sees
// them open and close.
type connCounter struct{ opened, closed atomic.Int64 }

func newServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *connCounter) {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	cc := &connCounter{}
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			cc.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			cc.closed.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, cc
}

// rawServer is a loopback backend written byte by byte, for what an
// http.Server cannot be made to do: stall, hang up mid-exchange, send
// garbage.
type rawServer struct {
	ln       net.Listener
	accepted atomic.Int64 // connections
	requests atomic.Int64 // request heads read by next
	hungUp   atomic.Int64 // connections the client closed while the server read
	finished atomic.Int64 // connections the server is done with and has closed

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	shut  bool
}

func newRawServer(t *testing.T, serve func(s *rawServer, c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			if s.shut {
				s.mu.Unlock()
				_ = c.Close()
				continue
			}
			s.conns = append(s.conns, c)
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				serve(s, c, bufio.NewReader(c))
				_ = c.Close()
				s.finished.Add(1)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		s.shut = true
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

// next reads a request; false means the client hung up (or sent garbage).
func (s *rawServer) next(br *bufio.Reader) (*http.Request, bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		s.hungUp.Add(1)
		return nil, false
	}
	s.requests.Add(1)
	return req, true
}

// stall answers nothing and returns once the client hangs up.
func (s *rawServer) stall(br *bufio.Reader) {
	_, _ = io.Copy(io.Discard, br)
	s.hungUp.Add(1)
}

// answer serves each request on a connection with the bytes respond picks
// for it, until the client hangs up.
func answer(respond func(req *http.Request) string) func(*rawServer, net.Conn, *bufio.Reader) {
	return func(s *rawServer, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := s.next(br)
			if !ok {
				return
			}
			if _, err := io.WriteString(c, respond(req)); err != nil {
				return
			}
		}
	}
}

func always(resp string) func(*http.Request) string {
	return func(*http.Request) string { return resp }
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
