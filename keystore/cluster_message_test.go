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
	msg := keystore.EncodeEvict(id, "r-1", hashes)
	if !strings.Contains(msg, `"from":"r-1"`) || !strings.Contains(msg, hashes[0].String()) {
		t.Fatalf("message %s does not carry the documented fields", msg)
	}
	gotID, from, got, err := keystore.DecodeEvict(msg)
	if err != nil || gotID != id || from != "r-1" || !slices.Equal(got, hashes) {
		t.Fatalf("round trip = %q %q %v %v", gotID, from, got, err)
	}
	h := hashes[0].String()
	for _, bad := range []string{
		``,
		`{}`,
		`{"id":"short","from":"r-1","hashes":[]}`,
		`{"id":"` + id + `","from":"a b","hashes":[]}`,
		`{"id":"` + id + `","from":"r-1","hashes":["zz"]}`,
		`{"id":"` + id + `","from":"r-1","hashes":["` + h[:63] + `g"]}`,
		`{"id":"` + id + `","from":"r-1","hashes":["` + h + `0"]}`,
	} {
		if _, _, _, err := keystore.DecodeEvict(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzDecodeEvict(f *testing.F) {
	f.Add(keystore.EncodeEvict("0123456789abcdef0123456789abcdef", "r-1", []keystore.Hash{keystore.HashKey("a")}))
	f.Add(`{"id":"0123456789abcdef0123456789abcdef","from":"r-1","hashes":[]}`)
	f.Add(`{"id":1}`)
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, payload string) {
		id, from, hashes, err := keystore.DecodeEvict(payload)
		if err != nil {
			return
		}
		if !keystore.ValidReplicaID(from) {
			t.Fatalf("accepted sender %q", from)
		}
		id2, from2, hashes2, err := keystore.DecodeEvict(keystore.EncodeEvict(id, from, hashes))
		if err != nil || id2 != id || from2 != from || !slices.Equal(hashes2, hashes) {
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
