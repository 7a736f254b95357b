package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// maxLine bounds a status or header line; a benchmark target sending more
// is broken.
const maxLine = 8 << 10

var errMalformed = errors.New("loadgen: malformed response")

// conn is one keep-alive HTTP/1.1 connection.
type conn struct {
	nc net.Conn
	br *bufio.Reader
}

func newConn(nc net.Conn) *conn {
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}
}

func (c *conn) Close() { _ = c.nc.Close() }

// roundTrip writes req and reads one response to its end. It returns the
// status and whether the server will close the connection.
func (c *conn) roundTrip(req []byte, deadline time.Time) (status int, closeAfter bool, err error) {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return 0, false, err
	}
	if _, err := c.nc.Write(req); err != nil {
		return 0, false, err
	}
	return readResponse(c.br)
}

// readResponse reads a response to a request other than HEAD: its status
// line, headers and body (Content-Length, chunked, or until close).
func readResponse(br *bufio.Reader) (status int, closeAfter bool, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	closeAfter = line[7] == '0' // HTTP/1.0 closes unless told otherwise
	length, chunked := int64(-1), false
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, false, err
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, fmt.Errorf("%w: header line %q", errMalformed, line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return 0, false, fmt.Errorf("%w: Content-Length %q", errMalformed, value)
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				closeAfter = true
			} else if bytes.EqualFold(value, []byte("keep-alive")) {
				closeAfter = false
			}
		}
	}
	switch {
	case status == 204 || status == 304 || status < 200:
	case chunked:
		err = discardChunked(br)
	case length >= 0:
		_, err = br.Discard(int(length))
	default:
		_, err = io.Copy(io.Discard, br)
		closeAfter = true
	}
	return status, closeAfter, err
}

// discardChunked reads a chunked body and its trailers.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: chunk size %q", errMalformed, line)
		}
		if n == 0 {
			for { // trailers up to the empty line
				line, err := readLine(br)
				if err != nil {
					return err
				}
				if len(line) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n)); err != nil {
			return err
		}
		if line, err := readLine(br); err != nil || len(line) != 0 {
			return fmt.Errorf("%w: chunk not followed by CRLF", errMalformed)
		}
	}
}

// readLine returns one line without its CRLF (or LF). The slice is valid
// until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLine {
			return nil, fmt.Errorf("%w: line too long", errMalformed)
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// NewRequests prepares one GET of path for each bearer token (one request
// without Authorization when tokens is empty), addressed to host.
func NewRequests(host, path string, tokens []string) [][]byte {
	if len(tokens) == 0 {
		tokens = []string{""}
	}
	out := make([][]byte, len(tokens))
	for i, tok := range tokens {
		b := []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n")
		if tok != "" {
			b = append(b, "Authorization: Bearer "+tok+"\r\n"...)
		}
		b = append(b, "User-Agent: keyproxy-loadgen\r\nAccept: application/json\r\n\r\n"...)
		out[i] = b
	}
	return out
}
