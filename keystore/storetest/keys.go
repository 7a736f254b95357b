package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/wevion/keyproxy/keystore"
)

func testGetUnknown(t *testing.T, s keystore.Store) {
	_, err := s.GetKey(ctx(t), "key_00000000000000000000")
	wantErr(t, err, keystore.ErrNotFound, "GetKey unknown")
}

func testList(t *testing.T, s keystore.Store) {
	base := now().Add(-time.Hour)
	var made []keystore.Key
	for i, owner := range []string{"user_a", "user_b", "user_a", "user_b"} {
		nk := newKey(t, "team_a", owner, "owner")
		nk.CreatedAt = base.Add(time.Duration(i) * time.Minute)
		made = append(made, create(t, s, nk))
	}
	create(t, s, newKey(t, "team_other", "user_c", "owner"))
	if _, err := s.RevokeKey(ctx(t), made[1].ID, now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    keystore.KeyFilter
		want []string
	}{
		{"team, active only, newest first", keystore.KeyFilter{TeamID: "team_a"}, []string{made[3].ID, made[2].ID, made[0].ID}},
		{"with revoked", keystore.KeyFilter{TeamID: "team_a", IncludeRevoked: true}, []string{made[3].ID, made[2].ID, made[1].ID, made[0].ID}},
		{"one user", keystore.KeyFilter{TeamID: "team_a", UserID: "user_b"}, []string{made[3].ID}},
		{"one user with revoked", keystore.KeyFilter{TeamID: "team_a", UserID: "user_b", IncludeRevoked: true}, []string{made[3].ID, made[1].ID}},
		{"user of another team", keystore.KeyFilter{TeamID: "team_a", UserID: "user_c"}, []string{}},
		{"unknown team", keystore.KeyFilter{TeamID: "team_none"}, []string{}},
	}
	for _, tt := range tests {
		got, err := s.ListKeys(ctx(t), tt.f)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, ids(got), tt.want)
		}
	}
	all, _ := s.ListKeys(ctx(t), keystore.KeyFilter{TeamID: "team_a", IncludeRevoked: true})
	if all[2].RevokedAt == nil || all[0].RevokedAt != nil {
		t.Fatalf("listed RevokedAt wrong: %s / %s", fmtKey(all[2]), fmtKey(all[0]))
	}
	if _, err := s.ListKeys(ctx(t), keystore.KeyFilter{}); err == nil {
		t.Fatal("ListKeys without a team id succeeded")
	}
}

func testUpdate(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	name := "renamed"
	end := now().Add(24 * time.Hour)
	steps := []struct {
		name string
		u    keystore.KeyUpdate
		want func(*keystore.Key)
	}{
		{"rename", keystore.KeyUpdate{Name: &name}, func(k *keystore.Key) { k.Name = name }},
		{"set expiry", keystore.KeyUpdate{ExpiresAt: &end}, func(k *keystore.Key) { k.ExpiresAt = &end }},
		{"nothing", keystore.KeyUpdate{}, func(*keystore.Key) {}},
		{"clear expiry", keystore.KeyUpdate{ClearExpiry: true}, func(k *keystore.Key) { k.ExpiresAt = nil }},
	}
	want := k
	for _, st := range steps {
		got, err := s.UpdateKey(ctx(t), k.ID, st.u)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		st.want(&want)
		checkKey(t, got, want)
		checkKey(t, getKey(t, s, k.ID), want)
	}
}

func testUpdateUnknown(t *testing.T, s keystore.Store) {
	name := "x"
	for _, u := range []keystore.KeyUpdate{{Name: &name}, {ClearExpiry: true}, {}} {
		_, err := s.UpdateKey(ctx(t), "key_00000000000000000000", u)
		wantErr(t, err, keystore.ErrNotFound, "UpdateKey unknown")
	}
}

func testRevoke(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	first := now()
	got, err := s.RevokeKey(ctx(t), k.ID, first)
	if err != nil {
		t.Fatal(err)
	}
	if !sameTime(got.RevokedAt, &first) {
		t.Fatalf("RevokedAt = %v, want %v", got.RevokedAt, first)
	}
	again, err := s.RevokeKey(ctx(t), k.ID, first.Add(time.Hour))
	if err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if !sameTime(again.RevokedAt, &first) {
		t.Fatalf("second revoke moved RevokedAt to %v", again.RevokedAt)
	}
	id := resolve(t, s, k.Hash)
	if !id.Revoked || id.Check(time.Now()) != keystore.StatusInvalid {
		t.Fatalf("revoked key resolves to %+v", id)
	}
}

