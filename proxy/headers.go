package proxy

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
)

// headerNames holds the header names prepared once at start-up.
type headerNames struct {
	userID, teamID, role, keyID string // canonical identity header names
	// prefix is the identity prefix lower-cased with '-' for '_', the form
	// every client header name is compared in.
	prefix string
	// fixed holds, for common header names, whether they go on to the
	// backend, where that answer is the same whoever the peer is and the
	// name is not hop-by-hop: one lookup instead of the checks, which took
	// a tenth of the hot path's instructions (callgrind).
	fixed map[string]bool
}

// commonHeaders are request header names most clients send, canonical.
// Only their decisions are prepared; any other name is checked in full.
var commonHeaders = [...]string{
	"Authorization", "Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language",
	"User-Agent", "Content-Type", "Content-Length", "Content-Encoding", "Content-Md5",
	"Cache-Control", "Pragma", "Expect", "Range", "Origin", "Referer", "Cookie", "Date", "Dnt",
	"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range",
	"Idempotency-Key", "Traceparent", "Tracestate", "Baggage", "Sentry-Trace",
	"X-Request-Id", "X-Requested-With", "X-Correlation-Id", "X-Amzn-Trace-Id",
	"X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled",
	"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
}

func newHeaderNames(prefix string) (headerNames, error) {
	if len(prefix) < 2 || len(prefix) > 64 {
		return headerNames{}, fmt.Errorf("proxy: HeaderPrefix must be 2-64 characters, got %q", prefix)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !(c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return headerNames{}, fmt.Errorf("proxy: HeaderPrefix %q may only hold letters, digits, '-' and '_'", prefix)
		}
	}
	canon := func(s string) string { return http.CanonicalHeaderKey(strings.ReplaceAll(prefix, "_", "-") + s) }
	n := headerNames{
		userID: canon("User-Id"),
		teamID: canon("Team-Id"),
		role:   canon("Role"),
		keyID:  canon("Key-Id"),
		prefix: normaliseName(prefix),
		fixed:  make(map[string]bool, len(commonHeaders)),
	}
	// Each answer is the full checks' own, for the configured prefix.
	for _, name := range commonHeaders {
		if fwd := n.forwardable(name, false); fwd == n.forwardable(name, true) && !isHopByHop(name) {
			n.fixed[name] = fwd
		}
	}
	return n, nil
}

// normaliseName lower-cases a header name and spells '_' as '-': the form in
// which backends that map headers to CGI-style variables see no difference.
func normaliseName(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = normByte(c)
	}
	return string(b)
}

func normByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// hasNormPrefix reports whether name, normalised, starts with prefix
// (already normalised), without allocating.
func hasNormPrefix(name, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if normByte(name[i]) != prefix[i] {
			return false
		}
	}
	return true
}

// guarded are the headers this proxy sets itself, normalised. Their
// canonical spelling is replaced anyway; this list catches the '_'
// spellings that a CGI-style backend would read as the same variable.
var guarded = [...]string{"x-request-id", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "authorization"}

func isGuarded(name string) bool {
	for _, g := range guarded {
		if len(name) == len(g) && hasNormPrefix(name, g) {
			return true
		}
	}
	return false
}

// forwardedPrefix starts the X-Forwarded-* family (normalised). httputil
// removes only -For, -Host and -Proto; backends also read -Port, -Prefix,
// -Server, -Ssl, -Scheme and -Uri as facts about the connection.
const forwardedPrefix = "x-forwarded-"

// connectionFacts are other headers (normalised) that backends and
// frameworks read as facts about the client's connection or the original
// URL (X-Original-URL has bypassed path rules in front of IIS and
// Symfony). Only a trusted proxy may state them.
var connectionFacts = [...]string{
	"x-real-ip", "true-client-ip", "x-client-ip", "x-cluster-client-ip", "cf-connecting-ip",
	"fastly-client-ip", "x-original-forwarded-for", "x-original-url", "x-rewrite-url", "x-original-host",
}

func isConnectionFact(name string) bool {
	for _, f := range connectionFacts {
		if len(name) == len(f) && hasNormPrefix(name, f) {
			return true
		}
	}
	return false
}

