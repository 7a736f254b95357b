package audit

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var eventIDPattern = regexp.MustCompile(`^evt_[0-9A-HJKMNP-TV-Z]{26}$`)

func TestRecord_FillsIDAndTimeAsUTCMicroseconds(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	now := time.Date(2025, 6, 1, 12, 0, 0, 123456789, berlin)
	sink := newMemSink("mem")
	p := newTestPipeline(t, Options{Now: func() time.Time { return now }}, sink)

	p.Record(Event{Type: TypeAPIRequest})
	given := time.Date(2024, 1, 2, 3, 4, 5, 999, berlin)
	p.Record(Event{ID: "evt_given", Time: given, Type: TypeKeyCreated})
	closePipeline(t, p)

	got := sink.snapshot()
	if len(got) != 2 {
		t.Fatalf("%d events, want 2", len(got))
	}
	if !eventIDPattern.MatchString(got[0].ID) {
		t.Errorf("generated id %q is not evt_ + ULID", got[0].ID)
	}
	if want := now.UTC().Truncate(time.Microsecond); !got[0].Time.Equal(want) || got[0].Time.Location() != time.UTC {
		t.Errorf("filled time %v, want %v in UTC", got[0].Time, want)
	}
	if got[1].ID != "evt_given" {
		t.Errorf("given id replaced by %q", got[1].ID)
	}
	if want := given.UTC().Truncate(time.Microsecond); !got[1].Time.Equal(want) || got[1].Time.Location() != time.UTC {
		t.Errorf("given time became %v, want %v in UTC", got[1].Time, want)
	}
}

func TestNewEventID_SortsByMillisecondAndIsUnique(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := ""
	for i := range 1000 {
		id := NewEventID(base.Add(time.Duration(i) * time.Millisecond))
		if !eventIDPattern.MatchString(id) {
			t.Fatalf("id %q is not evt_ + ULID", id)
		}
		if id <= prev {
			t.Fatalf("id %q for a later millisecond sorts before %q", id, prev)
		}
		prev = id
	}
	seen := make(map[string]bool, 100000)
	for range 100000 {
		id := NewEventID(base)
		if seen[id] {
			t.Fatalf("duplicate id %q within one millisecond", id)
		}
		seen[id] = true
	}
}

func TestRecord_NormalisesClientControlledText(t *testing.T) {
	long := strings.Repeat("é", 600) // 1200 bytes
	tests := []struct {
		name  string
		in    Event
		check func(t *testing.T, e Event)
	}{
		{"query string is cut from the path", Event{Path: "/v1/x?api_key=secret&a=b"}, func(t *testing.T, e Event) {
			if e.Path != "/v1/x" {
				t.Errorf("path %q", e.Path)
			}
		}},
		{"fragment is cut from the path", Event{Path: "/v1/x#frag"}, func(t *testing.T, e Event) {
			if e.Path != "/v1/x" {
				t.Errorf("path %q", e.Path)
			}
		}},
		{"invalid UTF-8 and NUL are replaced", Event{Path: "/a\xff\x00b", UserAgent: "x\x00"}, func(t *testing.T, e Event) {
			if e.Path != "/a\uFFFD\uFFFDb" || e.UserAgent != "x\uFFFD" {
				t.Errorf("path %q, user agent %q", e.Path, e.UserAgent)
			}
		}},
		{"long text is cut on a rune boundary", Event{UserAgent: long, Path: "/" + long + long}, func(t *testing.T, e Event) {
			if len(e.UserAgent) > maxFieldLen || !utf8.ValidString(e.UserAgent) {
				t.Errorf("user agent of %d bytes, valid %v", len(e.UserAgent), utf8.ValidString(e.UserAgent))
			}
			if len(e.Path) > maxPathLen || !utf8.ValidString(e.Path) {
				t.Errorf("path of %d bytes", len(e.Path))
			}
		}},
		{"ordinary text is untouched", Event{Path: "/v1/Zoë", UserAgent: "curl/8.5"}, func(t *testing.T, e Event) {
			if e.Path != "/v1/Zoë" || e.UserAgent != "curl/8.5" {
				t.Errorf("path %q, user agent %q", e.Path, e.UserAgent)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newMemSink("mem")
			p := newTestPipeline(t, Options{}, sink)
			p.Record(tt.in)
			closePipeline(t, p)
			tt.check(t, sink.snapshot()[0])
		})
	}
}

func TestRecord_WaitsAtMostMaxWaitWhenTheQueueIsFullThenSpills(t *testing.T) {
	stalled, spill := newMemSink("stalled"), newMemSink("spill")
	stalled.gate = make(chan struct{})
	const maxWait = 20 * time.Millisecond
	p := newTestPipeline(t, Options{QueueSize: 4, BatchSize: 2, MaxWait: maxWait, Spill: spill}, stalled)
	var want []string
	var slowest time.Duration
	for i := range 200 {
		id := fmt.Sprintf("evt_%d", i)
		want = append(want, id)
		start := time.Now()
		p.Record(Event{ID: id, Type: TypeAPIRequest})
		slowest = max(slowest, time.Since(start))
	}
	// A generous bound on the guarantee, not a speed test.
	if slowest > maxWait+2*time.Second {
		t.Errorf("a Record blocked %v with MaxWait %v", slowest, maxWait)
	}
	close(stalled.gate)
	closePipeline(t, p)

	got := append(stalled.snapshot(), spill.snapshot()...)
	assertSameIDs(t, "sink and spill together", got, want)
	written := counterValue(t, p.m.events, "stalled", "written")
	spilled := counterValue(t, p.m.events, "stalled", "spilled")
	if written+spilled != 200 || spilled == 0 {
		t.Fatalf("written %d + spilled %d, want 200 with some spilled", written, spilled)
	}
	byReason := counterValue(t, p.m.spilled, ReasonQueueFull) + counterValue(t, p.m.spilled, ReasonSinkBacklog)
	if byReason != spilled {
		t.Fatalf("spilled_total by reason = %d, per sink %d", byReason, spilled)
	}
}

func TestRecord_AfterCloseSpillsInsteadOfLosing(t *testing.T) {
	sink, spill := newMemSink("mem"), newMemSink("spill")
	p := newTestPipeline(t, Options{Spill: spill}, sink)
	closePipeline(t, p)
	p.Record(Event{ID: "evt_late", Type: TypeAPIRequest})
	if got := spill.snapshot(); len(got) != 1 || got[0].ID != "evt_late" {
		t.Fatalf("spill got %v", got)
	}
	if got := counterValue(t, p.m.spilled, ReasonClosed); got != 1 {
		t.Fatalf("spilled_total{closed} = %d, want 1", got)
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "abcdefgh", "abc\x00defgh", "abcdefg\x00", "é", "abcdefgh\x80", "\xff\xfe", "日本語テキスト", "\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x00\x7f"} {
		f.Add(s, 8)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 4096 {
			return
		}
		got := clean(s, n)
		if len(got) > n || !utf8.ValidString(got) || strings.IndexByte(got, 0) >= 0 {
			t.Fatalf("clean(%q, %d) = %q: too long, invalid or with NUL", s, n, got)
		}
		plain := true
		for i := 0; i < len(s); i++ {
			if s[i] == 0 || s[i] >= utf8.RuneSelf {
				plain = false
			}
		}
		if plainASCII(s) != plain {
			t.Fatalf("plainASCII(%q) = %v", s, !plain)
		}
		if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 && len(s) <= n && got != s {
			t.Fatalf("clean changed a clean string %q to %q", s, got)
		}
	})
}
