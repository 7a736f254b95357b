package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCluster_RevocationHoldsWhileRedisIsFull: out of memory under
// noeviction (the policy keyproxy asks for), Redis refuses the tombstones
// of a revocation but still carries the eviction and the acks, and still
// holds the key's identity. DELETE reports both replicas, and both refuse
// the key at once; valid keys, old and new, keep working on the local
// limiter.
func TestCluster_RevocationHoldsWhileRedisIsFull(t *testing.T) {
	a, b, rs, _ := twoReplicas(t)
	key, id := createKey(t, a, "usr_full", "team_full")
	other, _ := createKey(t, a, "usr_full2", "team_full")
	for _, in := range []*instance{a, b} {
		if got := status(t, in, key); got != http.StatusOK {
			t.Fatalf("before Redis filled up: %d", got)
		}
	}
	readyz := func(in *instance) string {
		_, body := do(t, mustRequest(t, http.MethodGet, in.adminURL+"/readyz"))
		return string(body)
	}
	rs.Fill(t, true)
	// PING still answers; the heartbeat's refused write is what tells.
	waitFor(t, 5*time.Second, "/readyz names Redis degraded, refusing writes", func() bool {
		return strings.Contains(readyz(b), `{"name":"redis","status":"degraded","reason":"refused"}`)
	})
	resp, body := a.admin(t, http.MethodDelete, "/admin/v1/keys/"+id, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke with Redis full: %d %s", resp.StatusCode, body)
	}
	if acks := resp.Header.Get("Keyproxy-Revocation-Acks"); acks != "2/2" {
		t.Fatalf("Keyproxy-Revocation-Acks = %q with Redis full, want 2/2: evictions and acks are PUBLISHes, which it takes", acks)
	}
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if got := status(t, in, key); got != http.StatusUnauthorized {
			t.Errorf("%s admitted the key revoked while Redis is full: %d", name, got)
		}
		if got := status(t, in, other); got != http.StatusOK {
			t.Errorf("%s refused a valid key while Redis is full: %d", name, got)
		}
	}
	// Made while Redis is full: the store has it, and B resolves it there.
	fresh, _ := createKey(t, a, "usr_full3", "team_full")
	if got := status(t, b, fresh); got != http.StatusOK {
		t.Errorf("B refused a key made on A while Redis is full: %d", got)
	}
	rs.Fill(t, false)
	waitFor(t, 5*time.Second, "/readyz ok once Redis takes writes", func() bool {
		return strings.HasPrefix(readyz(b), `{"status":"ok"`)
	})
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if got := status(t, in, key); got != http.StatusUnauthorized {
			t.Errorf("%s admitted the revoked key once Redis took writes again: %d", name, got)
		}
	}
}