// forwardable reports whether a client header may reach the backend. It
// refuses the credentials and every name a client could pose as someone
// with: any spelling of the identity prefix, '_' spellings of the headers
// we set, and, unless the peer is a trusted proxy, any spelling of the
// X-Forwarded-* family and of the other client-address headers.
func (n *headerNames) forwardable(name string, trusted bool) bool {
	switch {
	case hasNormPrefix(name, n.prefix):
		return false
	case !trusted && (hasNormPrefix(name, forwardedPrefix) || isConnectionFact(name)):
		return false
	case strings.IndexByte(name, '_') >= 0 || len(name) == len("authorization"):
		return !isGuarded(name)
	}
	return true
}

// copyForwardable copies the client headers of src that go on to the
// backend into dst: the forwardable ones, less the hop-by-hop headers and
// those the client names in Connection, which httputil.ReverseProxy would
// remove (ServeHTTP hands it a request without headers, so that its
// request copy does not clone a map that rewrite replaces). Te: trailers
// and a WebSocket upgrade are passed on as the ReverseProxy does.
func (n *headerNames) copyForwardable(dst, src http.Header, trusted bool) {
	// Connection, Te and Upgrade are hop-by-hop, so the one walk that
	// copies finds them; looking each up as well would cost three lookups
	// per request, for headers most requests do not have.
	var conn, te, up []string
	for k, v := range src {
		if fwd, ok := n.fixed[k]; ok {
			if fwd {
				dst[k] = v
			}
			continue
		}
		if isHopByHop(k) {
			switch k {
			case "Connection":
				conn = v
			case "Te":
				te = v
			case "Upgrade":
				up = v
			}
			continue
		}
		if n.forwardable(k, trusted) {
			dst[k] = v
		}
	}
	if len(conn) > 0 {
		for k := range dst {
			if namedInConnection(conn, k) {
				delete(dst, k)
			}
		}
	}
	if len(te) > 0 && hasToken(te, "trailers") {
		dst["Te"] = []string{"trailers"}
	}
	// filterUpgrade left only a WebSocket upgrade.
	if len(up) > 0 && len(conn) > 0 && hasToken(conn, "upgrade") {
		dst["Connection"] = []string{"Upgrade"}
		dst["Upgrade"] = up[:1:1]
	}
}

// hopByHop are the headers httputil.ReverseProxy removes (RFC 9110 §7.6.1
// and RFC 2616 §13.5.1), and Forwarded, which it removes before Rewrite;
// lower-case.
var hopByHop = [...]string{
	"connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
	"te", "trailer", "transfer-encoding", "upgrade", "forwarded",
}

func isHopByHop(name string) bool {
	for _, h := range hopByHop {
		if equalFoldASCII(name, h) {
			return true
		}
	}
	return false
}

// hasToken reports whether the comma-separated values hold token, compared
// without regard to ASCII case and trimmed of spaces and tabs, as
// httpguts.HeaderValuesContainsToken does.
func hasToken(values []string, token string) bool { return hasTrimmedToken(values, token, " \t") }

// namedInConnection reports whether the Connection values name header,
// each name trimmed as textproto.TrimString does (the ReverseProxy's
// removal of the headers named there).
func namedInConnection(conn []string, header string) bool {
	return hasTrimmedToken(conn, header, " \t\r\n")
}

func hasTrimmedToken(values []string, token, cutset string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if t = strings.Trim(t, cutset); len(t) == len(token) && strings.EqualFold(t, token) {
				return true
			}
		}
	}
	return false
}

// strip deletes the headers that are not forwardable, in place: for a
// request that reaches rewrite without an exchange, which gets no headers
// of ours and so needs no larger map.
func (n *headerNames) strip(h http.Header, trusted bool) {
	for k := range h {
		if !n.forwardable(k, trusted) {
			delete(h, k)
		}
	}
}

// filterUpgrade keeps a WebSocket upgrade and drops any other before the
// ReverseProxy sees it. After an upgrade the proxy relays bytes, not
// requests: an h2c upgrade would let every later request on that
// connection reach the backend unauthenticated, with identity headers of
// the client's choosing ("h2c smuggling"). A server may ignore an Upgrade
// it does not support (RFC 9110 §7.8), so the request goes on without it.
func filterUpgrade(h http.Header) {
	up := h["Upgrade"]
	if len(up) == 1 && equalFoldASCII(up[0], "websocket") {
		return
	}
	delete(h, "Upgrade")
	delete(h, "Http2-Settings")
}

