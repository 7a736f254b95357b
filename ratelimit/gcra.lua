-- keyproxy GCRA rate limit, one user per call. Shared with the Wevion web
-- app: any client running this script (or the same arithmetic) on the same
-- key shares the user's budget.
--
-- KEYS[1]  keyproxy:rl:user:<user id>
-- ARGV[1]  emission interval in microseconds: per / requests, at least 1
-- ARGV[2]  burst: how many requests may arrive at once
-- ARGV[3]  optional, default 0: microseconds of budget to charge before
--          deciding (requests × interval), for requests admitted where
--          this script could not run: a keyproxy replica's local fallback
--          while Redis was out of reach
-- ARGV[4]  optional, default 0: how many microseconds ago the first of
--          those requests was admitted
--
-- The key holds "<tat>.<interval>": the theoretical arrival time (TAT) as
-- an integer count of microseconds since the Unix epoch, a dot, and the
-- emission interval the TAT was computed with, e.g.
-- "1767225600000000.6000000". It expires when the bucket is full again.
-- Time is the server's (TIME), never a client clock.
--
-- The interval is kept because the policy can change between calls (a new
-- role, new limits): what the user has spent carries over as a number of
-- requests, not as time. Under another interval the outstanding requests,
-- (tat - now) / old interval, are re-expressed in the new one, and capped
-- at the new burst: a user can at most have used the whole new budget.
--
-- Earlier versions of this script store the TAT alone ("1767225600000000");
-- such a value counts as computed with the current interval. They read
-- "<tat>.<interval>" as a number whose integer part is the TAT, so a
-- replica or web app not yet upgraded still spends from the same budget.
--
-- Only admitted requests spend budget, here or (ARGV[3]) elsewhere. A
-- charge spends as the requests would have when they were admitted: on
-- top of the stored TAT if that was still ahead of them (the bucket was
-- refilling, and its refill since is already counted), else from when
-- they began (the bucket was full then, and the refill since is theirs),
-- so requests admitted long ago cost nothing now. It is capped like a
-- rescaled TAT: at most the whole burst spent. A refusal writes only when
-- the stored state had to be re-expressed under the current policy or a
-- charge was added, and then only that, so that its retry time holds.
--
-- Returns {allowed (0|1), remaining, retry_after_us, reset_after_us}.

-- Redis < 5 replicates scripts verbatim, and TIME is not deterministic.
if redis.replicate_commands then
  redis.replicate_commands()
end

local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local charge = tonumber(ARGV[3]) or 0
local age = tonumber(ARGV[4]) or 0

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tat = now
local changed = false
-- The stored TAT in the current terms, in the past once the bucket is
-- full; nil without a key (full for at least as long as it expired).
local base = nil
local stored = redis.call("GET", KEYS[1])
if stored then
  local stored_tat, stored_interval = string.match(stored, "^(%d+)%.(%d+)$")
  if not stored_tat then
    -- An earlier version's TAT alone.
    stored_tat, stored_interval = stored, interval
  end
  stored_tat = tonumber(stored_tat) or now
  stored_interval = tonumber(stored_interval)
  if not stored_interval or stored_interval < 1 then
    stored_interval = interval
  end
  local owed = stored_tat - now
  if owed > 0 then
    if stored_interval ~= interval then
      -- Rounded up to the microsecond: never in the user's favour.
      owed = math.ceil(owed * interval / stored_interval)
      changed = true
    end
    if owed > burst * interval then
      owed = burst * interval
      changed = true
    end
    tat = now + owed
  end
  base = now + owed
end

if charge > 0 then
  local from = now - age
  if base and base > from then
    from = base
  end
  local charged = math.min(from + math.floor(charge), now + burst * interval)
  if charged > tat then
    tat = charged
    changed = true
  end
end

local function store(value_tat)
  redis.call("SET", KEYS[1], string.format("%.0f.%.0f", value_tat, interval),
    "PX", math.ceil((value_tat - now) / 1000))
end

local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  -- Refused: this request spends nothing. A rescaled TAT is stored all
  -- the same: left in the old terms, it would run out at the old pace, and
  -- the retry time given here would be wrong. So is a charge.
  if changed then
    store(tat)
  end
  return {0, 0, allow_at - now, tat - now}
end

store(new_tat)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
