package keystore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"unsafe"
)

const (
	base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// randomLen base62 characters carry 32*log2(62) ≈ 190.5 bits of entropy.
	randomLen   = 32
	checksumLen = 6 // 62^6 > 2^32, so any CRC32 fits
	startLen    = 4 // random characters kept in the display prefix
	idRandomLen = 20
	// IDPrefix starts every public key id.
	IDPrefix = "key_"
)

// ErrMalformed reports a string that is not a well-formed key of this format.
// It is returned before any I/O so junk never reaches a cache or store.
var ErrMalformed = errors.New("keystore: malformed key")

// Hash is SHA-256 of the full key: the only form in which a key is stored.
type Hash [sha256.Size]byte

// String renders the hash in hex; a hash is not a secret.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// HashKey hashes a full key.
func HashKey(key string) Hash { return sha256.Sum256(readOnlyBytes(key)) }

// readOnlyBytes views s as bytes without copying. Keys are longer than the
// compiler's 32-byte stack buffer, so []byte(key) would cost a heap
// allocation per request; sha256 and crc32 only read their input and keep
// no reference to it, which is the one use this view is for.
func readOnlyBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// base62Index maps a byte to its base62 digit value, or 0xff.
var base62Index = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = byte(i)
	}
	return t
}()

// Format generates and parses keys with one prefix. Build it once at start-up.
type Format struct {
	prefix string
	length int
}

// NewFormat checks the prefix: 1–16 characters of [A-Za-z0-9_], so the key
// stays a single token that secret scanners and shells handle alike.
func NewFormat(prefix string) (Format, error) {
	if prefix == "" || len(prefix) > 16 {
		return Format{}, fmt.Errorf("keystore: prefix must be 1-16 characters, got %d", len(prefix))
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if base62Index[c] == 0xff && c != '_' {
			return Format{}, fmt.Errorf("keystore: prefix %q may only hold letters, digits and '_'", prefix)
		}
	}
	return Format{prefix: prefix, length: len(prefix) + randomLen + checksumLen}, nil
}

// Prefix returns the configured key prefix.
func (f Format) Prefix() string { return f.prefix }

// Generate returns a new random key.
func (f Format) Generate() (string, error) {
	b := make([]byte, f.length)
	copy(b, f.prefix)
	if err := randomBase62(b[len(f.prefix) : len(f.prefix)+randomLen]); err != nil {
		return "", err
	}
	putChecksum(b[len(f.prefix)+randomLen:], crc32.ChecksumIEEE(b[:len(f.prefix)+randomLen]))
	return string(b), nil
}

// Parsed is a key that passed the format and checksum checks.
type Parsed struct {
	Hash  Hash
	Start string // display prefix: prefix plus the first random characters
}

// Parse checks format and checksum without I/O and hashes the key.
func (f Format) Parse(key string) (Parsed, error) {
	if !f.Valid(key) {
		return Parsed{}, ErrMalformed
	}
	return Parsed{Hash: HashKey(key), Start: key[:len(f.prefix)+startLen]}, nil
}

// Valid reports whether key has this format and a correct checksum.
func (f Format) Valid(key string) bool {
	if len(key) != f.length || key[:len(f.prefix)] != f.prefix {
		return false
	}
	body := key[len(f.prefix):]
	for i := 0; i < len(body); i++ {
		if base62Index[body[i]] == 0xff {
			return false
		}
	}
	var want [checksumLen]byte
	putChecksum(want[:], crc32.ChecksumIEEE(readOnlyBytes(key[:len(f.prefix)+randomLen])))
	return string(want[:]) == key[len(f.prefix)+randomLen:]
}

// Start returns the display prefix of a well-formed key.
func (f Format) Start(key string) string { return key[:len(f.prefix)+startLen] }

// DisplayStart returns a safe display prefix of any string presented as a key
// (for auth.failed events): at most the prefix plus four characters, and only
// when those are printable base62, so no secret-length fragment leaks.
func (f Format) DisplayStart(s string) string {
	n := len(f.prefix) + startLen
	if len(s) < f.length || s[:len(f.prefix)] != f.prefix {
		return ""
	}
	for i := len(f.prefix); i < n; i++ {
		if base62Index[s[i]] == 0xff {
			return ""
		}
	}
	return s[:n]
}

// NewID returns a public key id: "key_" and 20 base62 characters.
func NewID() (string, error) {
	b := make([]byte, len(IDPrefix)+idRandomLen)
	copy(b, IDPrefix)
	if err := randomBase62(b[len(IDPrefix):]); err != nil {
		return "", err
	}
	return string(b), nil
}

// ValidID reports whether s has the shape of a key id.
func ValidID(s string) bool {
	if len(s) != len(IDPrefix)+idRandomLen || s[:len(IDPrefix)] != IDPrefix {
		return false
	}
	for i := len(IDPrefix); i < len(s); i++ {
		if base62Index[s[i]] == 0xff {
			return false
		}
	}
	return true
}

// randomBase62 fills dst with uniform base62 characters by rejection sampling
// (bytes ≥ 248 are dropped so the modulo has no bias).
func randomBase62(dst []byte) error {
	var buf [64]byte
	i := 0
	for i < len(dst) {
		if _, err := rand.Read(buf[:]); err != nil {
			return fmt.Errorf("keystore: reading randomness: %w", err)
		}
		for _, c := range buf {
			if c >= 248 {
				continue
			}
			dst[i] = base62[c%62]
			i++
			if i == len(dst) {
				break
			}
		}
	}
	return nil
}

func putChecksum(dst []byte, sum uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base62[sum%62]
		sum /= 62
	}
}
