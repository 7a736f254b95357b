package audit

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the event's JSON encoding to b: byte for byte what
// encoding/json produces for Event, without reflection: the Redis and log
// sinks encode with it. The fuzz test holds the two equal.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","type":`...)
	b = appendString(b, e.Type)
	b = appendField(b, `,"request_id":`, e.RequestID)
	b = appendField(b, `,"key_id":`, e.KeyID)
	b = appendField(b, `,"key_start":`, e.KeyStart)
	b = appendField(b, `,"user_id":`, e.UserID)
	b = appendField(b, `,"team_id":`, e.TeamID)
	b = appendField(b, `,"role":`, e.Role)
	b = appendField(b, `,"actor":`, e.Actor)
	b = appendField(b, `,"method":`, e.Method)
	b = appendField(b, `,"path":`, e.Path)
	if e.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(e.Status), 10)
	}
	if e.DurationMS != 0 && !math.IsNaN(e.DurationMS) && !math.IsInf(e.DurationMS, 0) {
		b = append(b, `,"duration_ms":`...)
		b = appendFloat(b, e.DurationMS)
	}
	b = appendField(b, `,"client_ip":`, e.ClientIP)
	b = appendField(b, `,"user_agent":`, e.UserAgent)
	b = appendField(b, `,"outcome":`, e.Outcome)
	return append(b, '}')
}

func appendField(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(append(b, key...), v)
}

// appendFloat formats like encoding/json (ES6 number conversion).
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping exactly as
// encoding/json does (HTML-safe, invalid UTF-8 as U+FFFD), so that no
// client-controlled path or user agent can break a line or a consumer.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
