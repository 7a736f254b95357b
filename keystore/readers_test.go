package keystore

import (
	"bytes"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// goroutineID reads the calling goroutine's id from its stack header
// ("goroutine 42 [running]:"); only a test needs it.
func goroutineID(t *testing.T) uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := bytes.Fields(buf)
	if len(f) < 2 {
		t.Errorf("unexpected stack header %q", buf)
		return 0
	}
	id, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		t.Errorf("stack header %q: %v", buf, err)
	}
	return id
}

// liveReaders counts goroutines running readers.run, idle or busy.
func liveReaders() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("keystore.(*readers).run("))
}

// parkedReaders counts readers blocked in their select for the next job.
// A reader counts itself idle just before it enters the select, so the
// idle count alone does not say a send would find it: a send in that gap
// starts a second reader.
func parkedReaders() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(" [select")) && bytes.Contains(g, []byte("keystore.(*readers).run(")) {
			n++
		}
	}
	return n
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached in 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReaders_SequentialReadsReuseOneGoroutine(t *testing.T) {
	p := newReaders()
	defer p.close()
	want := errors.New("the read's own error")
	var ids []uint64
	for i := range 20 {
		// The reader that served the last read is back waiting before the
		// next arrives, as between two misses of a quiet proxy.
		waiting := min(i, 1)
		waitUntil(t, "previous reader waiting for a job", func() bool {
			return p.idle.Load() == int32(waiting) && parkedReaders() == waiting
		})
		v, err := p.do(func() (any, error) { return goroutineID(t), want })
		if !errors.Is(err, want) {
			t.Fatalf("read %d: error %v, want the read's own", i, err)
		}
		ids = append(ids, v.(uint64))
	}
	for i, id := range ids {
		if id != ids[0] {
			t.Fatalf("read %d ran on goroutine %d, read 0 on %d: a waiting reader was not reused", i, id, ids[0])
		}
	}
	// Waited for, not read once: readers of resolvers closed by earlier
	// tests in this binary (with -count > 1) may still be on their way out.
	waitUntil(t, "one reader left after sequential reads", func() bool { return liveReaders() == 1 })
}

func TestReaders_BurstRunsAtOnceAndKeepsABoundedRest(t *testing.T) {
	p := newReaders()
	const n = 4 * readerIdleMax
	var started sync.WaitGroup
	started.Add(n)
	release := make(chan struct{})
	results := make(chan any, n)
	for i := range n {
		go func() {
			v, _ := p.do(func() (any, error) {
				started.Done()
				<-release
				return i, nil
			})
			results <- v
		}()
	}
	// Every read is in progress at once: none queues behind a fixed pool.
	started.Wait()
	close(release)
	seen := make(map[int]bool, n)
	for range n {
		seen[(<-results).(int)] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct results of %d reads: a caller got another's result", len(seen), n)
	}
	waitUntil(t, "readers beyond the idle bound exit", func() bool { return liveReaders() == readerIdleMax })
	if got := p.idle.Load(); got != readerIdleMax {
		t.Fatalf("idle count %d, want %d", got, readerIdleMax)
	}

	p.close()
	waitUntil(t, "idle readers exit on close", func() bool { return liveReaders() == 0 })
	if got := p.idle.Load(); got != 0 {
		t.Fatalf("idle count %d after close, want 0", got)
	}
}

func TestReaders_ReadAfterCloseRunsAndLeavesNoReader(t *testing.T) {
	p := newReaders()
	p.close()
	// A miss racing Resolver.Close still gets its answer.
	v, err := p.do(func() (any, error) { return "late", nil })
	if err != nil || v != "late" {
		t.Fatalf("read after close: %v, %v", v, err)
	}
	waitUntil(t, "the late reader exits", func() bool { return liveReaders() == 0 })
}
