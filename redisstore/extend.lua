-- ratesync extend: push a live lease's expiry to now + ttl.
-- KEYS[1] the leases key; ARGV[1] the lease id; ARGV[2] the ttl in ns;
-- ARGV[3], ARGV[4] as in decide.lua (test clock or "").
-- Returns 1 when the lease was live and is extended, 0 when it was lost.
local now_s, now_us
local ttl_floor = 1
if ARGV[3] ~= '' then
  now_s, now_us = tonumber(ARGV[3]), tonumber(ARGV[4])
  ttl_floor = 600000 -- keys expire on the real clock: see decide.lua
else
  local t = redis.call('TIME')
  now_s, now_us = tonumber(t[1]), tonumber(t[2])
end
local now_u = now_s * 1000000 + now_us
local k = KEYS[1]
redis.call('ZREMRANGEBYSCORE', k, '-inf', now_u)
if not redis.call('ZSCORE', k, ARGV[1]) then
  return 0
end
local exp = now_u + math.floor((tonumber(ARGV[2]) + 999) / 1000)
redis.call('ZADD', k, 'XX', exp, ARGV[1])
local last = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2])
redis.call('PEXPIRE', k, math.max(math.floor((last - now_u + 999) / 1000), ttl_floor))
return 1
