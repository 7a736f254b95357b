package main

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/keystore"
)

// Shutdown under load loses no audit event: every call that got an answer
// has its api.request event in the store after the process stopped.
func TestShutdownUnderLoad_EveryAnsweredCallIsAudited(t *testing.T) {
	up := newUpstream(t)
	dbPath := filepath.Join(t.TempDir(), "drain.db")
	in := startInstance(t, "KEYPROXY_UPSTREAM_URL="+up.URL, "KEYPROXY_STORE_DSN="+dbPath,
		"KEYPROXY_LOG_ACCESS=false", "KEYPROXY_AUDIT_SINKS=store",
		"KEYPROXY_RATELIMIT_DEFAULT_REQUESTS=100000", "KEYPROXY_RATELIMIT_DEFAULT_BURST=100000")
	key, id := createKey(t, in, "usr_drain", "team_drain")

	var answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, in.proxyURL+"/load", nil)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					continue // the listener closed: no answer, no event
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					answered.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	if err := in.stop(); err != nil { // what SIGTERM does
		t.Fatalf("shutdown: %v", err)
	}
	close(stop)
	wg.Wait()

	ctx := context.Background()
	st, err := keystore.OpenSQLite(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	events, err := audit.NewSQLStore(st.DB(), audit.SQLite, audit.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	stored, cursor := int64(0), ""
	for {
		page, err := events.Query(ctx, audit.Query{KeyID: id, Limit: audit.MaxQueryLimit, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			if e.Type == audit.TypeAPIRequest && e.Status == http.StatusOK {
				stored++
			}
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	t.Logf("%d calls answered before and during the shutdown, %d api.request events stored", answered.Load(), stored)
	if answered.Load() == 0 || stored != answered.Load() {
		t.Fatalf("%d answered calls but %d stored events", answered.Load(), stored)
	}
}
