package main

import (
	"fmt"
	"math"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var durationType = reflect.TypeOf(time.Duration(0))

// durationNeedsUnit refuses a bare number for a duration. Viper's weak
// decoding would read `retention: 2160` as 2160 ns, and a retention of
// nanoseconds purges the whole audit trail at the next start. The
// environment's strings are parsed by time.ParseDuration, which refuses
// them the same way. 0 needs no unit: it is 0 in any unit.
func durationNeedsUnit(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if reflect.ValueOf(data).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("%v needs a unit (ns, us, ms, s, m, h), e.g. %vs", data, data)
	case reflect.String:
		// The environment's values are strings: KEYPROXY_AUDIT_RETENTION=2160
		// gets the same answer as the file's retention: 2160.
		s := strings.TrimSpace(data.(string))
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			if f == 0 {
				return time.Duration(0), nil
			}
			return nil, fmt.Errorf("%s needs a unit (ns, us, ms, s, m, h), e.g. %ss", s, s)
		}
		// mapstructure's own message leaves the value out ("time: invalid
		// duration"); a duration is no secret, and the operator needs to
		// see which spelling was refused.
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration: write a number and a unit (ns, us, ms, s, m, h), e.g. 10s or 1m30s", s)
		}
		return d, nil
	}
	return data, nil
}

// wholeNumber refuses a fraction for an integer key (weak decoding would
// truncate max_active_per_team: 10.5 to 10 without a word).
func wholeNumber(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.Float32 && from.Kind() != reflect.Float64 {
		return data, nil
	}
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f := reflect.ValueOf(data).Float(); f != math.Trunc(f) {
			return nil, fmt.Errorf("%v is not a whole number", data)
		}
	}
	return data, nil
}

// commaList splits an environment value such as "tokA, tokB" into its
// items, trimmed of the spaces people put after commas.
func commaList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	s := data.(string)
	if s == "" {
		return []string{}, nil
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items, nil
}

var (
	invalidKeysRe = regexp.MustCompile(`^'([^']*)' has invalid keys: (.*)$`)
	quotedKeyRe   = regexp.MustCompile(`^'([^']+)' (.*)$`)
)

// decodeProblems rewrites mapstructure's "'parent' has invalid keys: a, b"
// (with ” for the top level) as one "parent.a: unknown key" per key, and
// "'key' message" as "key: message", so every problem starts with its key
// like Validate's.
func decodeProblems(line string) []string {
	m := invalidKeysRe.FindStringSubmatch(line)
	if m == nil {
		if q := quotedKeyRe.FindStringSubmatch(line); q != nil {
			return []string{q[1] + ": " + q[2]}
		}
		return []string{line}
	}
	var out []string
	for _, k := range strings.Split(m[2], ", ") {
		if m[1] != "" {
			k = m[1] + "." + k
		}
		out = append(out, k+": unknown key")
	}
	return out
}

// checkAddr reports what is wrong with a host:port listen or dial address,
// or "" when nothing is.
func checkAddr(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("must be host:port, got %q", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Sprintf("port must be a number from 0 to 65535, got %q", addr)
	}
	return ""
}

// flattenDecodeError turns mapstructure's multi-line error into one
// problem per key.
func flattenDecodeError(err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(line, "* ")
		if line == "" || strings.HasSuffix(line, "error(s) decoding:") || strings.HasPrefix(line, "decoding failed due to the following error(s):") {
			continue
		}
		out = append(out, decodeProblems(line)...)
	}
	if len(out) == 0 {
		out = []string{err.Error()}
	}
	return out
}

// boolToWord decodes a YAML boolean into a string field as "true" or
// "false" (viper's weak decoding would make it "1" or "0"): log.access
// takes a word, and an old file's access: true must keep working.
func boolToWord(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.Bool && to.Kind() == reflect.String {
		return strconv.FormatBool(data.(bool)), nil
	}
	return data, nil
}
