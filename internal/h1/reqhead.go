package h1

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
)

// writeHead writes a GET or HEAD request head the way Request.Write does,
// byte for byte, and reports false, having written nothing, for any request
// it does not cover; the caller then uses Request.Write.
//
// Request.Write formats its first lines with fmt, builds a transfer writer
// and sorts the header through an interface: about 1 µs a request, 2% of a
// proxied response's CPU, for a head that is the same few lines every time.
// The cases it treats specially (a body or its length, Connection: close,
// trailers, a host that needs Punycode or loses an IPv6 zone, a URI with a
// control byte, a trace that wants each header field or the write's end)
// are left to it, which keeps this short enough to check against it by
// fuzzing.
func writeHead(bw *bufio.Writer, req *http.Request) bool {
	method := req.Method
	switch method {
	case "":
		method = http.MethodGet
	case http.MethodGet, http.MethodHead:
	default:
		// Others may carry Content-Length: 0 on the transfer writer's rules.
		return false
	}
	if req.Close || req.ContentLength != 0 || len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 {
		return false
	}
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil &&
		(trace.WroteHeaderField != nil || trace.WroteRequest != nil) {
		return false
	}
	u := req.URL
	if u.Opaque != "" {
		return false
	}
	host := req.Host
	if host == "" {
		host = u.Host
	}
	if !plainHost(host) {
		return false
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	query := u.ForceQuery || u.RawQuery != ""
	if hasCTL(path) || (query && hasCTL(u.RawQuery)) {
		return false
	}

	// Request.Write writes Host and User-Agent first, then the rest sorted
	// by name, leaving out the fields it writes from the request itself.
	var stack [24]string
	names := stack[:0]
	for name := range req.Header {
		switch name {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)

	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	if query {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	ua := "Go-http-client/1.1"
	if v, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = v[0]
		}
	}
	// Request.Write trims after deciding: a value of spaces is sent empty.
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(textproto.TrimString(ua))
		bw.WriteString("\r\n")
	}
	for _, name := range names {
		for _, v := range req.Header[name] {
			bw.WriteString(name)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	return true
}

// plainHost accepts a non-empty host of the bytes a registered name, an
// IPv4 address, a bracketed IPv6 address and a port are made of: nothing
// Request.Write would convert to Punycode, trim a zone from or refuse.
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		switch b := h[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case b == '-', b == '.', b == ':', b == '[', b == ']', b == '_':
		default:
			return false
		}
	}
	return true
}

// hasCTL reports a control byte, which Request.Write refuses in a URI.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}
