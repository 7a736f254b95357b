package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync/atomic"
	"unsafe"
)

const maxRequestID = 128

// requestIDChars marks the bytes a client's X-Request-Id may hold: enough
// for UUIDs, ULIDs and most tracing ids, nothing that needs escaping in a
// log line, a JSON string or a header.
var requestIDChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "._:-" {
		t[c] = true
	}
	return t
}()

// validRequestID reports whether s is 1–128 characters of [A-Za-z0-9._:-].
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !requestIDChars[s[i]] {
			return false
		}
	}
	return true
}

// idGenerator makes request ids unique across processes without reading
// crypto/rand per request: a random per-process base and a counter.
type idGenerator struct {
	base string
	n    atomic.Uint64
}

func newIDGenerator() (*idGenerator, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("proxy: seeding request ids: %w", err)
	}
	base := strconv.FormatUint(binary.LittleEndian.Uint64(b[:]), 36)
	return &idGenerator{base: base + "-"}, nil
}

// generatedIDLen is the longest id next makes: two uint64 in base 36 and
// the dash between them.
const generatedIDLen = 2*13 + 1

// next returns a new id in buf's memory (no allocation: an exchange keeps
// the buffer, and the id, for the request's life). buf is not written again.
func (g *idGenerator) next(buf *[generatedIDLen]byte) string {
	b := append(buf[:0], g.base...)
	b = strconv.AppendUint(b, g.n.Add(1), 36)
	return unsafe.String(unsafe.SliceData(b), len(b))
}
