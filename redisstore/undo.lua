-- ratesync undo: give back what decide.lua consumed for one decision. Only
-- the two-phase path (a decision whose keys live in different Cluster
-- slots) uses it, for the slot groups that passed when another did not.
-- KEYS     each key the decision wrote, once
-- ARGV[1]  the decision's token (its lease id)
-- ARGV[2..] three values per key: kind (1 bucket, 2 window, 3 leases),
--          what the decision wrote (decide.lua's report: the bucket's
--          value, the window's member) and, for a bucket, the nanoseconds
--          it moved the bucket's theoretical arrival time forward
--
-- A window gives back its member only while it is the newest one: the
-- units in a window are counted from the members at both ends (see
-- decide.lua), so a member removed from the middle would be counted still.
-- Returns the number of keys given back.
local token = ARGV[1]
local given = 0
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 3
  local kind, wrote, delta = tonumber(ARGV[base + 1]), ARGV[base + 2], tonumber(ARGV[base + 3])
  local k = KEYS[i]
  if kind == 1 then
    local v = redis.call('GET', k)
    if v then
      -- tat -= delta, on the decimal string of nanoseconds.
      local hi = tonumber(string.sub(v, 1, -10)) or 0
      local lo = tonumber(string.sub(v, -9)) - delta
      local borrow = math.floor(lo / 1000000000)
      redis.call('SET', k, string.format('%d%09d', hi + borrow, lo - borrow * 1000000000), 'KEEPTTL')
      given = given + 1
    end
  elseif kind == 2 then
    local newest = redis.call('ZRANGE', k, -1, -1)
    if newest[1] == wrote then
      redis.call('ZREM', k, wrote)
      given = given + 1
    end
  else
    given = given + redis.call('ZREM', k, token)
  end
end
return given
