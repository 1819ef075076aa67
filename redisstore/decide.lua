-- ratesync decide: apply every check of one decision, or none.
--
-- KEYS[i]  the Redis key of check i (all keys of one decision share a slot)
-- ARGV[1]  "1" to consume, "0" to peek, "2" to consume and tell how to
--          undo it (the two-phase path: see undo.lua)
-- ARGV[2]  a token unique to this decision: the lease id of concurrency
--          checks
-- ARGV[3]  "" to read the server clock (TIME); tests pass seconds here and
-- ARGV[4]  microseconds
-- ARGV[5..] four values per check: kind (1 bucket, 2 window, 3 leases),
--          a, b and cost, where (a, b) is (interval ns, burst),
--          (window ns, limit) or (lease ttl ns, max concurrent)
--
-- Returns {all allowed, then per check: allowed, remaining, retry ns,
-- reset ns}; retry -1 means never (cost above capacity). With ARGV[1] "2"
-- and all allowed, one more value per check follows: what the decision
-- wrote to its key (the bucket's new value, the window's new member; ""
-- for leases, which undo finds by the token).
--
-- Times: window and lease scores are microseconds since the epoch (exact
-- in a double); a bucket's theoretical arrival time is stored as a decimal
-- string of nanoseconds and only differences to now, which are small, are
-- computed, so the arithmetic stays exact.
--
-- A sliding window is a sorted set with one member per admission, whatever
-- its cost: "<cum>:<n>", where n is the units admitted and cum, 16 digits,
-- the units admitted on the key up to and including this admission, scored
-- by the admission time. The units in the window are then cum(newest) -
-- cum(oldest) + n(oldest), and the time of the j-th oldest unit is found by
-- a binary search on cum: no operation depends on the cost. Scores never
-- go below the newest one, so rank order is cum order even if the server's
-- clock steps back.
local consume = ARGV[1] ~= '0'
local report = ARGV[1] == '2'
local token = ARGV[2]
local now_s, now_us
-- ttl_floor: keys expire on the server's real clock, so under a test clock
-- they live at least ten minutes.
local ttl_floor = 1
if ARGV[3] ~= '' then
  now_s, now_us = tonumber(ARGV[3]), tonumber(ARGV[4])
  ttl_floor = 600000
else
  local t = redis.call('TIME')
  now_s, now_us = tonumber(t[1]), tonumber(t[2])
end
local now_ns = now_us * 1000 -- nanoseconds within the second
local now_u = now_s * 1000000 + now_us

-- Fast path: one token-bucket check, the most common decision, without
-- the general machinery below (same answers, about half the server time).
-- bucket is defined in bucket.lua, which the store puts before this file.
if #KEYS == 1 and ARGV[5] == '1' and not report then
  return {bucket(KEYS[1], consume, now_s, now_ns, ttl_floor, tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))}
end

local function ceil_div(a, b) return math.floor((a + b - 1) / b) end

-- tat_diff returns tat - now in ns for a stored tat string.
local function tat_diff(v)
  local hi = tonumber(string.sub(v, 1, -10)) or 0
  local lo = tonumber(string.sub(v, -9))
  return (hi - now_s) * 1000000000 + (lo - now_ns)
end

local function tat_string(d)
  local t = now_ns + d
  local s = math.floor(t / 1000000000)
  return string.format('%d%09d', now_s + s, t - s * 1000000000)
end

local n = #KEYS
local state = {}

-- load reads the state of key i once per script run, expiring old entries.
local function load(i, kind, a)
  local k = KEYS[i]
  if state[k] then return state[k] end
  local s = {}
  if kind == 1 then
    local v = redis.call('GET', k)
    s.d = 0
    if v then s.d = math.max(tat_diff(v), 0) end
    s.d0 = s.d
  elseif kind == 2 then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now_u - ceil_div(a, 1000))
    s.n, s.cum, s.add = 0, 0, 0
    local first = redis.call('ZRANGE', k, 0, 0)
    if #first > 0 then
      local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
      s.cum = tonumber(string.sub(last[1], 1, 16))
      s.base = tonumber(string.sub(first[1], 1, 16)) - tonumber(string.sub(first[1], 18))
      s.n = s.cum - s.base
      s.newest = tonumber(last[2])
    end
  else
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now_u)
    s.n = redis.call('ZCARD', k)
    s.adds = {}
    if s.n > 0 then
      s.first = tonumber(redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')[2])
      s.last = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2])
    end
    s.first0, s.last0 = s.first, s.last
  end
  state[k] = s
  return s
end

-- unit_time returns the admission time of the j-th oldest unit (1-based,
-- j <= s.n) in window k: the score of the oldest member whose cum reaches
-- s.base + j, found by a binary search on rank.
local function unit_time(k, s, j)
  local target = s.base + j
  local m = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if tonumber(string.sub(m[1], 1, 16)) >= target then return tonumber(m[2]) end
  local lo, hi = 1, redis.call('ZCARD', k) - 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(string.sub(redis.call('ZRANGE', k, mid, mid)[1], 1, 16)) >= target then
      hi = mid
    else
      lo = mid + 1
    end
  end
  return tonumber(redis.call('ZRANGE', k, lo, lo, 'WITHSCORES')[2])
