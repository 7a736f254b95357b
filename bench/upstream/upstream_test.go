package upstream

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T) (*Server, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln)
	t.Cleanup(func() { _ = s.Close() })
	return s, "http://" + ln.Addr().String()
}

func TestServer_AnswersEveryRequestOnOneKeptAliveConnection(t *testing.T) {
	s, url := start(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	reused := 0
	for i := range 5 {
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", fmt.Sprintf("%s/v1/projects/%d", url, i), nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != Body || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
		}
	}
	if reused != 4 || s.Requests() != 5 {
		t.Fatalf("reused %d connections, served %d: want 4 and 5", reused, s.Requests())
	}
}

func TestServer_EchoShowsTheHeadersReceived(t *testing.T) {
	_, url := start(t)
	req, _ := http.NewRequest("GET", url+EchoPath, nil)
	req.Header.Set("X-Wevion-User-Id", "usr_1")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "X-Wevion-User-Id: usr_1\n") || !strings.Contains(string(body), "Host: ") {
		t.Fatalf("echo %q", body)
	}
}

func TestServer_DiscardsBodiesAndHonoursConnectionClose(t *testing.T) {
	_, url := start(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Two pipelined requests, the first with a body; the second asks to close.
	_, _ = io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != Body {
			t.Fatalf("response %d body %q", i, body)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after Connection: close: %v", err)
	}
}

func TestServer_RefusesMalformedRequests(t *testing.T) {
	for name, in := range map[string]string{
		"no protocol":   "GET /\r\n\r\n",
		"no colon":      "GET / HTTP/1.1\r\nbroken\r\n\r\n",
		"chunked body":  "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"head too long": "GET / HTTP/1.1\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 20) + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readHead(bufio.NewReaderSize(strings.NewReader(in), 8<<10), nil)
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzReadHead(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("POST /__echo HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc")
	f.Fuzz(func(t *testing.T, in string) {
		req, err := readHead(bufio.NewReaderSize(strings.NewReader(in), 8<<10), nil)
		if err == nil && (req.bodyLen < 0 || len(req.raw) > maxHead) {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func ExampleServe() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	s := Serve(ln)
	defer s.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + "/v1/projects/42")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 {"id":42,"name":"Project 42","status":"active","owner":"usr_1"}
}
