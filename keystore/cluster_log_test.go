package keystore_test

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wevion/keyproxy/internal/testserver"
)

// Redis going away and coming back is one line each way, however many
// heartbeats and resubscriptions fail in between; a start with Redis
// there says nothing about Redis "answering again".
func TestCluster_RedisStateChangesAreLoggedOnce(t *testing.T) {
	srv := testserver.StartRedis(t)
	core, logs := observer.New(zapcore.DebugLevel)
	r := startReplica(t, srv.Addr, clStore(t), replicaOpts{logger: zap.New(core)})
	count := func(msg string, level zapcore.Level) int {
		n := 0
		for _, e := range logs.FilterMessageSnippet(msg).All() {
			if e.Level == level {
				n++
			}
		}
		return n
	}
	time.Sleep(time.Second) // five heartbeats
	if n := count("redis answering again", zapcore.InfoLevel); n != 0 {
		t.Fatalf("a start with Redis up logged %d recoveries", n)
	}

	srv.Kill()
	eventually(t, 3*time.Second, "redis_up drops to 0", func() bool { return r.counter(t, "keyproxy_redis_up") == 0 })
	time.Sleep(1500 * time.Millisecond) // more heartbeats and resubscriptions fail
	if n := count("redis not answering", zapcore.WarnLevel); n != 1 {
		t.Errorf("redis down: %d warn lines of the heartbeat, want 1", n)
	}
	if n := count("eviction subscription lost", zapcore.WarnLevel); n != 1 {
		t.Errorf("redis down: %d warn lines of the subscription, want 1", n)
	}
	if n := count("resubscribing failed", zapcore.DebugLevel); n == 0 {
		t.Error("the failed resubscriptions were not logged at debug")
	}

	srv.Start()
	eventually(t, 5*time.Second, "replica healthy after redis returned", r.cl.Healthy)
	time.Sleep(500 * time.Millisecond)
	if n := count("redis answering again", zapcore.InfoLevel); n != 1 {
		t.Errorf("redis back: %d recovery lines, want 1", n)
	}
	if n := count("eviction subscription restored", zapcore.InfoLevel); n != 1 {
		t.Errorf("redis back: %d subscription lines, want 1", n)
	}

	// Lost again: logged again.
	srv.Kill()
	eventually(t, 3*time.Second, "redis_up drops to 0 again", func() bool { return r.counter(t, "keyproxy_redis_up") == 0 })
	eventually(t, 3*time.Second, "the second loss is logged", func() bool {
		return count("eviction subscription lost", zapcore.WarnLevel) == 2 && count("redis not answering", zapcore.WarnLevel) == 2
	})
}