end

-- check answers check i against s; with take, a passing check is applied
-- to s (written back by commit).
local function check(i, s, take)
  local base = 4 + (i - 1) * 4
  local kind, a, b, cost = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  if kind == 1 then
    local cap = b * a
    local function avail(d)
      local free = cap - d
      if free <= 0 then return 0 end
      return math.floor(free / a)
    end
    if cost > b then return 0, avail(s.d), -1, s.d end
    local nd = s.d + cost * a
    local allow_at = nd - cap
    if allow_at > 0 then return 0, avail(s.d), allow_at, s.d end
    if not take then return 1, avail(s.d), 0, s.d end
    s.d = nd
    s.dirty = true
    return 1, avail(nd), 0, nd
  elseif kind == 2 then
    local count = s.n + s.add
    local remaining = math.max(b - count, 0)
    local reset = 0
    if s.add > 0 then
      reset = a
    elseif count > 0 then
      reset = (s.newest - now_u) * 1000 + a
    end
    if cost > b then return 0, remaining, -1, reset end
    if count + cost > b then
      -- The (count + cost - b)-th oldest unit must leave the window.
      local j = count + cost - b
      local at = now_u
      if j <= s.n then at = unit_time(KEYS[i], s, j) end
      return 0, remaining, (at - now_u) * 1000 + a, reset
    end
    if not take then return 1, remaining, 0, reset end
    s.add = s.add + cost
    s.dirty = true
    return 1, b - count - cost, 0, a
  else
    local count = s.n + #s.adds
    local ok = count < b
    local remaining = math.max(b - count, 0)
    local retry, reset = 0, 0
    if count > 0 then
      reset = (s.last - now_u) * 1000
      if not ok then retry = (s.first - now_u) * 1000 end
    end
    if not ok or not take then return ok and 1 or 0, remaining, retry, reset end
    local exp = now_u + ceil_div(a, 1000)
    s.adds[#s.adds + 1] = exp
    if count == 0 or exp < s.first then s.first = exp end
    if count == 0 or exp > s.last then s.last = exp end
    s.dirty = true
    -- As the model: a grant that fills the last slot says when one frees.
    if count + 1 >= b then retry = (s.first - now_u) * 1000 end
    return 1, b - count - 1, retry, (s.last - now_u) * 1000
  end
end

local function kind_of(i) return tonumber(ARGV[4 + (i - 1) * 4 + 1]) end
local function a_of(i) return tonumber(ARGV[4 + (i - 1) * 4 + 2]) end

-- answer runs check i (taking it when take is true) and appends its four reply
-- values to out; it returns whether the check passed (1 or 0).
local function answer(out, i, take)
  local ok, rem, retry, reset = check(i, load(i, kind_of(i), a_of(i)), take)
  out[#out + 1] = ok
  out[#out + 1] = rem
  out[#out + 1] = retry
  out[#out + 1] = reset
  return ok
end

local out = {1}
local allowed = true
for i = 1, n do
  if answer(out, i, consume) == 0 then
    allowed = false
    if consume then break end
  end
end

if consume and allowed then
  local wrote = {}
  for i = 1, n do
    local k = KEYS[i]
    local s = state[k]
    if s.dirty then
      s.dirty = false
      local kind = kind_of(i)
      if kind == 1 then
        wrote[k] = tat_string(s.d)
        redis.call('SET', k, wrote[k], 'PX', math.max(ceil_div(s.d, 1000000), ttl_floor))
      elseif kind == 2 then
        local at = now_u
        if s.newest and s.newest > at then at = s.newest end
        wrote[k] = string.format('%016d:%d', s.cum + s.add, s.add)
        redis.call('ZADD', k, at, wrote[k])
        redis.call('PEXPIRE', k, math.max(ceil_div(a_of(i) + (at - now_u) * 1000, 1000000), ttl_floor))
      else
        for j = 1, #s.adds do
          redis.call('ZADD', k, s.adds[j], token)
        end
        redis.call('PEXPIRE', k, math.max(ceil_div((s.last - now_u) * 1000, 1000000), ttl_floor))
      end
    end
  end
  if report then
    for i = 1, n do out[#out + 1] = wrote[KEYS[i]] or '' end
  end
  return out
end

if not consume then
  out[1] = allowed and 1 or 0
  return out
end

-- Denied: nothing was written. Answer every check against the unchanged
-- state, as a peek would.
for _, s in pairs(state) do
  s.d, s.add, s.adds, s.first, s.last = s.d0, 0, {}, s.first0, s.last0
end
out = {0}
for i = 1, n do
  answer(out, i, false)
end
return out
