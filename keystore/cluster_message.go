package keystore

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// maxEvictHashes bounds one eviction message. A team has at most a few
// dozen unrevoked keys, so anything near this is not a real message.
const maxEvictHashes = 10000

// evictMessage is published on the eviction channel:
// {"id":"<msg id>","from":"<replica>","hashes":["<sha256 hex>",…]}, with
// "redis_stale":true when the sender could not tombstone the hashes' Redis
// entries (replicas of earlier versions ignore the field).
type evictMessage struct {
	ID         string   `json:"id"`
	From       string   `json:"from"`
	Hashes     []string `json:"hashes"`
	RedisStale bool     `json:"redis_stale,omitempty"`
}

// eviction is an eviction message, decoded.
type eviction struct {
	ID, From string
	Hashes   []Hash
	// RedisStale: Redis refused or missed the tombstones, so it may still
	// hold the identities the eviction is about.
	RedisStale bool
}

// ackMessage is published on the evicter's ack channel by each replica
// that has dropped the hashes: {"id":"<msg id>","replica":"<replica>"}.
type ackMessage struct {
	ID      string `json:"id"`
	Replica string `json:"replica"`
}

func encodeEvict(e eviction) string {
	m := evictMessage{ID: e.ID, From: e.From, Hashes: make([]string, len(e.Hashes)), RedisStale: e.RedisStale}
	for i, h := range e.Hashes {
		m.Hashes[i] = h.String()
	}
	b, _ := json.Marshal(m) // strings only: cannot fail
	return string(b)
}

// decodeEvict parses an eviction message. Anyone who can publish on Redis
// can reach it, so every field is checked before it names a channel or a
// cache entry.
func decodeEvict(payload string) (eviction, error) {
	var m evictMessage
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		return eviction{}, fmt.Errorf("keystore: eviction message: %w", err)
	}
	if !validMessageID(m.ID) || !ValidReplicaID(m.From) {
		return eviction{}, errors.New("keystore: eviction message: bad id or sender")
	}
	if len(m.Hashes) > maxEvictHashes {
		return eviction{}, fmt.Errorf("keystore: eviction message: %d hashes", len(m.Hashes))
	}
	hashes := make([]Hash, len(m.Hashes))
	for i, s := range m.Hashes {
		if len(s) != 2*len(Hash{}) {
			return eviction{}, errors.New("keystore: eviction message: bad hash")
		}
		if _, err := hex.Decode(hashes[i][:], []byte(s)); err != nil {
			return eviction{}, errors.New("keystore: eviction message: bad hash")
		}
	}
	return eviction{ID: m.ID, From: m.From, Hashes: hashes, RedisStale: m.RedisStale}, nil
}

func encodeAck(id, replica string) string {
	b, _ := json.Marshal(ackMessage{ID: id, Replica: replica})
	return string(b)
}

func decodeAck(payload string) (id, replica string, err error) {
	var m ackMessage
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		return "", "", fmt.Errorf("keystore: ack message: %w", err)
	}
	if !validMessageID(m.ID) || !ValidReplicaID(m.Replica) {
		return "", "", errors.New("keystore: ack message: bad id or replica")
	}
	return m.ID, m.Replica, nil
}

// newMessageID returns 128 random bits in hex: unique across replicas
// without coordination.
func newMessageID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("keystore: reading randomness: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func validMessageID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// ValidReplicaID reports whether s can name a replica: 1-64 characters of
// [A-Za-z0-9_.:-], since it becomes part of a Redis channel name and
// appears in logs.
func ValidReplicaID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// newReplicaID returns "r-" and 12 random hex characters.
func newReplicaID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("keystore: reading randomness: %w", err)
	}
	return "r-" + hex.EncodeToString(b[:]), nil
}
