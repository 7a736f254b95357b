package main

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/keystore"
)

// fakeClock is a settable clock for the collector's cache age.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func openTestStore(t *testing.T) *keystore.SQLite {
	t.Helper()
	s, err := keystore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "kp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func createTestKey(t *testing.T, s *keystore.SQLite, team string, expires *time.Time) keystore.Key {
	t.Helper()
	f, err := keystore.NewFormat("wev_")
	if err != nil {
		t.Fatal(err)
	}
	key, err := f.Generate()
	if err != nil {
		t.Fatal(err)
	}
	id, err := keystore.NewID()
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(context.Background(), keystore.NewKey{
		ID: id, Hash: keystore.HashKey(key), Start: f.Start(key), Name: "k",
		UserID: "usr_" + team, TeamID: team, Role: "owner", ExpiresAt: expires, MaxActivePerTeam: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const storeMetricsHelp = `
# HELP keyproxy_keys_active Unrevoked, unexpired API keys in the store (at most 15 s old); absent while the store cannot be counted.
# TYPE keyproxy_keys_active gauge
# HELP keyproxy_store_up 1 if the store of record answered its last check (at most 15 s old), else 0.
# TYPE keyproxy_store_up gauge
`

func TestStoreCollector_CountsActiveKeysAndCachesBetweenScrapes(t *testing.T) {
	s := openTestStore(t)
	past := time.Now().Add(-time.Hour)
	createTestKey(t, s, "team_a", nil)
	createTestKey(t, s, "team_a", nil)
	createTestKey(t, s, "team_b", &past) // expired: not active
	revoked := createTestKey(t, s, "team_b", nil)
	if _, err := s.RevokeKey(context.Background(), revoked.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	c := newStoreCollector(s, nil)
	c.now = clock.Now

	expect := func(active string) string {
		return storeMetricsHelp + "keyproxy_keys_active " + active + "\nkeyproxy_store_up 1\n"
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(expect("2"))); err != nil {
		t.Fatal(err)
	}
	// A new key within the cache age is not counted yet: a scrape does
	// not reach the store more than once per interval.
	createTestKey(t, s, "team_c", nil)
	clock.Advance(storeStatsMaxAge - time.Second)
	if err := testutil.CollectAndCompare(c, strings.NewReader(expect("2"))); err != nil {
		t.Errorf("within the cache age: %v", err)
	}
	clock.Advance(time.Second)
	if err := testutil.CollectAndCompare(c, strings.NewReader(expect("3"))); err != nil {
		t.Errorf("after the cache age: %v", err)
	}
}

func TestStoreCollector_StoreDownIsZeroAndLeavesKeysActiveOut(t *testing.T) {
	s := openTestStore(t)
	createTestKey(t, s, "team_a", nil)
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	c := newStoreCollector(s, nil)
	c.now = clock.Now
	if err := testutil.CollectAndCompare(c, strings.NewReader(storeMetricsHelp+"keyproxy_keys_active 1\nkeyproxy_store_up 1\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(storeStatsMaxAge)
	// A stale count would hide the outage: it is left out instead.
	if err := testutil.CollectAndCompare(c, strings.NewReader(storeMetricsHelp+"keyproxy_store_up 0\n")); err != nil {
		t.Error(err)
	}
}

func TestStoreCollector_LintsClean(t *testing.T) {
	c := newStoreCollector(openTestStore(t), nil)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("pedantic registry refuses the collector: %v", err)
	}
}

func TestBuildInfo_IsOneWithVersionLabels(t *testing.T) {
	ver, rev := buildVersion()
	want := `
# HELP keyproxy_build_info Build information; always 1.
# TYPE keyproxy_build_info gauge
keyproxy_build_info{revision="` + rev + `",version="` + ver + `"} 1
`
	if err := testutil.CollectAndCompare(buildInfo(), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestReloadMetrics_RefusedReloadIsZeroAndKeepsTheLastSuccessTime(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	start := time.Unix(1_800_000_000, 0)
	m, err := newReloadMetrics(reg, start)
	if err != nil {
		t.Fatal(err)
	}
	const help = `
# HELP keyproxy_config_last_reload_success_timestamp_seconds Unix time of the last configuration load (start or SIGHUP) applied whole.
# TYPE keyproxy_config_last_reload_success_timestamp_seconds gauge
# HELP keyproxy_config_last_reload_successful 1 if the last configuration load (start or SIGHUP) was applied whole, 0 if it was refused or applied in part.
# TYPE keyproxy_config_last_reload_successful gauge
`
	steps := []struct {
		name    string
		apply   func()
		ok, end string
	}{
		{"at start", func() {}, "1", "1.8e+09"},
		{"refused SIGHUP", func() { m.record(false, start.Add(time.Minute)) }, "0", "1.8e+09"},
		{"good SIGHUP", func() { m.record(true, start.Add(2*time.Minute)) }, "1", "1.80000012e+09"},
	}
	for _, s := range steps {
		s.apply()
		want := help + "keyproxy_config_last_reload_success_timestamp_seconds " + s.end + "\nkeyproxy_config_last_reload_successful " + s.ok + "\n"
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
	if _, err := newReloadMetrics(reg, start); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
}

// TestReload_SaysSoWhateverTheNewLevel: the reload line is written at the
// more verbose of the old and new levels, and the new level holds after.
func TestReload_SaysSoWhateverTheNewLevel(t *testing.T) {
	for _, tt := range []struct{ from, to zapcore.Level }{
		{zapcore.InfoLevel, zapcore.WarnLevel},
		{zapcore.InfoLevel, zapcore.ErrorLevel},
		{zapcore.WarnLevel, zapcore.DebugLevel},
		{zapcore.InfoLevel, zapcore.InfoLevel},
	} {
		t.Run(tt.from.String()+" to "+tt.to.String(), func(t *testing.T) {
			m, err := newReloadMetrics(prometheus.NewRegistry(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			level := zap.NewAtomicLevelAt(tt.from)
			core, logs := observer.New(level)
			a := &app{reloads: m}
			next := &Config{}
			next.Log.Level = tt.to.String()
			a.reload(next, level, zap.New(core))
			if n := logs.FilterMessage("configuration reloaded").Len(); n != 1 {
				t.Errorf("%d reload lines, want 1", n)
			}
			if level.Level() != tt.to {
				t.Errorf("level %s after the reload, want %s", level.Level(), tt.to)
			}
		})
	}
}

// TestRedisLog_GoesThroughTheProcessLogger: go-redis's messages become
// warn entries of the process logger (so JSON lines in a JSON log), not
// plain text on stderr.
func TestRedisLog_GoesThroughTheProcessLogger(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	(&redisLog{log: zap.New(core)}).Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "connection refused")
	entries := logs.FilterMessage("redis client").All()
	if len(entries) != 1 || entries[0].Level != zapcore.WarnLevel {
		t.Fatalf("entries %v, want one warn entry", entries)
	}
	if got, want := entries[0].ContextMap()["detail"], "redis: connection pool: failed to dial after 5 attempts: connection refused"; got != want {
		t.Errorf("detail %q, want %q", got, want)
	}
}

// TestRedisLog_OneLineEvery30s: while Redis is away go-redis reports a
// failed dial about every second; the log gets one line every 30 s, saying
// how many it left out.
func TestRedisLog_OneLineEvery30s(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	now := time.Unix(1_800_000_000, 0)
	l := &redisLog{log: zap.New(core), now: func() time.Time { return now }}
	for range 30 { // one a second: the first is logged
		l.Printf(context.Background(), "dial %s", "refused")
		now = now.Add(time.Second)
	}
	l.Printf(context.Background(), "dial %s", "refused again")
	entries := logs.FilterMessage("redis client").All()
	if len(entries) != 2 {
		t.Fatalf("%d lines for 31 messages over 30 s, want 2", len(entries))
	}
	if _, ok := entries[0].ContextMap()["left_out"]; ok {
		t.Errorf("the first line says it left some out: %v", entries[0].ContextMap())
	}
	if got := entries[1].ContextMap(); got["left_out"] != int64(29) || got["detail"] != "dial refused again" {
		t.Errorf("second line %v, want 29 left out and the latest detail", got)
	}
}
