package audit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
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
// one batch of 512 events (so -benchtime=200x writes about 100k events).
func BenchmarkSQLStoreWrite(b *testing.B) {
	for _, tdb := range testDBs {
		b.Run(tdb.name, func(b *testing.B) {
			s, err := NewSQLStore(tdb.open(b), tdb.dialect, StoreOptions{})
			if err != nil {
				b.Fatal(err)
			}
			const size = 512
			base := time.Now().UTC().Truncate(time.Microsecond)
			batch := make([]Event, size)
			for i := range batch {
				batch[i] = fixedEvent(i, base)
				batch[i].TeamID = fmt.Sprintf("team_%d", i%50)
				batch[i].UserAgent = "reporting-bot/2.3 (+https://example.com)"
				batch[i].ClientIP = "203.0.113.7"
			}
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				// New ids and times only: the rest of the batch is reused.
				for i := range batch {
					batch[i].Time = base.Add(time.Duration(n) * time.Microsecond)
					batch[i].ID = NewEventID(batch[i].Time)
					n++
				}
				if err := s.Write(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
