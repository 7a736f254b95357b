package proxy

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wevion/keyproxy/internal/problem"
)

// TestPreparedProblemsMatchProblemPackage: the bodies rendered at start-up
// are byte for byte what internal/problem writes, headers included.
func TestPreparedProblemsMatchProblemPackage(t *testing.T) {
	h, _ := newTestHandler(t, &captureTransport{})
	ps := &h.problems
	for _, p := range []*preparedProblem{&ps.missing, &ps.invalid, &ps.inactive, &ps.rateLimited, &ps.unavailable, &ps.badGateway, &ps.timeout} {
		e := &exchange{Context: context.Background()}
		e.hv[hvRequestID] = "rid-1"
		got := httptest.NewRecorder()
		h.refuse(got, e, p)

		var doc struct{ Code, Title, Detail string }
		if err := json.Unmarshal(got.Body.Bytes(), &doc); err != nil {
			t.Fatalf("%s: %v", got.Body, err)
		}
		want := httptest.NewRecorder()
		problem.Write(want, problem.Problem{Status: p.status, Code: doc.Code, Title: doc.Title, Detail: doc.Detail, RequestID: "rid-1"})
		if got.Body.String() != want.Body.String() {
			t.Errorf("body\n got %s\nwant %s", got.Body, want.Body)
		}
		if got.Code != want.Code {
			t.Errorf("status %d, want %d", got.Code, want.Code)
		}
		for k, v := range want.Header() {
			if g := got.Header()[k]; len(g) != 1 || g[0] != v[0] {
				t.Errorf("%s = %q, want %q", k, g, v)
			}
		}
		if e.outcome != p.outcome || int(e.status) != p.status {
			t.Errorf("exchange records %v/%d, want %v/%d", e.outcome, e.status, p.outcome, p.status)
		}
	}
}

func TestMetricsCannotBeRegisteredTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := newMetrics(reg); err == nil {
		t.Error("second registration on one registry succeeded")
	}
}
