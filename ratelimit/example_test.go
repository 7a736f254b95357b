package ratelimit_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/wevion/keyproxy/ratelimit"
)

func Example() {
	policies := ratelimit.Policies{
		Default: ratelimit.Limit{Requests: 60, Per: time.Hour, Burst: 2},
		Roles:   map[string]ratelimit.Limit{"super_admin": {Requests: 1200, Per: time.Minute, Burst: 200}},
	}
	if err := policies.Validate(); err != nil {
		panic(err)
	}
	limiter := ratelimit.NewLocal(policies, ratelimit.LocalOptions{})
	defer limiter.Close()

	// The proxy asks once per authenticated request, for the key's user.
	for range 3 {
		res := limiter.Allow(context.Background(), "usr_42", "member")
		h := http.Header{}
		ratelimit.WriteHeaders(h, res)
		if res.Allowed {
			fmt.Println("admitted", h.Get("RateLimit"))
		} else {
			fmt.Println("429, Retry-After:", h.Get("Retry-After"))
		}
	}
	// Output:
	// admitted "user";r=1;t=60
	// admitted "user";r=0;t=120
	// 429, Retry-After: 60
}