// addedHeaders is how many headers rewrite sets: four identity headers,
// X-Request-Id and X-Forwarded-For, -Host and -Proto.
const addedHeaders = 8

// rewrite is the ReverseProxy's Rewrite hook. It sets our headers after
// the client's were copied without the hop-by-hop ones (and any named in
// Connection), so nothing set here can be stripped by the client.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	e := exchangeFrom(pr.In.Context())
	pr.SetURL(h.upstream)
	if e == nil { // not reached through ServeHTTP: forward no identity
		h.names.strip(pr.Out.Header, false)
		return
	}
	// The request copy has an empty header map (ServeHTTP passes the
	// ReverseProxy a request without headers): one sized for the client's
	// headers and ours is built from the client's request instead of a
	// clone that would be filtered and then grow (three allocations and a
	// rehash). The map is one a round trip made inline gave back, if any:
	// after a round trip by net/http's transport, cancelled or not, its
	// writer goroutine may still be reading the map, which is then left
	// to the collector.
	in := e.req.Header
	out := h.headers.get(len(in) + addedHeaders)
	h.names.copyForwardable(out, in, e.trusted)
	pr.Out.Header = out
	h.setForwarded(pr, e)
	out[h.names.userID] = e.one(hvUserID)
	out[h.names.teamID] = e.one(hvTeamID)
	out[h.names.role] = e.one(hvRole)
	out[h.names.keyID] = e.one(hvKeyID)
	out["X-Request-Id"] = e.one(hvRequestID)
}

// setForwarded sets X-Forwarded-For/-Host/-Proto as SetXForwarded does,
// except that a trusted peer's values are kept (its X-Forwarded-For
// appended to). Forwarded is never passed on: we do not extend it.
func (h *Handler) setForwarded(pr *httputil.ProxyRequest, e *exchange) {
	out, in := pr.Out.Header, e.req.Header
	if e.peer != "" {
		xff := e.peer
		if e.trusted {
			if prior := in["X-Forwarded-For"]; len(prior) > 0 {
				xff = strings.Join(prior, ", ") + ", " + e.peer
			}
		}
		e.hv[hvForwardedFor] = xff
		out["X-Forwarded-For"] = e.one(hvForwardedFor)
	}
	e.hv[hvForwardedHost] = pr.In.Host
	e.hv[hvForwardedProto] = "http"
	if pr.In.TLS != nil {
		e.hv[hvForwardedProto] = "https"
	}
	// Only a trusted peer's values are read: a client's request costs no
	// lookups for them.
	if e.trusted {
		if v := in["X-Forwarded-Host"]; len(v) == 1 {
			e.hv[hvForwardedHost] = v[0]
		}
		if v := in["X-Forwarded-Proto"]; len(v) == 1 && (v[0] == "http" || v[0] == "https") {
			e.hv[hvForwardedProto] = v[0]
		}
	}
	out["X-Forwarded-Host"] = e.one(hvForwardedHost)
	out["X-Forwarded-Proto"] = e.one(hvForwardedProto)
}

// normalisePrefixes maps IPv4-mapped IPv6 prefixes to IPv4 so one Contains
// per prefix suffices for an unmapped peer address.
func normalisePrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

func (h *Handler) isTrusted(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	return h.trustedAddr(a)
}

func (h *Handler) trustedAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the address an audit event names: the peer, or behind
// trusted proxies the right-most X-Forwarded-For entry that is not itself
// a trusted proxy (entries left of it are the client's to forge).
func (h *Handler) clientIP(e *exchange) string {
	if !e.trusted {
		return e.peer
	}
	client := e.peer
	values := e.req.Header["X-Forwarded-For"]
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(entry))
			if err != nil {
				return client // garbage: keep the last hop we could verify
			}
			client = a.Unmap().String()
			if !h.trustedAddr(a) {
				return client
			}
		}
	}
	return client
}
