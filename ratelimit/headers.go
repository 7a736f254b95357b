package ratelimit

import (
	"net/http"
	"strconv"
	"time"
	"unsafe"
)

// Canonical header keys, so WriteHeaders can assign to the map directly.
const (
	headerPolicy     = "Ratelimit-Policy"
	headerRateLimit  = "Ratelimit"
	headerLimit      = "Ratelimit-Limit"
	headerRemaining  = "Ratelimit-Remaining"
	headerReset      = "Ratelimit-Reset"
	headerRetryAfter = "Retry-After"
)

// policyName is the name both structured fields give the policy: the
// budget belongs to the user, whichever key they call with.
const policyName = `"user"`

// WriteHeaders sets the rate-limit headers of both IETF httpapi draft
// generations on h, and Retry-After when the request was refused:
//
//	RateLimit-Policy: "user";q=<Requests>;w=<Per in seconds>
//	RateLimit: "user";r=<Remaining>;t=<ResetAfter in seconds, rounded up>
//	RateLimit-Limit: <Burst>
//	RateLimit-Remaining: <Remaining>
//	RateLimit-Reset: <ResetAfter in seconds, rounded up>
//	Retry-After: <RetryAfter in seconds, rounded up, at least 1>  (refused only)
//
// The policy field states the sustained rate. The older fields describe
// the bucket itself: RateLimit-Limit is its size (Burst), so that
// Limit - Remaining is what the client has used and Reset is when
// Remaining is back at Limit. Stating Requests there instead would make
// a fresh client look as if it had spent Requests - Burst already.
//
// It allocates once (the values' memory): the policy values are prepared
// once per policy.
func WriteHeaders(h http.Header, r Result) { new(HeaderValues).Write(h, r) }

// HeaderValues holds the values of the headers WriteHeaders sets that
// change with every result, and their bytes. A caller that keeps one in
// its per-request state saves the allocation: Write allocates only for
// values too long for its buffer (ten million requests or seconds).
type HeaderValues struct {
	vals [4]string
	// buf holds r=, t= and Retry-After of up to 7 digits each; longer
	// values take an allocation.
	buf [48]byte
}

// Write sets the headers WriteHeaders sets, their values held in v; v must
// not be reused while h is in use.
func (v *HeaderValues) Write(h http.Header, r Result) {
	pol := r.pol
	if pol == nil || pol.limit != r.Limit {
		pol = &policy{policyHeader: []string{policyHeaderValue(r.Limit)}, limitHeader: []string{strconv.Itoa(r.Limit.Burst)}}
	}
	h[headerPolicy] = pol.policyHeader
	h[headerLimit] = pol.limitHeader

	remaining := max(r.Remaining, 0)
	if !r.Allowed {
		remaining = 0
	}
	reset := ceilSeconds(r.ResetAfter)

	// One string holds every changing value, and the header values are
	// slices of it. Its bytes are v.buf's (or, past its end, a new
	// array's) and are not written again.
	b := append(v.buf[:0], policyName...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	endRateLimit := len(b)
	b = strconv.AppendInt(b, int64(remaining), 10)
	endRemaining := len(b)
	b = strconv.AppendInt(b, reset, 10)
	endReset := len(b)
	if !r.Allowed {
		b = strconv.AppendInt(b, max(ceilSeconds(r.RetryAfter), 1), 10)
	}
	s := unsafe.String(unsafe.SliceData(b), len(b))

	vals := v.vals[:]
	vals[0] = s[:endRateLimit]
	vals[1] = s[endRateLimit:endRemaining]
	vals[2] = s[endRemaining:endReset]
	h[headerRateLimit] = vals[0:1:1]
	h[headerRemaining] = vals[1:2:2]
	h[headerReset] = vals[2:3:3]
	if !r.Allowed {
		vals[3] = s[endReset:]
		h[headerRetryAfter] = vals[3:4:4]
	}
}

func policyHeaderValue(l Limit) string {
	return policyName + ";q=" + strconv.Itoa(l.Requests) + ";w=" + strconv.FormatInt(ceilSeconds(l.Per), 10)
}

// ceilSeconds rounds up: a client told to wait 1 s when 1.2 s are needed
// would be refused again.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
