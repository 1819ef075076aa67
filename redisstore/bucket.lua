-- bucket decides one token-bucket check on key k at the time (now_s
-- seconds, now_ns nanoseconds within the second): a is the emission
-- interval in ns, b the burst, cost the tokens to take; with consume, a
-- passing check is stored. It returns the reply of a one-check decision:
-- all allowed, allowed, remaining, retry ns (-1: never), reset ns.
--
-- The theoretical arrival time is stored as a decimal string of
-- nanoseconds; only its difference to now, which is small, is computed, so
-- the arithmetic stays exact in Lua's doubles. ttl_floor is the least
-- lifetime of a key in ms.
local function bucket(k, consume, now_s, now_ns, ttl_floor, a, b, cost)
  local v = redis.call('GET', k)
  local d = 0
  if v then
    d = ((tonumber(string.sub(v, 1, -10)) or 0) - now_s) * 1000000000 + (tonumber(string.sub(v, -9)) - now_ns)
    if d < 0 then d = 0 end
  end
  local cap = b * a
  local avail = 0
  if cap > d then avail = math.floor((cap - d) / a) end
  if cost > b then return 0, 0, avail, -1, d end
  local nd = d + cost * a
  if nd > cap then return 0, 0, avail, nd - cap, d end
  if not consume then return 1, 1, avail, 0, d end
  local t = now_ns + nd
  local sec = math.floor(t / 1000000000)
  redis.call('SET', k, string.format('%d%09d', now_s + sec, t - sec * 1000000000), 'PX', math.max(math.floor((nd + 999999) / 1000000), ttl_floor))
  avail = 0
  if cap > nd then avail = math.floor((cap - nd) / a) end
  return 1, 1, avail, 0, nd
end

