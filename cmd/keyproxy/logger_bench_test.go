package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/wevion/keyproxy/audit"
	"github.com/wevion/keyproxy/internal/cputime"
)

// BenchmarkAuditLogSink is what the default log sink spends per event in
// the process log as serve builds it (JSON, buffered): one op is one
// event of a batch of 512, the pipeline's batch at moderate load. The
// sink pauses to let requests run (a whole millisecond in an idle
// process), so ns/op is mostly pauses: cpu-ns/op is the process's CPU.
func BenchmarkAuditLogSink(b *testing.B) {
	logger, _, stop, err := newLogger("info", "json", io.Discard, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	sink := audit.NewLogSink(logger.Named("audit"))
	batch := make([]audit.Event, 512)
	for i := range batch {
		batch[i] = audit.Event{
			ID: audit.NewEventID(time.Now()), Time: time.Now().UTC(), Type: audit.TypeAPIRequest,
			RequestID: "3w5e11264sgsf-1a2b", KeyID: "key_AbCdEfGhIjKlMnOpQrSt", UserID: "usr_42",
			TeamID: "team_7", Role: "member", Method: "GET", Path: "/v1/projects/42/tasks",
			Status: 200, DurationMS: 1.25, ClientIP: "203.0.113.7",
			UserAgent: "wevion-client/1.2 (go)", Outcome: audit.OutcomeAllowed,
		}
	}
	cputime.BenchBatches(b, len(batch), func() error { return sink.Write(context.Background(), batch) })
}
