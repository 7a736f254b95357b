package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/internal/cputime"
)

// countSink is as fast as a sink can be: it only counts.
type countSink struct{ n atomic.Int64 }

func (*countSink) Name() string { return "count" }
func (s *countSink) Write(_ context.Context, b []Event) error {
	s.n.Add(int64(len(b)))
	return nil
}

// BenchmarkRecord is the cost the request path pays per event: id, time,
// normalisation and the enqueue.
func BenchmarkRecord(b *testing.B) {
	p, err := NewPipeline(Options{}, &countSink{})
	if err != nil {
		b.Fatal(err)
	}
	e := Event{
		Type: TypeAPIRequest, RequestID: "0f8e2c1d-4a5b-4c6d-8e9f-0a1b2c3d4e5f", KeyID: "key_AbCdEfGhIjKlMnOpQrSt",
		KeyStart: "wev_7Hk2", UserID: "usr_42", TeamID: "team_7", Role: "admin", Method: "GET",
		Path: "/v1/reports/2025/q1", Status: 200, DurationMS: 1.25, ClientIP: "203.0.113.7",
		UserAgent: "reporting-bot/2.3 (+https://example.com)", Outcome: OutcomeAllowed,
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Record(e)
		}
	})
	b.StopTimer()
	if err := p.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := fullEvent()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendJSON(buf[:0])
	}
}

// BenchmarkSQLStoreWrite measures what the store sink sustains: one op is
// one batch of 1024 events (keyproxy's batch under load) from 1000
// keys of 1000 users in 50 teams, on a table already holding 200 k events.
func BenchmarkSQLStoreWrite(b *testing.B) {
	for _, tdb := range testDBs {
		b.Run(tdb.name, func(b *testing.B) {
			s, err := NewSQLStore(tdb.open(b), tdb.dialect, StoreOptions{})
			if err != nil {
				b.Fatal(err)
			}
			const size = 1024
			base := time.Now().UTC().Truncate(time.Microsecond)
			batch := make([]Event, size)
			n := 0
			next := func() {
				for i := range batch {
					k := n % 1000
					batch[i] = Event{Type: TypeAPIRequest, RequestID: fmt.Sprintf("m3k9x2-%d", n),
						KeyID: fmt.Sprintf("key_AbCdEfGhIjKlMn%06d", k), KeyStart: "wev_7Hk2", UserID: fmt.Sprintf("usr_%d", k),
						TeamID: fmt.Sprintf("team_%d", k%50), Role: "admin", Method: "GET", Path: "/v1/reports/2025/q1",
						Status: 200, DurationMS: 1.25, ClientIP: "203.0.113.7", UserAgent: "reporting-bot/2.3 (+https://example.com)",
						Outcome: OutcomeAllowed, Time: base.Add(time.Duration(n) * time.Microsecond)}
					batch[i].ID = NewEventID(batch[i].Time)
					n++
				}
			}
			for range 50 {
				next()
				if err := s.Write(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			written := 0
			for b.Loop() {
				b.StopTimer()
				next()
				b.StartTimer()
				if err := s.Write(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				written += size
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(written), "ns/event")
		})
	}
}

// BenchmarkEventLogSinkFile is the audit.file sink writing to a file: one
// op is one event of a batch of 512. cpu-ns/op is the process's CPU (the
// sink's pauses to let requests run make ns/op mostly idle time).
func BenchmarkEventLogSinkFile(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sink := NewEventLogSink(zapcore.AddSync(f))
	batch := make([]Event, 512)
	for i := range batch {
		batch[i] = fullEvent()
	}
	cputime.BenchBatches(b, len(batch), func() error { return sink.Write(context.Background(), batch) })
}
