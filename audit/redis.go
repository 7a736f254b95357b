package audit

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// RedisClient is the part of go-redis the stream sink uses; *redis.Client,
// *redis.ClusterClient and redis.UniversalClient have it.
type RedisClient interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// RedisSinkOptions tune a RedisSink. Zero values mean the defaults.
type RedisSinkOptions struct {
	// Stream is the stream's key (default "keyproxy:audit").
	Stream string
	// MaxLen caps the stream approximately (XADD MAXLEN ~, which trims
	// whole macro nodes and so stays cheap); default 1,000,000.
	MaxLen int64
}

// RedisSink appends events to a Redis Stream for downstream consumers:
// one entry per event, with the single field "event" holding its JSON.
// Build the client with ContextTimeoutEnabled so that the pipeline's
// SinkTimeout (and Close's deadline) cut a stalled write short.
type RedisSink struct {
	c    RedisClient
	o    RedisSinkOptions
	bufs sync.Pool // *[]byte
}

// NewRedisSink writes to the stream through c.
func NewRedisSink(c RedisClient, o RedisSinkOptions) *RedisSink {
	if o.Stream == "" {
		o.Stream = "keyproxy:audit"
	}
	if o.MaxLen <= 0 {
		o.MaxLen = 1_000_000
	}
	return &RedisSink{c: c, o: o}
}

// Name implements Sink.
func (s *RedisSink) Name() string { return "redis" }

// Write implements Sink: one pipelined round trip of XADDs per batch. A
// failed batch may have been partly added, so a retry can repeat entries;
// consumers dedupe by the event's id.
func (s *RedisSink) Write(ctx context.Context, batch []Event) error {
	if len(batch) == 0 {
		return nil
	}
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	// Encode everything first: slicing buf while it may still grow would
	// leave earlier entries pointing at a stale array.
	buf := (*bp)[:0]
	ends := make([]int, len(batch))
	for i := range batch {
		buf = batch[i].AppendJSON(buf)
		ends[i] = len(buf)
	}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		start := 0
		for _, end := range ends {
			p.XAdd(ctx, &redis.XAddArgs{
				Stream: s.o.Stream,
				MaxLen: s.o.MaxLen,
				Approx: true,
				Values: []any{"event", buf[start:end]},
			})
			start = end
		}
		return nil
	})
	*bp = buf
	s.bufs.Put(bp)
	if err != nil {
		return fmt.Errorf("audit: redis sink: %w", err)
	}
	return nil
}