func testRevokeUnknown(t *testing.T, s keystore.Store) {
	_, err := s.RevokeKey(ctx(t), "key_00000000000000000000", now())
	wantErr(t, err, keystore.ErrNotFound, "RevokeKey unknown")
}

func testResolveUnknown(t *testing.T, s keystore.Store) {
	create(t, s, newKey(t, "team_a", "user_a", "owner"))
	_, err := s.Resolve(ctx(t), keystore.HashKey("wev_unknown"))
	wantErr(t, err, keystore.ErrNotFound, "Resolve unknown")
}

func testResolveExpiry(t *testing.T, s keystore.Store) {
	nk := newKey(t, "team_a", "user_a", "owner")
	end := now().Add(time.Hour)
	nk.ExpiresAt = &end
	create(t, s, nk)
	id := resolve(t, s, nk.Hash)
	if !id.ExpiresAt.Equal(end) {
		t.Fatalf("ExpiresAt = %v, want %v", id.ExpiresAt, end)
	}
	if id.Check(end.Add(-time.Second)) != keystore.StatusValid || id.Check(end) != keystore.StatusInvalid {
		t.Fatal("expiry not decided at ExpiresAt")
	}
	if _, err := s.UpdateKey(ctx(t), nk.ID, keystore.KeyUpdate{ClearExpiry: true}); err != nil {
		t.Fatal(err)
	}
	if id := resolve(t, s, nk.Hash); !id.ExpiresAt.IsZero() {
		t.Fatalf("cleared expiry resolves to %v", id.ExpiresAt)
	}
}

func testTouch(t *testing.T, s keystore.Store) {
	a := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	b := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	t1 := now()
	t2 := t1.Add(time.Minute)
	steps := []struct {
		used         map[string]time.Time
		wantA, wantB *time.Time
	}{
		{map[string]time.Time{}, nil, nil},
		{map[string]time.Time{a.ID: t2, "key_00000000000000000000": t2}, &t2, nil},
		{map[string]time.Time{a.ID: t1, b.ID: t1}, &t2, &t1},
		{map[string]time.Time{b.ID: t2}, &t2, &t2},
	}
	for i, st := range steps {
		if err := s.TouchKeys(ctx(t), st.used); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := getKey(t, s, a.ID).LastUsedAt; !sameTime(got, st.wantA) {
			t.Fatalf("step %d: a.LastUsedAt = %v, want %v", i, got, st.wantA)
		}
		if got := getKey(t, s, b.ID).LastUsedAt; !sameTime(got, st.wantB) {
			t.Fatalf("step %d: b.LastUsedAt = %v, want %v", i, got, st.wantB)
		}
	}
}

func testCount(t *testing.T, s keystore.Store) {
	count := func() int64 {
		n, err := s.CountActiveKeys(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("empty store counts %d", n)
	}
	a := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	b := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	create(t, s, newKey(t, "team_b", "user_b", "owner"))
	if n := count(); n != 3 {
		t.Fatalf("counts %d, want 3", n)
	}
	if _, err := s.RevokeKey(ctx(t), a.ID, now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateKey(ctx(t), b.ID, keystore.KeyUpdate{ExpiresAt: timePtr(now().Add(-time.Minute))}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("counts %d after a revoke and an expiry, want 1", n)
	}
}

func testPing(t *testing.T, s keystore.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

func testClose(t *testing.T, s keystore.Store) {
	k := create(t, s, newKey(t, "team_a", "user_a", "owner"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Resolve(ctx(t), k.Hash)
	wantErr(t, err, keystore.ErrUnavailable, "Resolve after Close")
	_, err = s.CreateKey(ctx(t), newKey(t, "team_a", "user_a", "owner"))
	wantErr(t, err, keystore.ErrUnavailable, "CreateKey after Close")
	wantErr(t, s.Ping(ctx(t)), keystore.ErrUnavailable, "Ping after Close")
}
