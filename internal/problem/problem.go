// Package problem writes RFC 9457 problem details, the one error shape of
// both the data plane and the admin API.
package problem

import (
	"net/http"
	"strconv"
	"unicode/utf8"
)

// TypeBase prefixes every problem type URI; the code completes it.
const TypeBase = "https://docs.wevion.com/keyproxy/errors#"

// Problem is one RFC 9457 problem. Code is the stable machine-readable
// identifier clients branch on; Detail never echoes a credential.
type Problem struct {
	Status    int
	Code      string
	Title     string
	Detail    string
	RequestID string
}

// Write sends p as application/problem+json. The body is built by hand
// because it is small, fixed in shape and on the data plane's hot path.
func Write(w http.ResponseWriter, p Problem) {
	h := w.Header()
	h["Content-Type"] = []string{"application/problem+json"}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(p.Status)
	_, _ = w.Write(p.AppendJSON(make([]byte, 0, 256)))
}

// AppendJSON appends the problem's JSON encoding to b.
func (p Problem) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, TypeBase+p.Code)
	b = append(b, `,"title":`...)
	b = appendString(b, p.Title)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(p.Status), 10)
	if p.Detail != "" {
		b = append(b, `,"detail":`...)
		b = appendString(b, p.Detail)
	}
	b = append(b, `,"code":`...)
	b = appendString(b, p.Code)
	if p.RequestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, p.RequestID)
	}
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Control characters and invalid
// UTF-8 are escaped so no input can break the document.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20 || r == utf8.RuneError || r == 0x2028 || r == 0x2029:
			if r == utf8.RuneError {
				r = 0xfffd
			}
			b = append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}
