package keystore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
	"github.com/wevion/keyproxy/keystore/storetest"
)

// openPostgres opens a store on dsn with a small pool: the suite runs many
// stores side by side on one server.
func openPostgres(t testing.TB, dsn string) *keystore.Postgres {
	t.Helper()
	s, err := keystore.OpenPostgres(testserver.Context(t), dsn, keystore.PostgresOptions{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pgSchema creates a schema in the database dsn names and returns a DSN
// that works in it (search_path), as an operator sharing a database would.
// A schema costs a fraction of a CREATE DATABASE.
func pgSchema(t testing.TB, dsn string) string {
	t.Helper()
	ctx := testserver.Context(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "kp_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestPostgres_Contract(t *testing.T) {
	db := testserver.NewPostgresDB(t)
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return openPostgres(t, pgSchema(t, db))
	})
}

// Two stores in two schemas of one database see nothing of each other.
func TestPostgres_SchemasAreSeparate(t *testing.T) {
	db := testserver.NewPostgresDB(t)
	a, b := openPostgres(t, pgSchema(t, db)), openPostgres(t, pgSchema(t, db))
	ctx := testserver.Context(t)
	k, err := a.CreateKey(ctx, pgNewKey(t, "team_a", "user_a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetKey(ctx, k.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the other schema's store finds the key: %v", err)
	}
}

// Two replicas, each with its own pool, share one database: the team row
// lock, not anything in the process, keeps the bound.
func TestPostgres_TeamLimitHoldsAcrossTwoReplicas(t *testing.T) {
	dsn := testserver.NewPostgresDB(t)
	replicas := []*keystore.Postgres{openPostgres(t, dsn), openPostgres(t, dsn)}
	ctx := testserver.Context(t)

	const n, limit = 50, 10
	var (
		wg                       sync.WaitGroup
		mu                       sync.Mutex
		created, limited, failed int
		firstErr                 error
		start                    = make(chan struct{})
	)
	for i := range n {
		s := replicas[i%2]
		nk := pgNewKey(t, "team_a", fmt.Sprintf("user_%d", i%7))
		wg.Go(func() {
			<-start
			_, err := s.CreateKey(ctx, nk)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, keystore.ErrKeyLimitReached):
				limited++
			default:
				failed++
				firstErr = err
			}
		})
	}
	close(start)
	wg.Wait()
	if created != limit || limited != n-limit || failed != 0 {
		t.Fatalf("created %d, limited %d, failed %d (%v); want %d, %d, 0", created, limited, failed, firstErr, limit, n-limit)
	}
	keys, err := replicas[1].ListKeys(ctx, keystore.KeyFilter{TeamID: "team_a"})
	if err != nil || len(keys) != limit {
		t.Fatalf("stored %d keys (%v), want %d", len(keys), err, limit)
	}
}

// Replicas starting together all migrate; the advisory lock makes one do
// the work and the others find nothing to do.
func TestPostgres_ConcurrentMigrationsAreIdempotent(t *testing.T) {
	dsn := testserver.NewPostgresDB(t)
	ctx := testserver.Context(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := keystore.OpenPostgres(ctx, dsn, keystore.PostgresOptions{MaxConns: 2})
			if err == nil {
				err = s.Migrate(ctx)
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("opener %d: %v", i, err)
		}
	}
	s := openPostgres(t, dsn)
	var steps, last int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&steps, &last); err != nil {
		t.Fatal(err)
	}
	if steps != last || steps < 2 {
		t.Fatalf("schema_migrations holds %d rows up to version %d: a step ran twice or not at all", steps, last)
	}
}

