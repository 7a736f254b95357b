package loadgen

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadResponse_ConsumesExactlyOneResponse(t *testing.T) {
	const next = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	tests := []struct {
		name       string
		in         string
		status     int
		closeAfter bool
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}", 200, false},
		{"chunked with extension and trailer", "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n", 201, false},
		{"no body on 204", "HTTP/1.1 204 No Content\r\n\r\n", 204, false},
		{"connection close", "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 429, true},
		{"HTTP/1.0 closes by default", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, true},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200, false},
		{"bare LF line endings", "HTTP/1.1 503 Service Unavailable\nContent-Length: 3\n\nabc", 503, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in + next))
			status, closeAfter, err := readResponse(br)
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.status || closeAfter != tt.closeAfter {
				t.Fatalf("got status %d close %v, want %d %v", status, closeAfter, tt.status, tt.closeAfter)
			}
			// The next response on the connection must start where this one ended.
			if status, _, err := readResponse(br); err != nil || status != 200 {
				t.Fatalf("following response: status %d, err %v", status, err)
			}
		})
	}
}

func TestReadResponse_BodyUntilCloseWithoutLength(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n\r\nbody until EOF"))
	status, closeAfter, err := readResponse(br)
	if err != nil || status != 200 || !closeAfter {
		t.Fatalf("status %d close %v err %v", status, closeAfter, err)
	}
}

func TestReadResponse_RefusesMalformed(t *testing.T) {
	for name, in := range map[string]string{
		"not http":        "SSH-2.0-OpenSSH\r\n\r\n",
		"bad status":      "HTTP/1.1 2x0 OK\r\n\r\n",
		"header no colon": "HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
		"bad length":      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"bad chunk size":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"line too long":   "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 20<<10) + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := readResponse(bufio.NewReaderSize(strings.NewReader(in), 16<<10))
			if !errors.Is(err, errMalformed) {
				t.Fatalf("err = %v, want errMalformed", err)
			}
		})
	}
}

func TestReadResponse_TruncatedIsAnError(t *testing.T) {
	_, _, err := readResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")))
	if err == nil {
		t.Fatal("truncated body accepted")
	}
	_, _, err = readResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Le")))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want unexpected EOF", err)
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
	f.Add("HTTP/1.0 404 Not Found\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		status, _, err := readResponse(bufio.NewReaderSize(strings.NewReader(in), 16<<10))
		if err == nil && (status < 0 || status > 999) {
			t.Fatalf("status %d accepted", status)
		}
	})
}

func TestNewRequests_OnePerTokenWithAuthorization(t *testing.T) {
	reqs := NewRequests("127.0.0.1:8080", "/v1/x", []string{"a", "b"})
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	want := "GET /v1/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer b\r\n"
	if !strings.HasPrefix(string(reqs[1]), want) || !strings.HasSuffix(string(reqs[1]), "\r\n\r\n") {
		t.Fatalf("request %q", reqs[1])
	}
	if r := NewRequests("h", "/", nil); len(r) != 1 || strings.Contains(string(r[0]), "Authorization") {
		t.Fatalf("no tokens: %q", r)
	}
}
