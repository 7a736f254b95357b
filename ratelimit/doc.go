// Package ratelimit applies the web interface's per-role policies to API
// calls, counted per user across all of that user's keys.
//
// # Policies
//
// Configuration gives a default and one limit per role:
//
//	ratelimit:
//	  default: { requests: 600, per: 1m, burst: 100 }
//	  roles: { super_admin: { requests: 1200, per: 1m, burst: 200 } }
//
// A limit {requests: R, per: P, burst: B} is a token bucket that holds B
// tokens and refills at R/P tokens per second; each admitted request takes
// one. All three must be positive (there is no implicit burst = requests)
// and P a whole number of seconds; Policies.Validate names every bad key.
// The role is the user's current one, passed on every call, so a user's
// next request after a role change (or a reload) is counted under the new
// policy. What they have spent carries over as a number of requests,
// capped at the new burst: a member who used 5 of 10 and is promoted to a
// burst of 100 has 95 left; an admin who used 50 of 100 and is demoted to
// a burst of 10 has used it all and waits one new interval. Role names
// match case-insensitively.
//
// # Backends
//
// Local keeps one golang.org/x/time/rate bucket per user in memory, bounded
// in number (LocalOptions.MaxEntries) and dropped after idling for as long
// as the slowest policy takes to refill, when dropping changes nothing.
//
// Redis runs the generic cell rate algorithm (GCRA) in one Lua script
// (gcra.lua), atomically and on Redis's clock, so every replica and the
// Wevion web app share one budget per user. The key is
//
//	keyproxy:rl:user:<user id>
//
// a string "<tat>.<interval>": the theoretical arrival time in integer
// microseconds since the Unix epoch and the emission interval it was
// computed with, expiring when the bucket is full again. The interval lets
// a policy change re-express the debt in the new interval rather than
// judge it by the old one; a plain "<tat>", as earlier versions write it,
// counts as computed with the current interval, and earlier versions read
// the new value as the number it starts with, the TAT. The script's
// arguments are the emission interval per/requests in whole microseconds
// and the burst; any client that runs it on the same key spends from the
// same budget. Only admitted requests consume budget: a refusal writes
// only to store the state re-expressed after a policy change.
//
// The decisions waiting for Redis at the same moment share one pipelined
// round trip (up to RedisOptions.MaxBatch): under load the proxy pays one
// write and one read for many decisions, and a lone decision is sent at
// once. Close the Redis limiter to stop the goroutine that sends them.
//
// When Redis errors or does not answer within RedisOptions.Timeout (50 ms;
// build the go-redis client with ContextTimeoutEnabled so the deadline
// reaches the socket, and with few retries), the Redis limiter answers from
// its fallback Local at once, sets keyproxy_ratelimit_degraded to 1 and logs
// one line. Once per ProbeInterval (1 s) it tries Redis again: with the
// next request if one comes, else from a goroutine that runs only while
// degraded (Close stops it) with the script itself on a key of no user's,
// so a Redis that answers PING but refuses the script (out of memory, read
// only) stays one degradation. The first success returns to Redis
// and logs that too, with or without traffic. A degraded replica is
// limited by its own buckets: never unlimited, never an error.
//
// # Response headers
//
// WriteHeaders writes both generations of the IETF httpapi rate-limit
// draft, e.g. for 600 per minute with a burst of 100:
//
//	RateLimit-Policy: "user";q=600;w=60     sustained rate: q requests per w seconds
//	RateLimit: "user";r=99;t=1              r requests left now; bucket full in t s
//	RateLimit-Limit: 100                    the bucket size (burst)
//	RateLimit-Remaining: 99                 as r
//	RateLimit-Reset: 1                      as t
//	Retry-After: 1                          on refusal only
//
// Seconds are rounded up, so Retry-After is never earlier than a retry
// can succeed.
//
// # Metrics
//
//	keyproxy_ratelimit_decisions_total{backend="local|redis",result="allowed|limited"}
//	keyproxy_ratelimit_degraded            1 while Redis limiting is on its fallback
//	keyproxy_ratelimit_redis_errors_total  failed or timed-out Redis calls
package ratelimit
