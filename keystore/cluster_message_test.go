package keystore_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/wevion/keyproxy/keystore"
)

func TestEvictMessage_RoundTripAndRefusals(t *testing.T) {
	hashes := []keystore.Hash{keystore.HashKey("a"), keystore.HashKey("b")}
	const id = "0123456789abcdef0123456789abcdef"
	msg := keystore.EncodeEvict(keystore.Eviction{ID: id, From: "r-1", Hashes: hashes})
	if !strings.Contains(msg, `"from":"r-1"`) || !strings.Contains(msg, hashes[0].String()) || strings.Contains(msg, "redis_stale") {
		t.Fatalf("message %s does not carry the documented fields (and redis_stale only when set)", msg)
	}
	got, err := keystore.DecodeEvict(msg)
	if err != nil || got.ID != id || got.From != "r-1" || !slices.Equal(got.Hashes, hashes) || got.RedisStale {
		t.Fatalf("round trip = %+v %v", got, err)
	}
	stale := keystore.EncodeEvict(keystore.Eviction{ID: id, From: "r-1", Hashes: hashes, RedisStale: true})
	if got, err := keystore.DecodeEvict(stale); err != nil || !strings.Contains(stale, `"redis_stale":true`) || !got.RedisStale {
		t.Fatalf("%s decoded as %+v %v, want redis_stale carried", stale, got, err)
	}
	// A message from a version that knows no redis_stale still decodes,
	// and one with a field this version does not know as well.
	h := hashes[0].String()
	for _, old := range []string{
		`{"id":"` + id + `","from":"r-1","hashes":["` + h + `"]}`,
		`{"id":"` + id + `","from":"r-1","hashes":["` + h + `"],"later":1}`,
	} {
		if got, err := keystore.DecodeEvict(old); err != nil || got.RedisStale || len(got.Hashes) != 1 {
			t.Errorf("%s decoded as %+v %v", old, got, err)
		}
	}
	for _, bad := range []string{
		``,
		`{}`,
		`{"id":"short","from":"r-1","hashes":[]}`,
		`{"id":"` + id + `","from":"a b","hashes":[]}`,
		`{"id":"` + id + `","from":"r-1","hashes":["zz"]}`,
		`{"id":"` + id + `","from":"r-1","hashes":["` + h[:63] + `g"]}`,
		`{"id":"` + id + `","from":"r-1","hashes":["` + h + `0"]}`,
	} {
		if _, err := keystore.DecodeEvict(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzDecodeEvict(f *testing.F) {
	f.Add(keystore.EncodeEvict(keystore.Eviction{ID: "0123456789abcdef0123456789abcdef", From: "r-1", Hashes: []keystore.Hash{keystore.HashKey("a")}, RedisStale: true}))
	f.Add(`{"id":"0123456789abcdef0123456789abcdef","from":"r-1","hashes":[]}`)
	f.Add(`{"id":1}`)
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, payload string) {
		e, err := keystore.DecodeEvict(payload)
		if err != nil {
			return
		}
		if !keystore.ValidReplicaID(e.From) {
			t.Fatalf("accepted sender %q", e.From)
		}
		e2, err := keystore.DecodeEvict(keystore.EncodeEvict(e))
		if err != nil || e2.ID != e.ID || e2.From != e.From || !slices.Equal(e2.Hashes, e.Hashes) || e2.RedisStale != e.RedisStale {
			t.Fatalf("round trip changed the message: %v", err)
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Add(keystore.EncodeAck("0123456789abcdef0123456789abcdef", "r-2"))
	f.Add(`{"id":"","replica":""}`)
	f.Fuzz(func(t *testing.T, payload string) {
		id, replica, err := keystore.DecodeAck(payload)
		if err != nil {
			return
		}
		id2, replica2, err := keystore.DecodeAck(keystore.EncodeAck(id, replica))
		if err != nil || id2 != id || replica2 != replica {
			t.Fatalf("round trip changed the ack: %v", err)
		}
	})
}