func TestPostgres_DBSharesThePool(t *testing.T) {
	s := openPostgres(t, testserver.NewPostgresDB(t))
	ctx := testserver.Context(t)
	if _, err := s.CreateKey(ctx, pgNewKey(t, "team_a", "user_a")); err != nil {
		t.Fatal(err)
	}
	if first, second := s.DB(), s.DB(); first != second {
		t.Fatal("DB returns a new *sql.DB per call")
	}
	var n int
	if err := s.DB().QueryRowContext(ctx, `SELECT count(*) FROM keys WHERE team_id = $1`, "team_a").Scan(&n); err != nil || n != 1 {
		t.Fatalf("database/sql view counts %d keys (%v), want 1", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().PingContext(ctx); err == nil {
		t.Fatal("the *sql.DB still works after Close")
	}
}

func TestPostgres_PoolOptionsApplied(t *testing.T) {
	dsn := testserver.NewPostgresDB(t)
	s, err := keystore.OpenPostgres(testserver.Context(t), dsn, keystore.PostgresOptions{
		MaxConns: 3, MinConns: 1, MaxConnLifetime: time.Minute, MaxConnIdleTime: 20 * time.Second,
		HealthCheckPeriod: 5 * time.Second, ConnectTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := s.Pool().Config()
	if cfg.MaxConns != 3 || cfg.MinConns != 1 || cfg.MaxConnLifetime != time.Minute ||
		cfg.MaxConnIdleTime != 20*time.Second || cfg.HealthCheckPeriod != 5*time.Second ||
		cfg.ConnConfig.ConnectTimeout != 2*time.Second {
		t.Fatalf("pool config = max %d min %d life %v idle %v health %v connect %v", cfg.MaxConns, cfg.MinConns,
			cfg.MaxConnLifetime, cfg.MaxConnIdleTime, cfg.HealthCheckPeriod, cfg.ConnConfig.ConnectTimeout)
	}
}

// A server that is not there is ErrUnavailable (503 for an uncached key),
// and the DSN's password appears in no error.
func TestOpenPostgres_UnreachableIsUnavailableAndHidesPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tests := []struct {
		name, dsn   string
		unavailable bool
	}{
		{"closed port", "postgres://keyproxy:s3cretpw@" + addr + "/db?sslmode=disable", true},
		{"unparsable", "postgres://keyproxy:s3cretpw@host:notaport/db", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := keystore.OpenPostgres(testserver.Context(t), tt.dsn, keystore.PostgresOptions{ConnectTimeout: time.Second})
			if err == nil {
				t.Fatal("OpenPostgres succeeded")
			}
			if errors.Is(err, keystore.ErrUnavailable) != tt.unavailable {
				t.Fatalf("errors.Is(ErrUnavailable) = %v, want %v: %v", !tt.unavailable, tt.unavailable, err)
			}
			if strings.Contains(err.Error(), "s3cretpw") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// Terminating the store's connections (a failover, a restart) is
// ErrUnavailable for the request that hit it, and the pool heals after.
func TestPostgres_TerminatedConnectionsAreUnavailableThenHeal(t *testing.T) {
	dsn := testserver.NewPostgresDB(t)
	s := openPostgres(t, dsn)
	admin := openPostgres(t, dsn)
	ctx := testserver.Context(t)
	k, err := s.CreateKey(ctx, pgNewKey(t, "team_a", "user_a"))
	if err != nil {
		t.Fatal(err)
	}
	var pid uint32
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid = conn.Conn().PgConn().PID()
	conn.Release()
	if _, err := admin.Pool().Exec(ctx, `SELECT pg_terminate_backend($1)`, int64(pid)); err != nil {
		t.Fatal(err)
	}
	var sawUnavailable bool
	for range 2 {
		_, err := s.Resolve(ctx, k.Hash)
		switch {
		case err == nil:
		case errors.Is(err, keystore.ErrUnavailable):
			sawUnavailable = true
		default:
			t.Fatalf("Resolve on a terminated connection: %v, want ErrUnavailable", err)
		}
	}
	if _, err := s.Resolve(ctx, k.Hash); err != nil {
		t.Fatalf("pool did not heal: %v (saw unavailable: %v)", err, sawUnavailable)
	}
}

func pgNewKey(t testing.TB, team, user string) keystore.NewKey {
	t.Helper()
	id, err := keystore.NewID()
	if err != nil {
		t.Fatal(err)
	}
	return keystore.NewKey{
		ID: id, Hash: keystore.HashKey(id), Start: "wev_Ab12", Name: "k", UserID: user, TeamID: team,
		Role: "owner", MaxActivePerTeam: 10,
	}
}

func BenchmarkPostgresResolve(b *testing.B) {
	s := openPostgres(b, testserver.NewPostgresDB(b))
	ctx := context.Background()
	k, err := s.CreateKey(ctx, pgNewKey(b, "team_a", "user_a"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Resolve(ctx, k.Hash); err != nil {
			b.Fatal(err)
		}
	}
}
