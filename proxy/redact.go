package proxy

import "strings"

// redactMin is the length of base62 run after the key prefix from which a
// string is treated as (part of) a key: longer than a display start
// (prefix + 4), far shorter than a key.
const redactMin = 8

const redacted = "[redacted]"

// redactKeys replaces every run of the key prefix followed by redactMin or
// more base62 characters in s, so a key a client put in its path or user
// agent reaches neither the access log nor the audit trail. s without the
// prefix is returned as is, without allocating.
func redactKeys(s, prefix string) string {
	i := strings.Index(s, prefix)
	if i < 0 {
		return s
	}
	var b strings.Builder
	for i >= 0 {
		j := i + len(prefix)
		for j < len(s) && isBase62(s[j]) {
			j++
		}
		if j-i-len(prefix) >= redactMin {
			b.WriteString(s[:i])
			b.WriteString(redacted)
		} else {
			// Too short to be a key; the next prefix may start inside it.
			j = i + len(prefix)
			b.WriteString(s[:j])
		}
		s = s[j:]
		i = strings.Index(s, prefix)
	}
	b.WriteString(s)
	return b.String()
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
