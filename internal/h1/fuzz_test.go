package h1

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"reflect"
	"testing"
	"time"
)

// FuzzResponseAsNetHTTP feeds the same backend bytes to net/http's
// Transport and to ours: whatever net/http reads as a response, ours must
// read the same (status, header, body, trailer). Where net/http refuses
// the bytes, ours may do anything but hang or panic. The exceptions are
// the two documented differences: an unasked 101 and more than max1xx
// informational responses are errors here.
func FuzzResponseAsNetHTTP(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil the connection closes",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabstray bytes",
		"HTTP/1.1 999 Odd\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"not http at all",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		want := fetchVia(t, raw, func(fb *http.Transport) http.RoundTripper { return fb })
		got := fetchVia(t, raw, func(fb *http.Transport) http.RoundTripper { return New(fb) })
		if want.err != nil || want.status == http.StatusSwitchingProtocols || want.informational > max1xx {
			return
		}
		if got.err != nil {
			t.Fatalf("net/http read %d %q, we failed: %v", want.status, want.body, got.err)
		}
		if got.status != want.status || got.body != want.body || !reflect.DeepEqual(got.header, want.header) ||
			!reflect.DeepEqual(got.trailer, want.trailer) || got.informational != want.informational {
			t.Fatalf("we read %+v\nnet/http read %+v", got, want)
		}
	})
}

type outcome struct {
	status          int
	header, trailer http.Header
	body            string
	informational   int
	err             error
}

// fetchVia makes one GET through the transport mk builds, to a backend
// that reads the request and answers raw, then hangs up.
func fetchVia(t *testing.T, raw []byte, mk func(*http.Transport) http.RoundTripper) outcome {
	t.Helper()
	fb := &http.Transport{DisableCompression: true, DialContext: func(context.Context, string, string) (net.Conn, error) {
		c, s := net.Pipe()
		go answerOnce(s, raw)
		return c, nil
	}}
	defer fb.CloseIdleConnections()
	rt := mk(fb)
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		defer c.CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var o outcome
	trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
		o.informational++
		return nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, "http://backend.test/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := rt.RoundTrip(req)
	if err != nil {
		o.err = err
	} else {
		b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		_ = res.Body.Close()
		o.status, o.header, o.trailer, o.body, o.err = res.StatusCode, res.Header, res.Trailer, string(b), err
	}
	if d := time.Since(start); d >= bound {
		t.Fatalf("a round trip took %s: it waited for bytes that never came", d)
	}
	return o
}

// answerOnce reads one request head and writes raw as the answer.
func answerOnce(c net.Conn, raw []byte) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	_, _ = c.Write(raw)
}
