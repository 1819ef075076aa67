-- ratesync undo: give back what decide.lua consumed for one decision. Only
-- the two-phase path (a decision whose keys live in different Cluster
-- slots) uses it, for the slot groups that passed when a later one did not.
-- KEYS and ARGV as in decide.lua (ARGV[1] and ARGV[3..4] are ignored).
local token = ARGV[2]
local taken = {}
for i = 1, #KEYS do
  local base = 4 + (i - 1) * 4
  local kind, a, cost = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 4])
  local k = KEYS[i]
  if kind == 1 then
    local v = redis.call('GET', k)
    if v then
      -- tat -= cost * interval, on the decimal string of nanoseconds.
      local hi = tonumber(string.sub(v, 1, -10)) or 0
      local lo = tonumber(string.sub(v, -9)) - cost * a
      local borrow = math.floor(lo / 1000000000)
      redis.call('SET', k, string.format('%d%09d', hi + borrow, lo - borrow * 1000000000), 'KEEPTTL')
    end
  elseif kind == 2 then
    local off = taken[k] or 0
    for j = off + 1, off + cost do
      redis.call('ZREM', k, token .. ':' .. j)
    end
    taken[k] = off + cost
  else
    redis.call('ZREM', k, token)
  end
end
return 1
