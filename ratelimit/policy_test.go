package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestValidate_AcceptsTheDefaults(t *testing.T) {
	if err := DefaultPolicies().Validate(); err != nil {
		t.Fatalf("DefaultPolicies().Validate() = %v", err)
	}
}

func TestValidate_ReportsEveryProblemNamingItsKey(t *testing.T) {
	good := Limit{Requests: 600, Per: time.Minute, Burst: 100}
	tests := []struct {
		name string
		p    Policies
		want []string
	}{
		{"zero default", Policies{}, []string{
			"ratelimit.default.requests: must be a positive number, got 0",
			"ratelimit.default.per: must be a positive duration",
			"ratelimit.default.burst: must be a positive number, got 0",
		}},
		{"negative role numbers", Policies{Default: good, Roles: map[string]Limit{
			"admin": {Requests: -1, Per: -time.Second, Burst: -5},
		}}, []string{
			"ratelimit.roles.admin.requests: must be a positive number, got -1",
			"ratelimit.roles.admin.per: must be a positive duration such as 1m, got -1s",
			"ratelimit.roles.admin.burst: must be a positive number, got -5",
		}},
		{"problems in several roles at once", Policies{Default: good, Roles: map[string]Limit{
			"admin": {Requests: 10, Per: time.Minute},
			"owner": {Per: time.Minute, Burst: 1},
		}}, []string{
			"ratelimit.roles.admin.burst",
			"ratelimit.roles.owner.requests",
		}},
		{"fractional window", Policies{Default: Limit{Requests: 10, Per: 1500 * time.Millisecond, Burst: 1}},
			[]string{"ratelimit.default.per: must be a whole number of seconds, got 1.5s"}},
		{"faster than a microsecond", Policies{Default: Limit{Requests: 2_000_000, Per: time.Second, Burst: 1}},
			[]string{"ratelimit.default.requests: more than one request per microsecond"}},
		{"roles differing only in case", Policies{Default: good, Roles: map[string]Limit{"Admin": good, "admin": good}},
			[]string{"ratelimit.roles.admin: same role as ratelimit.roles.Admin"}},
		{"empty role name", Policies{Default: good, Roles: map[string]Limit{"": good}},
			[]string{"ratelimit.roles.: role name is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q\nmissing %q", err, w)
				}
			}
		})
	}
}

func TestPoliciesFor_RoleOtherwiseDefault(t *testing.T) {
	def := Limit{Requests: 600, Per: time.Minute, Burst: 100}
	admin := Limit{Requests: 1200, Per: time.Minute, Burst: 200}
	p := Policies{Default: def, Roles: map[string]Limit{"super_admin": admin}}
	tests := []struct {
		role string
		want Limit
	}{
		{"super_admin", admin},
		{"Super_Admin", admin},
		{"member", def},
		{"", def},
	}
	for _, tt := range tests {
		if got := p.For(tt.role); got != tt.want {
			t.Errorf("For(%q) = %v, want %v", tt.role, got, tt.want)
		}
		tbl, err := compile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := tbl.forRole(tt.role).limit; got != tt.want {
			t.Errorf("compiled forRole(%q) = %v, want %v", tt.role, got, tt.want)
		}
	}
}

func TestPolicy_IntervalRoundsToNearestMicrosecond(t *testing.T) {
	tests := []struct {
		l    Limit
		want int64
	}{
		{Limit{Requests: 600, Per: time.Minute, Burst: 1}, 100_000},
		{Limit{Requests: 3, Per: time.Second, Burst: 1}, 333_333},
		{Limit{Requests: 3, Per: 2 * time.Second, Burst: 1}, 666_667},
		{Limit{Requests: 1_000_000, Per: time.Second, Burst: 1}, 1},
	}
	for _, tt := range tests {
		if got := newPolicy(tt.l).intervalMicros; got != tt.want {
			t.Errorf("newPolicy(%v).intervalMicros = %d, want %d", tt.l, got, tt.want)
		}
	}
}
