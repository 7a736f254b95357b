package audit

import (
	"math/rand/v2"
	"time"
)

// IDPrefix starts every event id.
const IDPrefix = "evt_"

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewEventID returns "evt_" and a ULID for t: 48 bits of Unix milliseconds
// then 80 random bits in Crockford base32, so ids sort by time to the
// millisecond and standard ULID tools decode them. The randomness only has
// to make ids unique, not secret, so the runtime's ChaCha8 source (no
// syscall, no lock) is enough.
func NewEventID(t time.Time) string {
	var b [len(IDPrefix) + 26]byte
	copy(b[:], IDPrefix)
	hi := uint64(t.UnixMilli())<<16 | rand.Uint64()>>48
	lo := rand.Uint64()
	for i := len(b) - 1; i >= len(IDPrefix); i-- {
		b[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(b[:])
}
