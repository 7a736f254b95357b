// Package h1 is an HTTP/1.1 client transport that makes each round trip
// on the caller's goroutine.
//
// net/http's Transport gives every connection a read loop and a write loop
// and hands each request and response between them and the caller over
// channels: three goroutines and their wake-ups per round trip. On a proxy
// core that is a fifth of the CPU a response costs. Here the caller writes
// the request and reads the response head itself, and the response body is
// read by whoever reads it, so a round trip costs no goroutine switch.
//
// It takes only the requests it can do so safely: plain http, no request
// body, no protocol upgrade. Everything else (TLS, bodies with their
// early responses and 100-continue, upgrades, an environment proxy) goes to
// the net/http Transport it wraps, whose settings it shares.
package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"time"
)

// defaultMaxHeaderBytes is net/http's limit on a response head when the
// Transport sets none.
const defaultMaxHeaderBytes = 10 << 20

// max1xx bounds the informational responses before the final one, so a
// backend cannot keep a request waiting with an endless stream of them
// (net/http counts their bytes instead, and only when nobody takes them;
// httputil takes them all).
const max1xx = 5

// Transport is an http.RoundTripper. Its zero value is not usable: build
// it with New.
type Transport struct {
	fallback *http.Transport
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)

	headerTimeout  time.Duration
	idleTimeout    time.Duration
	maxIdle        int
	maxHeaderBytes int64
	readBuf        int
	writeBuf       int

	// inline is false when the fallback is set up in a way this transport
	// does not reproduce (a proxy, no keep-alives, custom dialers): then
	// every request goes to it. Read once, like the settings above.
	inline bool

	now  func() time.Time
	pool pool
}

