// Package upstream is the benchmark's backend: a minimal HTTP/1.1 server
// that answers every request with one small prepared JSON response. It is
// several times cheaper per request than net/http, so it shares the load
// generator's core without becoming what the benchmark measures.
//
// GET /__echo answers with the request's header lines instead, so the
// benchmark can check what a proxy forwarded (identity headers set,
// credentials removed) before it measures that proxy.
package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// EchoPath answers with the request's headers.
const EchoPath = "/__echo"

// Body is what every other request gets, with Content-Type application/json.
const Body = `{"id":42,"name":"Project 42","status":"active","owner":"usr_1"}`

const maxHead = 16 << 10

var response = []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
	strconv.Itoa(len(Body)) + "\r\n\r\n" + Body)

var errHeadTooLarge = errors.New("upstream: request head too large")

// Server serves connections accepted from a listener until Close.
type Server struct {
	ln       net.Listener
	requests atomic.Int64
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Serve starts serving ln in the background.
func Serve(ln net.Listener) *Server {
	s := &Server{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

// Requests is how many requests were answered.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops accepting, closes every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// serveConn answers requests on c until the peer closes it or asks to.
func (s *Server) serveConn(c net.Conn) error {
	br := bufio.NewReaderSize(c, 8<<10)
	bw := bufio.NewWriterSize(c, 8<<10)
	var head []byte
	for {
		req, err := readHead(br, head[:0])
		if err != nil {
			return err
		}
		head = req.raw
		if req.bodyLen > 0 {
			if _, err := br.Discard(int(req.bodyLen)); err != nil {
				return err
			}
		}
		if req.path == EchoPath {
			writeEcho(bw, req.raw)
		} else {
			_, _ = bw.Write(response)
		}
		// Counted before the flush: a client that has read the answer must
		// find it counted.
		s.requests.Add(1)
		// Only flush once no further pipelined request is buffered.
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if req.close {
			return bw.Flush()
		}
	}
}

type request struct {
	raw     []byte // the head's header lines, for the echo
	path    string // only set for EchoPath; other paths are not kept
	bodyLen int64
	close   bool
}

// readHead reads a request line and headers. It appends the header lines
// to buf (reused between requests) and returns them in raw.
func readHead(br *bufio.Reader, buf []byte) (request, error) {
	var req request
	line, err := br.ReadSlice('\n')
	if err != nil {
		return req, err
	}
	// "GET /path HTTP/1.1"
	method, rest, ok1 := bytes.Cut(trimEOL(line), []byte(" "))
	target, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || !bytes.HasPrefix(proto, []byte("HTTP/1.")) {
		return req, fmt.Errorf("upstream: malformed request line %q", line)
	}
	if string(target) == EchoPath {
		req.path = EchoPath
	}
	req.close = proto[len(proto)-1] == '0'
	size := len(line)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return req, errHeadTooLarge
			}
			return req, err
		}
		if size += len(line); size > maxHead {
			return req, errHeadTooLarge
		}
		l := trimEOL(line)
		if len(l) == 0 {
			break
		}
		buf = append(buf, l...)
		buf = append(buf, '\n')
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return req, fmt.Errorf("upstream: malformed header line %q", l)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return req, fmt.Errorf("upstream: bad Content-Length %q", value)
			}
			req.bodyLen = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return req, errors.New("upstream: chunked request bodies are not supported")
		case bytes.EqualFold(name, []byte("Connection")):
			req.close = bytes.EqualFold(value, []byte("close"))
		}
	}
	req.raw = buf
	return req, nil
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

func writeEcho(w io.Writer, head []byte) {
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(head))
	_, _ = w.Write(head)
}
