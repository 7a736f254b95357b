package audit_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/audit"
)

// A pipeline with one sink that writes JSON lines to stdout. In production
// the sinks are the configured combination of log, store and redis, and
// the spill sink is the log sink.
func ExampleNewPipeline() {
	logSink := audit.NewEventLogSink(zapcore.AddSync(os.Stdout))
	p, err := audit.NewPipeline(audit.Options{
		Now:   func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) },
		NewID: func() string { return "evt_01JWQ7Z8K9M0N1P2Q3R4S5T6V7" },
	}, logSink)
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Record(audit.Event{
		Type: audit.TypeAPIRequest, KeyID: "key_4f9a", UserID: "usr_42", TeamID: "team_7", Role: "admin",
		Method: "GET", Path: "/v1/reports?page=2", Status: 200, DurationMS: 3.2, Outcome: audit.OutcomeAllowed,
	})
	// On SIGTERM: Close drains every queued event before the process exits.
	if err := p.Close(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"id":"evt_01JWQ7Z8K9M0N1P2Q3R4S5T6V7","time":"2025-06-01T12:00:00Z","type":"api.request","key_id":"key_4f9a","user_id":"usr_42","team_id":"team_7","role":"admin","method":"GET","path":"/v1/reports","status":200,"duration_ms":3.2,"outcome":"allowed"}
}
