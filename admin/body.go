package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// readBody returns the request body, bounded by MaxBytesReader in ServeHTTP.
// A missing Content-Type is taken as JSON (curl and scripts often omit it);
// any other media type than JSON is refused with 415.
func readBody(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
			return nil, errMediaType
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, bodyTooLarge(r, mbe.Limit)
		}
		return nil, badRequest("The request body could not be read.")
	}
	return body, nil
}

// object is the members of a JSON request body, by exact name.
type object map[string]json.RawMessage

// parseObject accepts exactly one JSON object whose members are all named in
// fields, each at most once, with nothing after it. It is stricter than
// json.Decoder.DisallowUnknownFields, which matches names case-insensitively
// and lets a duplicate silently override the first value.
func parseObject(body []byte, fields ...string) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, badRequest("The request body is empty; a JSON object is required.")
		}
		return nil, syntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, badRequest("The request body must be a JSON object.")
	}
	obj := make(object, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxError(err)
		}
		name, _ := tok.(string) // inside an object the decoder yields names or an error
		if !slices.Contains(fields, name) {
			return nil, badInput("Unknown field "+echoAt+"; allowed: "+strings.Join(fields, ", ")+".", name)
		}
		if _, dup := obj[name]; dup {
			return nil, badRequest(fmt.Sprintf("Field %q appears more than once.", name))
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxError(err)
		}
		obj[name] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, syntaxError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("The request body has data after the JSON object.")
	}
	return obj, nil
}

func syntaxError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return badRequest(fmt.Sprintf("The request body is not valid JSON (at byte %d).", se.Offset))
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return badRequest("The request body ends inside the JSON object.")
	}
	return badRequest("The request body is not valid JSON.")
}

// quoteShort quotes an untrusted name for a detail, cut so a client cannot
// make us echo a large input.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q…", strings.ToValidUTF8(s[:max], ""))
	}
	return fmt.Sprintf("%q", s)
}

func (o object) isNull(name string) bool { return string(o[name]) == "null" }

// str returns a member that must be a string when present. present is
// false when the member is absent or null.
func (o object) str(name string) (s string, present bool, err error) {
	raw, ok := o[name]
	if !ok || o.isNull(name) {
		return "", false, nil
	}
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false, badRequest(fmt.Sprintf("Field %q must be a string.", name))
	}
	return s, true, nil
}

func (o object) requiredStr(name string) (string, error) {
	s, present, err := o.str(name)
	if err == nil && !present {
		err = badRequest(fmt.Sprintf("Field %q is required.", name))
	}
	return s, err
}

func (o object) requiredBool(name string) (bool, error) {
	switch string(o[name]) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "", "null":
		return false, badRequest(fmt.Sprintf("Field %q is required.", name))
	}
	return false, badRequest(fmt.Sprintf("Field %q must be true or false.", name))
}

// expiry returns a member that must be an RFC 3339 time before 2200 when present and not
// null; present is false only when the member is absent.
func (o object) expiry(name string) (t *time.Time, present bool, err error) {
	if _, ok := o[name]; !ok {
		return nil, false, nil
	}
	s, notNull, err := o.str(name)
	if err != nil || !notNull {
		return nil, true, err
	}
	v, perr := time.Parse(time.RFC3339, s)
	if len(s) > 64 || perr != nil {
		return nil, true, badRequest(fmt.Sprintf("Field %q must be an RFC 3339 time such as 2030-01-02T15:04:05Z.", name))
	}
	if v.Unix() >= maxExpiryUnix {
		return nil, true, badRequest(fmt.Sprintf("Field %q must be before 2200-01-01; omit it for no end.", name))
	}
	v = v.UTC()
	return &v, true, nil
}
