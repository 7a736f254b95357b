-- gcra.lua as released before the key held the interval next to the TAT,
-- unchanged below this paragraph: the compatibility tests run it as a
-- replica or a web app not yet upgraded would.
--
-- keyproxy GCRA rate limit, one user per call. Shared with the Wevion web
-- app: any client running this script (or the same arithmetic) on the same
-- key shares the user's budget.
--
-- KEYS[1]  keyproxy:rl:user:<user id>
-- ARGV[1]  emission interval in microseconds: per / requests, at least 1
-- ARGV[2]  burst: how many requests may arrive at once
--
-- The key holds the theoretical arrival time (TAT) as an integer count of
-- microseconds since the Unix epoch, and expires when the bucket is full
-- again. Time is the server's (TIME), never a client clock.
--
-- Returns {allowed (0|1), remaining, retry_after_us, reset_after_us}.

-- Redis < 5 replicates scripts verbatim, and TIME is not deterministic.
if redis.replicate_commands then
  redis.replicate_commands()
end

local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tat = now
local stored = redis.call("GET", KEYS[1])
if stored then
  tat = math.max(tonumber(stored) or now, now)
end

local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  -- Refused: nothing is written, so only admitted requests spend budget.
  return {0, 0, allow_at - now, tat - now}
end

local reset_after = new_tat - now
redis.call("SET", KEYS[1], string.format("%.0f", new_tat), "PX", math.ceil(reset_after / 1000))
return {1, math.floor((now - allow_at) / interval), 0, reset_after}
