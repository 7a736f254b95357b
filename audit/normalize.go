package audit

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds on client-controlled text, so one request cannot make an audit
// row or stream entry arbitrarily large.
const (
	maxPathLen  = 2048
	maxFieldLen = 512
)

// prepare fills what the caller left empty and normalises the rest, so
// that every sink stores the same event and none can refuse it:
//   - Time is UTC and truncated to microseconds (what PostgreSQL keeps);
//   - Path loses its query string and fragment: a query may carry a
//     credential (?api_key=…), and the audit record must never hold one;
//   - text is valid UTF-8 without NUL (PostgreSQL rejects both, and one
//     bad request path must not fail a whole batch), cut to a bounded
//     length.
func (p *Pipeline) prepare(e *Event) {
	if e.Time.IsZero() {
		e.Time = p.now()
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	if e.ID == "" {
		e.ID = p.newID(e.Time)
	}
	if i := strings.IndexByte(e.Path, '?'); i >= 0 {
		e.Path = e.Path[:i]
	}
	if i := strings.IndexByte(e.Path, '#'); i >= 0 {
		e.Path = e.Path[:i]
	}
	e.Path = clean(e.Path, maxPathLen)
	for _, f := range []*string{&e.ID, &e.Type, &e.RequestID, &e.KeyID, &e.KeyStart, &e.UserID, &e.TeamID,
		&e.Role, &e.Actor, &e.Method, &e.ClientIP, &e.UserAgent, &e.Outcome} {
		*f = clean(*f, maxFieldLen)
	}
}

// clean returns s as valid UTF-8 without NUL, at most n bytes, cut on a
// rune boundary. It allocates only when s needs changing.
func clean(s string, n int) string {
	if len(s) <= n && plainASCII(s) {
		return s
	}
	s = truncate(s, n)
	if !utf8.ValidString(s) {
		s = truncate(strings.ToValidUTF8(s, "\uFFFD"), n)
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = truncate(strings.ReplaceAll(s, "\x00", "\uFFFD"), n)
	}
	return s
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// plainASCII reports whether s is ASCII without NUL, as nearly every field
// is: one pass, eight bytes at a time.
func plainASCII(s string) bool {
	const hi, lo = 0x8080808080808080, 0x0101010101010101
	for len(s) >= 8 {
		w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		// a byte ≥ 0x80, or a zero byte (the classic haszero test)
		if w&hi != 0 || (w-lo)&^w&hi != 0 {
			return false
		}
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
