package ratelimit

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Policies maps roles to limits. A role without an entry gets Default.
// Role names match case-insensitively, because viper lower-cases map keys
// read from YAML.
type Policies struct {
	Default Limit            `mapstructure:"default"`
	Roles   map[string]Limit `mapstructure:"roles"`
}

// DefaultPolicies are the limits keyproxy runs with when the config names
// none: the Wevion web interface's.
func DefaultPolicies() Policies {
	return Policies{
		Default: Limit{Requests: 600, Per: time.Minute, Burst: 100},
		Roles: map[string]Limit{
			"super_admin": {Requests: 1200, Per: time.Minute, Burst: 200},
		},
	}
}

// For returns the limit that applies to role.
func (p Policies) For(role string) Limit {
	if l, ok := p.Roles[role]; ok {
		return l
	}
	for name, l := range p.Roles {
		if strings.EqualFold(name, role) {
			return l
		}
	}
	return p.Default
}

// Validate reports every problem at once, each naming its config key
// (ratelimit.roles.admin.requests), so an operator fixes the file in one go.
func (p Policies) Validate() error {
	errs := validateLimit("ratelimit.default", p.Default)
	seen := make(map[string]string, len(p.Roles))
	for _, name := range slices.Sorted(maps.Keys(p.Roles)) {
		key := "ratelimit.roles." + name
		if strings.TrimSpace(name) == "" {
			errs = append(errs, fmt.Errorf("%s: role name is empty", key))
			continue
		}
		lower := strings.ToLower(name)
		if other, dup := seen[lower]; dup {
			errs = append(errs, fmt.Errorf("%s: same role as ratelimit.roles.%s (role names are case-insensitive)", key, other))
			continue
		}
		seen[lower] = name
		errs = append(errs, validateLimit(key, p.Roles[name])...)
	}
	return errors.Join(errs...)
}

func validateLimit(key string, l Limit) []error {
	var errs []error
	if l.Requests <= 0 {
		errs = append(errs, fmt.Errorf("%s.requests: must be a positive number, got %d", key, l.Requests))
	}
	switch {
	case l.Per <= 0:
		errs = append(errs, fmt.Errorf("%s.per: must be a positive duration such as 1m, got %s", key, l.Per))
	case l.Per%time.Second != 0:
		// RateLimit-Policy's w parameter is whole seconds; a window that
		// cannot be stated there would make the header lie.
		errs = append(errs, fmt.Errorf("%s.per: must be a whole number of seconds, got %s", key, l.Per))
	case l.Requests > 0 && l.Per/time.Duration(l.Requests) < time.Microsecond:
		// The Redis script counts in microseconds.
		errs = append(errs, fmt.Errorf("%s.requests: more than one request per microsecond (%d per %s) is not supported", key, l.Requests, l.Per))
	}
	if l.Burst <= 0 {
		errs = append(errs, fmt.Errorf("%s.burst: must be a positive number, got %d", key, l.Burst))
	}
	return errs
}

// policy is a Limit with everything the hot path needs worked out once.
type policy struct {
	limit Limit
	// perSecond is the refill rate for the local token bucket.
	perSecond rate.Limit
	// intervalMicros is the GCRA emission interval, Per/Requests, rounded
	// to the microsecond the Redis script counts in.
	intervalMicros int64
	// gcraArgs are the script's ARGV, boxed once: boxing them per call
	// would cost two allocations per decision.
	gcraArgs []any
	// refill is how long an empty bucket takes to become full.
	refill time.Duration
	// Header values shared by every response under this policy; each is a
	// one-element slice with cap 1, so an append by a later handler copies.
	policyHeader []string
	limitHeader  []string
}

func newPolicy(l Limit) *policy {
	interval := l.Per.Microseconds() / int64(l.Requests)
	if rem := l.Per.Microseconds() % int64(l.Requests); rem*2 >= int64(l.Requests) {
		interval++
	}
	interval = max(interval, 1)
	return &policy{
		limit:          l,
		perSecond:      rate.Limit(float64(l.Requests) / l.Per.Seconds()),
		intervalMicros: interval,
		gcraArgs:       []any{interval, l.Burst},
		refill:         time.Duration(float64(l.Per) * float64(l.Burst) / float64(l.Requests)),
		policyHeader:   []string{policyHeaderValue(l)},
		limitHeader:    []string{strconv.Itoa(l.Burst)},
	}
}

// table is a validated Policies, compiled, swapped atomically on reload.
type table struct {
	def   *policy
	roles map[string]*policy // lower-case names
	// longestRefill bounds how long an idle bucket can still differ from
	// a new one.
	longestRefill time.Duration
}

func compile(p Policies) (*table, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	t := &table{def: newPolicy(p.Default), roles: make(map[string]*policy, len(p.Roles))}
	t.longestRefill = t.def.refill
	for name, l := range p.Roles {
		pol := newPolicy(l)
		t.roles[strings.ToLower(name)] = pol
		t.longestRefill = max(t.longestRefill, pol.refill)
	}
	return t, nil
}

func (t *table) forRole(role string) *policy {
	if p, ok := t.roles[role]; ok {
		return p
	}
	if hasUpper(role) {
		if p, ok := t.roles[strings.ToLower(role)]; ok {
			return p
		}
	}
	return t.def
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return true
		}
	}
	return false
}
