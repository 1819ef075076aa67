-- ratesync release: remove one lease and tell waiters.
-- KEYS[1] the leases key; ARGV[1] the lease id; ARGV[2] the release
-- channel; ARGV[3] the message (the limiter key).
-- Returns 1 when the lease was held, 0 otherwise (already released or
-- expired): a release is idempotent.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return n
