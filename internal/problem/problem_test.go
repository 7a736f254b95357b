package problem

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

func TestWrite_IsValidProblemJSON(t *testing.T) {
	tests := []struct {
		name string
		p    Problem
		want map[string]any
	}{
		{"full", Problem{Status: 401, Code: "invalid_api_key", Title: "Invalid API key", Detail: "The key is not valid.", RequestID: "r1"},
			map[string]any{"type": TypeBase + "invalid_api_key", "title": "Invalid API key", "status": float64(401), "detail": "The key is not valid.", "code": "invalid_api_key", "request_id": "r1"}},
		{"omits empty detail and request id", Problem{Status: 503, Code: "auth_unavailable", Title: "Unavailable"},
			map[string]any{"type": TypeBase + "auth_unavailable", "title": "Unavailable", "status": float64(503), "code": "auth_unavailable"}},
		{"escapes quotes and control characters", Problem{Status: 400, Code: "invalid_request", Title: "Bad", Detail: "field \"name\"\n\x00"},
			map[string]any{"type": TypeBase + "invalid_request", "title": "Bad", "status": float64(400), "detail": "field \"name\"\n\x00", "code": "invalid_request"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Write(rec, tt.p)
			if rec.Code != tt.p.Status {
				t.Fatalf("status %d, want %d", rec.Code, tt.p.Status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}
