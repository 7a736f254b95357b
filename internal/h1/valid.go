package h1

import "net/http"

// validMethod reports whether m is empty (GET) or an HTTP token; header
// names are tokens too.
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !isTokenByte(m[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validHeader is net/http's check before it writes a request: every name
// a token, no value holding a control character but tab. A request that
// fails it goes to the fallback, which refuses it.
func validHeader(h http.Header) bool {
	for name, values := range h {
		if name == "" || !validMethod(name) {
			return false
		}
		for _, v := range values {
			for i := 0; i < len(v); i++ {
				if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
					return false
				}
			}
		}
	}
	return true
}