// New returns a Transport that takes its dialer, timeouts, idle pool depth,
// buffer sizes and response-head limit from fallback, and hands fallback
// every request it does not take itself. The settings are read once, here:
// set fallback up before New.
func New(fallback *http.Transport) *Transport {
	// A dialer set only in the deprecated field would be bypassed inline.
	//lint:ignore SA1019 reading Dial is how such a dialer is noticed
	legacyDial := fallback.Dial != nil
	t := &Transport{
		fallback:       fallback,
		dial:           fallback.DialContext,
		headerTimeout:  fallback.ResponseHeaderTimeout,
		idleTimeout:    fallback.IdleConnTimeout,
		maxIdle:        fallback.MaxIdleConnsPerHost,
		maxHeaderBytes: fallback.MaxResponseHeaderBytes,
		readBuf:        fallback.ReadBufferSize,
		writeBuf:       fallback.WriteBufferSize,
		now:            time.Now,
		inline: fallback.Proxy == nil && !fallback.DisableKeepAlives &&
			fallback.DialTLSContext == nil && !legacyDial,
	}
	if t.dial == nil {
		t.dial = (&net.Dialer{}).DialContext
	}
	if t.maxIdle <= 0 {
		t.maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	if t.maxHeaderBytes <= 0 {
		t.maxHeaderBytes = defaultMaxHeaderBytes
	}
	if t.readBuf <= 0 {
		t.readBuf = 4 << 10
	}
	if t.writeBuf <= 0 {
		t.writeBuf = 4 << 10
	}
	t.pool.init(t)
	return t
}

// takes reports whether the request's round trip can run inline.
func (t *Transport) takes(req *http.Request) bool {
	if req.URL == nil || req.URL.Scheme != "http" || req.URL.Host == "" {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	if !validMethod(req.Method) || !validHeader(req.Header) {
		// Request.Write writes the method and header names unchecked;
		// net/http's Transport refuses them with its own error.
		return false
	}
	if _, ok := req.Header["Upgrade"]; ok {
		return false
	}
	return t.inline
}

// RoundTrip sends req and returns the response once its head is read. The
// body is read from the connection as the caller reads it; the connection
// goes back to the idle pool when the body is read to its end, and is
// closed when the body is closed before that.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, _, err := t.RoundTripInline(req)
	return res, err
}

// RoundTripInline is RoundTrip, and reports whether this transport made the
// round trip itself, on the caller's goroutine. When it did, the request
// head was written before it returned and nothing of req but its context
// is used afterwards, even after a cancellation or an error: the caller
// may reuse req.Header once it is done with the response. When the
// fallback made it, net/http's writer goroutine may still be reading req.
func (t *Transport) RoundTripInline(req *http.Request) (*http.Response, bool, error) {
	if !t.takes(req) {
		res, err := t.fallback.RoundTrip(req)
		return res, false, err
	}
	res, err := t.roundTrip(req)
	return res, true, err
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	addr := canonicalAddr(req.URL)
	ctx := req.Context()
	replayable := isReplayable(req)
	for {
		c, err := t.pool.get(addr)
		if err != nil {
			return nil, err
		}
		reused := c != nil
		if !reused {
			if c, err = t.connect(ctx, addr); err != nil {
				return nil, err
			}
		}
		res, err := c.roundTrip(req)
		if err == nil {
			return res, nil
		}
		c.close()
		// A kept-alive connection the backend closes as we take it (after
		// the pool's check) fails before the first byte of a response.
		// net/http sends such a request again on a fresh connection when
		// it is safe to repeat; so do we. A new connection that fails is the backend's answer,
		// and so is a response header timeout: net/http does not retry
		// one, and doing so would double the wait on a slow backend.
		if reused && replayable && c.got == 0 && ctx.Err() == nil && !isTimeout(err) {
			continue
		}
		return nil, err
	}
}

// CloseIdleConnections closes the idle connections of both transports.
func (t *Transport) CloseIdleConnections() {
	t.pool.closeAll()
	t.fallback.CloseIdleConnections()
}

func (t *Transport) connect(ctx context.Context, addr string) (*conn, error) {
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{t: t, nc: nc, addr: addr, probe: newProber(nc)}
	c.br = bufio.NewReaderSize(c, t.readBuf)
	c.bw = bufio.NewWriterSize(nc, t.writeBuf)
	return c, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isReplayable is net/http's rule for sending a request again on a new
// connection: a method that is safe to repeat, or an idempotency key.
func isReplayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// canonicalAddr is the URL's host and port, the http port when the URL
// names none (an empty port, as in "host:", included).
func canonicalAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host // already host:port, and no string to build per request
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// conn is one backend connection. It serves one round trip at a time;
// between them it sits in the pool.
type conn struct {
	t     *Transport
	nc    net.Conn
	addr  string
	probe *prober
	br    *bufio.Reader
	bw    *bufio.Writer
	// limit is what the response head may still read (net/http's
	// MaxResponseHeaderBytes); negative once the head is read.
	limit int64
	// got counts the bytes read for the current round trip: a failure
	// after the first one cannot be retried.
	got    int64
	idleAt time.Time
}

// Read is the buffered reader's source: the connection, with the head's
// byte limit applied.
func (c *conn) Read(p []byte) (int, error) {
	if c.limit == 0 {
		return 0, errHeadTooLarge
	}
	if c.limit > 0 && int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.got += int64(n)
	if c.limit > 0 {
		c.limit -= int64(n)
	}
	return n, err
}

var errHeadTooLarge = errors.New("h1: backend response head exceeds the limit")

// aLongTimeAgo is a deadline in the past: setting it makes a blocked read
// or write return at once.
var aLongTimeAgo = time.Unix(1, 0)

func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	c.got, c.limit = 0, c.t.maxHeaderBytes
	// A cancelled request unblocks its read or write by breaking the
	// deadline; the connection is then closed, never pooled.
	stop := context.AfterFunc(req.Context(), func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	res, err := c.exchange(req)
	if err != nil {
		stop()
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("h1: %w", ctxErr)
		}
		return nil, err
	}
	c.limit = -1
	b := &body{rc: res.Body, c: c, ctx: req.Context(), stop: stop, reuse: !res.Close && !req.Close}
	res.Body = b
	if res.Body == nil || b.rc == http.NoBody {
		// Nothing left to read (HEAD, 204, 304, Content-Length: 0): the
		// connection is free now, whether or not the caller reads.
		b.release(true)
	}
	return res, nil
}

// exchange writes the request and reads the final response head.
func (c *conn) exchange(req *http.Request) (*http.Response, error) {
	if !writeHead(c.bw, req) {
		if err := req.Write(c.bw); err != nil {
			return nil, err
		}
	}
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	ctx := req.Context()
	if d := c.t.headerTimeout; d > 0 {
		if err := c.setReadDeadline(ctx, c.t.now().Add(d)); err != nil {
			return nil, err
		}
	}
	trace := httptrace.ContextClientTrace(ctx)
	for n := 0; ; n++ {
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		code := res.StatusCode
		// Only 100-199 are informational, as in net/http.
		if code >= 200 || code < 100 {
			if c.t.headerTimeout > 0 {
				if err := c.setReadDeadline(ctx, time.Time{}); err != nil {
					return nil, err
				}
			}
			return res, nil
		}
		if code == http.StatusSwitchingProtocols {
			// We never ask to switch (upgrades go to the fallback).
			return nil, errors.New("h1: backend switched protocols unasked")
		}
		if n == max1xx {
			return nil, errors.New("h1: too many 1xx responses from the backend")
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
			// Whoever took the 1xx limits how many it takes; the final
			// head gets the whole limit again, as in net/http.
			c.limit = c.t.maxHeaderBytes
		}
	}
}

// setReadDeadline moves the read deadline without undoing a cancellation:
// the request's context may have ended, and broken the deadline, just
// before this call replaced it. A cancellation after the check breaks
// the deadline after this call, so it stands.
func (c *conn) setReadDeadline(ctx context.Context, d time.Time) error {
	if err := c.nc.SetReadDeadline(d); err != nil {
		return err
	}
	return ctx.Err()
}

func (c *conn) close() { _ = c.nc.Close() }

// body hands the connection back when the response body is read to its
// end, and closes it when the body is closed before that (reading the rest
// of an unwanted body could take forever). It is allocated per response:
// a caller may Close a body after its connection has moved on. Unlike
// net/http's, it must be read and closed from one goroutine at a time, as
// httputil does.
type body struct {
	rc    io.ReadCloser
	c     *conn
	ctx   context.Context
	stop  func() bool
	reuse bool
	done  bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.release(true)
	case err != nil:
		b.release(false)
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			// The read failed on the deadline the cancellation broke: say
			// so, as RoundTrip does, rather than report a timeout.
			err = fmt.Errorf("h1: %w", ctxErr)
		}
	}
	return n, err
}

func (b *body) Close() error {
	b.release(false)
	return nil
}

func (b *body) release(complete bool) {
	if b.done {
		return
	}
	b.done = true
	if !b.stop() {
		// The request's context ended and broke the deadline.
		complete = false
	}
	// Bytes past the response are a backend out of step with us.
	if complete && b.reuse && b.c.br.Buffered() == 0 && b.c.t.pool.put(b.c) {
		return
	}
	b.c.close()
}
