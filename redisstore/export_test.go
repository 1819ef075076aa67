package redisstore

// WithClock makes scripts use now instead of the server's TIME (tests only).
var WithClock = withClock

// KeyOf returns the Redis key of a limiter key's policy state.
var KeyOf = (*Store).key

// WithDirect sets how many calls are sent directly before batching starts.
func WithDirect(n int) Option { return func(s *Store) { s.directMax = n } }
