package proxy

import "github.com/wevion/keyproxy/audit"

// maxAuthorization bounds the Authorization value we look at; anything
// longer is refused unparsed (a key is well under 100 bytes).
const maxAuthorization = 1024

type tokenStatus int

const (
	tokenOK      tokenStatus = iota
	tokenMissing             // no credentials, another scheme or an empty token: 401 missing_api_key
	tokenInvalid             // credentials we refuse to interpret: 401 invalid_api_key
)

// bearerToken extracts the token of "Authorization: Bearer <token>" (RFC
// 6750 §2.1; the scheme is case-insensitive, separated by one or more
// spaces). Two Authorization lines are refused rather than guessed at, as
// is a value over maxAuthorization bytes or one holding more than one token.
func bearerToken(values []string) (string, tokenStatus) {
	token, st := bearerValue(values)
	if st == tokenOK && !plainToken(token) {
		return "", tokenInvalid
	}
	return token, st
}

// bearerValue is bearerToken without the scan of the token's bytes: a
// caller that finds the token to be a well-formed key (base62 only) needs
// no other proof that it holds no space or control character.
func bearerValue(values []string) (string, tokenStatus) {
	switch len(values) {
	case 0:
		return "", tokenMissing
	case 1:
	default:
		return "", tokenInvalid
	}
	v := values[0]
	if len(v) > maxAuthorization {
		return "", tokenInvalid
	}
	const scheme = "bearer"
	if len(v) < len(scheme) || !equalFoldASCII(v[:len(scheme)], scheme) {
		return "", tokenMissing
	}
	rest := v[len(scheme):]
	if rest != "" && rest[0] != ' ' {
		return "", tokenMissing // e.g. "Bearerx": another scheme
	}
	for rest != "" && rest[0] == ' ' {
		rest = rest[1:]
	}
	if rest == "" {
		return "", tokenMissing
	}
	return rest, tokenOK
}

// plainToken reports whether token holds no space or control character.
func plainToken(token string) bool {
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// equalFoldASCII compares s with lower, which is lower-case ASCII.
func equalFoldASCII(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// outcome is how a request ended; its index selects prepared metric
// children and the audit outcome.
type outcome uint8

const (
	outcomeAllowed outcome = iota
	outcomeRateLimited
	outcomeUpstreamError
	outcomeInactiveTeam
	outcomeMissingKey
	outcomeInvalidKey
	outcomeUnavailable
	outcomeThrottled
	outcomeMethodRefused
	outcomeBadBody
	numOutcomes
)

// Outcomes the audit package has no constant for yet.
const (
	OutcomeThrottled     = "auth_throttled"
	OutcomeMethodRefused = "method_not_allowed"
	OutcomeBadBody       = "invalid_request_body"
)

var outcomeNames = [numOutcomes]string{
	outcomeAllowed:       audit.OutcomeAllowed,
	outcomeRateLimited:   audit.OutcomeRateLimited,
	outcomeUpstreamError: audit.OutcomeUpstreamError,
	outcomeInactiveTeam:  audit.OutcomeInactiveTeam,
	outcomeMissingKey:    audit.OutcomeMissingKey,
	outcomeInvalidKey:    audit.OutcomeInvalidKey,
	outcomeUnavailable:   audit.OutcomeUnavailable,
	outcomeThrottled:     OutcomeThrottled,
	outcomeMethodRefused: OutcomeMethodRefused,
	outcomeBadBody:       OutcomeBadBody,
}

func (o outcome) String() string { return outcomeNames[o] }
