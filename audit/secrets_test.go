package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wevion/keyproxy/internal/testserver"
	"github.com/wevion/keyproxy/keystore"
)

// A client that puts its key in the query string must not get it into the
// audit trail: not in any sink, the spill, the operational log or metrics.
func TestSecrets_AFullKeyNeverLeavesThePipeline(t *testing.T) {
	format, err := keystore.NewFormat("wev_")
	if err != nil {
		t.Fatal(err)
	}
	key, err := format.Generate()
	if err != nil {
		t.Fatal(err)
	}
	srv := testserver.StartRedis(t)
	rc := newRedisClient(t, srv.Addr)
	store := newTestStore(t, testDBs[0], StoreOptions{})
	var logLines, opsLines bytes.Buffer
	broken := newMemSink("broken") // forces the spill path too
	broken.fail = alwaysFail
	reg := prometheus.NewRegistry()
	p := newTestPipeline(t, Options{
		Retries: -1, Registerer: reg,
		Spill:  NewEventLogSink(zapcore.AddSync(&logLines)),
		Logger: zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&opsLines), zapcore.DebugLevel)),
	}, store, NewRedisSink(rc, RedisSinkOptions{}), broken)

	p.Record(Event{
		Type: TypeAPIRequest, KeyID: "key_1", KeyStart: format.Start(key), Method: "GET",
		Path: "/v1/reports?api_key=" + key + "#" + key, Status: 200, Outcome: OutcomeAllowed,
	})
	closePipeline(t, p)

	page, err := store.Query(context.Background(), Query{})
	if err != nil || len(page.Events) != 1 {
		t.Fatalf("store: %v, %v", page.Events, err)
	}
	stored, _ := json.Marshal(page.Events)
	stream, _ := json.Marshal(streamEvents(t, rc, "keyproxy:audit"))
	var metrics bytes.Buffer
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&metrics, mf); err != nil {
			t.Fatal(err)
		}
	}
	secret := key[len("wev_")+4:] // everything past the display start
	for where, text := range map[string]string{
		"store": string(stored), "redis stream": string(stream), "spill log": logLines.String(),
		"operational log": opsLines.String(), "metrics": metrics.String(),
	} {
		if strings.Contains(text, secret) {
			t.Errorf("the key's secret part appears in the %s:\n%s", where, text)
		}
	}
	if !strings.Contains(logLines.String(), `"path":"/v1/reports"`) {
		t.Errorf("the spilled event lost its path: %s", logLines.String())
	}
}
