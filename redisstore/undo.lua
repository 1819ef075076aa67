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
-- A bucket or a window is given back only while the key still holds what
-- the decision wrote (for a window: while its member is the newest).
-- After another write, what the decision took may already be gone (the
-- bucket refilled before the other decision, which then started from
-- now), and a window's units are counted from the members at both ends
-- (see decide.lua), so a member removed from the middle would be counted
-- still: the undo then gives nothing back, never more than was taken. A
-- lease is removed by its id whatever happened.
-- Returns the number of keys given back.
local token = ARGV[1]
local given = 0
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 3
  local kind, wrote, delta = tonumber(ARGV[base + 1]), ARGV[base + 2], tonumber(ARGV[base + 3])
  local k = KEYS[i]
  if kind == 1 then
    if redis.call('GET', k) == wrote then
      -- tat -= delta, on the decimal string of nanoseconds.
      local hi = tonumber(string.sub(wrote, 1, -10)) or 0
      local lo = tonumber(string.sub(wrote, -9)) - delta
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
