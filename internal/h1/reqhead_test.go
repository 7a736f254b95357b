package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
)

// proxiedGet is the request httputil hands the transport for a typical API
// call through keyproxy.
func proxiedGet() *http.Request {
	return &http.Request{
		Method: http.MethodGet,
		URL:    &url.URL{Scheme: "http", Host: "127.0.0.1:8081", Path: "/v1/projects/42", RawQuery: "page=2&q=a%20b"},
		Host:   "api.example.com",
		Header: http.Header{
			"Accept":            {"*/*"},
			"User-Agent":        {"curl/8.5.0"},
			"X-Forwarded-For":   {"203.0.113.7"},
			"X-Request-Id":      {"2fabw10pmmtpq-1"},
			"X-Wevion-User-Id":  {"usr_alice"},
			"X-Wevion-Team-Id":  {"team_acme"},
			"X-Wevion-Role":     {"admin"},
			"Accept-Encoding":   {"gzip", "br"},
			"Traceparent":       {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			"Cache-Control":     {"  no-cache\t"},
			"X-Empty":           {""},
			"X-No-Values":       {},
			"lower-case-header": {"kept as given"},
		},
		Body: http.NoBody,
	}
}

// requestWrite is what net/http writes for req.
func requestWrite(t *testing.T, req *http.Request) string {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	if err := req.Write(bw); err != nil {
		t.Fatalf("Request.Write: %v", err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// ourWrite is what writeHead writes for req, and whether it took it.
func ourWrite(t *testing.T, req *http.Request) (string, bool) {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	took := writeHead(bw, req)
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.String(), took
}

func TestWriteHead(t *testing.T) {
	wantsFields := httptrace.WithClientTrace(context.Background(),
		&httptrace.ClientTrace{WroteHeaderField: func(string, []string) {}})
	wantsEnd := httptrace.WithClientTrace(context.Background(),
		&httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {}})
	// httputil sets this trace on every request: it must not cost the fast path.
	got1xx := httptrace.WithClientTrace(context.Background(),
		&httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil }})
	for _, tc := range []struct {
		name string
		edit func(r *http.Request) *http.Request
		take bool
	}{
		{"proxied GET", func(r *http.Request) *http.Request { return r }, true},
		{"HEAD", func(r *http.Request) *http.Request { r.Method = http.MethodHead; return r }, true},
		{"empty method is GET", func(r *http.Request) *http.Request { r.Method = ""; return r }, true},
		{"no User-Agent gets Go's", func(r *http.Request) *http.Request { delete(r.Header, "User-Agent"); return r }, true},
		{"empty User-Agent sends none", func(r *http.Request) *http.Request { r.Header["User-Agent"] = []string{""}; return r }, true},
		{"User-Agent of spaces is sent empty", func(r *http.Request) *http.Request { r.Header["User-Agent"] = []string{" \t "}; return r }, true},
		{"User-Agent without values sends none", func(r *http.Request) *http.Request { r.Header["User-Agent"] = nil; return r }, true},
		{"excluded fields in the header", func(r *http.Request) *http.Request {
			r.Header["Host"] = []string{"evil.example"}
			r.Header["Content-Length"] = []string{"5"}
			r.Header["Transfer-Encoding"] = []string{"chunked"}
			r.Header["Trailer"] = []string{"X-T"}
			return r
		}, true},
		{"host from the URL", func(r *http.Request) *http.Request { r.Host = ""; return r }, true},
		{"IPv6 host", func(r *http.Request) *http.Request { r.Host = "[::1]:8080"; return r }, true},
		{"root path", func(r *http.Request) *http.Request { r.URL.Path, r.URL.RawQuery = "", ""; return r }, true},
		{"escaped path", func(r *http.Request) *http.Request { r.URL.Path, r.URL.RawPath = "/a b/ü", ""; return r }, true},
		{"raw path kept", func(r *http.Request) *http.Request { r.URL.Path, r.URL.RawPath = "/a/b", "/a%2Fb"; return r }, true},
		{"forced empty query", func(r *http.Request) *http.Request { r.URL.RawQuery, r.URL.ForceQuery = "", true; return r }, true},
		{"many header fields", func(r *http.Request) *http.Request {
			for i := range 40 {
				r.Header[strings.Repeat("X", i+1)] = []string{"v"}
			}
			return r
		}, true},
		{"trace taking 1xx responses", func(r *http.Request) *http.Request { return r.WithContext(got1xx) }, true},

		{"POST", func(r *http.Request) *http.Request { r.Method = http.MethodPost; return r }, false},
		{"DELETE", func(r *http.Request) *http.Request { r.Method = http.MethodDelete; return r }, false},
		{"OPTIONS", func(r *http.Request) *http.Request { r.Method = http.MethodOptions; return r }, false},
		{"Connection: close", func(r *http.Request) *http.Request { r.Close = true; return r }, false},
		{"content length", func(r *http.Request) *http.Request { r.ContentLength = -1; return r }, false},
		{"transfer encoding", func(r *http.Request) *http.Request { r.TransferEncoding = []string{"chunked"}; return r }, false},
		{"trailer", func(r *http.Request) *http.Request { r.Trailer = http.Header{"X-T": nil}; return r }, false},
		{"non-ASCII host", func(r *http.Request) *http.Request { r.Host = "bücher.example"; return r }, false},
		{"IPv6 zone", func(r *http.Request) *http.Request { r.Host = "[fe80::1%25en0]:80"; return r }, false},
		{"invalid host", func(r *http.Request) *http.Request { r.Host = "a b"; return r }, false},
		{"no host", func(r *http.Request) *http.Request { r.Host, r.URL.Host = "", ""; return r }, false},
		{"opaque URL", func(r *http.Request) *http.Request { r.URL.Opaque = "//other/x"; return r }, false},
		{"control byte in query", func(r *http.Request) *http.Request { r.URL.RawQuery = "a=\x01"; return r }, false},
		{"trace wanting each field", func(r *http.Request) *http.Request { return r.WithContext(wantsFields) }, false},
		{"trace wanting the write's end", func(r *http.Request) *http.Request { return r.WithContext(wantsEnd) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.edit(proxiedGet())
			got, took := ourWrite(t, req)
			if took != tc.take {
				t.Fatalf("writeHead took the request: %v, want %v", took, tc.take)
			}
			if !took {
				if got != "" {
					t.Fatalf("declined, but wrote %q", got)
				}
				return
			}
			if want := requestWrite(t, req); got != want {
				t.Fatalf("wrote\n%q\nRequest.Write writes\n%q", got, want)
			}
		})
	}
}

// FuzzWriteHeadAsRequestWrite: for any request the transport takes inline
// (its method and header pass the checks in takes), writeHead either
// declines and writes nothing or writes what Request.Write writes.
func FuzzWriteHeadAsRequestWrite(f *testing.F) {
	f.Add("GET", "api.example.com", "/v1/projects/42", "", "page=2", false, false, "Accept: */*\nUser-Agent: wrk\nX-Wevion-User-Id: usr_alice")
	f.Add("HEAD", "127.0.0.1:8081", "/a b", "", "", true, false, "Accept-Encoding: gzip\nAccept-Encoding: br\nUser-Agent:")
	f.Add("", "[::1]:80", "/a/b", "/a%2Fb", "", false, true, "Host: x\nX:  padded\t")
	f.Add("GET", "bücher.example", "*", "", "q=\x7f", false, false, "lower: v")
	f.Fuzz(func(t *testing.T, method, host, path, rawPath, query string, force, closeIt bool, fields string) {
		h := http.Header{}
		for line := range strings.SplitSeq(fields, "\n") {
			name, value, _ := strings.Cut(line, ":")
			h[name] = append(h[name], value)
		}
		if !validMethod(method) || !validHeader(h) {
			return // takes hands these to the fallback
		}
		req := &http.Request{
			Method: method,
			URL:    &url.URL{Scheme: "http", Host: "127.0.0.1:8081", Path: path, RawPath: rawPath, RawQuery: query, ForceQuery: force},
			Host:   host,
			Header: h,
			Close:  closeIt,
		}
		got, took := ourWrite(t, req)
		if !took {
			if got != "" {
				t.Fatalf("declined, but wrote %q", got)
			}
			return
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		if err := req.Write(bw); err != nil {
			t.Fatalf("we wrote %q where Request.Write fails: %v", got, err)
		}
		_ = bw.Flush()
		if want := buf.String(); got != want {
			t.Fatalf("wrote\n%q\nRequest.Write writes\n%q", got, want)
		}
	})
}

// BenchmarkWriteHead compares writeHead with Request.Write on the request
// a proxied API call makes.
func BenchmarkWriteHead(b *testing.B) {
	req := proxiedGet()
	bw := bufio.NewWriter(io.Discard)
	b.Run("h1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writeHead(bw, req)
			_ = bw.Flush()
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = req.Write(bw)
			_ = bw.Flush()
		}
	})
}
