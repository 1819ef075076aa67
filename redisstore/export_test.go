package redisstore

import "github.com/rate-sync/ratesync-go/driver"

// WithClock makes scripts use now instead of the server's TIME (tests only).
var WithClock = withClock

// KeyOf returns the Redis key of a limiter key's policy state.
var KeyOf = (*Store).key

// WithDirect sets how many calls are sent directly before batching starts.
func WithDirect(n int) Option { return func(s *Store) { s.directMax = n } }

// DecideBatch decides each of decisions as the store's workers decide
// decisions that arrive together (one batch script call on one server)
// and returns each one's outcome.
func DecideBatch(s *Store, decisions [][]driver.Check) (oks []bool, results [][]driver.Result, errs []error) {
	calls := make([]*call, len(decisions))
	tokens := make([]string, len(decisions))
	for i, checks := range decisions {
		if needsToken(checks) {
			tokens[i] = driver.NewLeaseID()
		}
		keys, args := s.decideArgs(checks, true, tokens[i])
		calls[i] = &call{sc: &s.decide, keys: keys, args: args}
	}
	s.exec(calls, nil)
	oks, results, errs = make([]bool, len(decisions)), make([][]driver.Result, len(decisions)), make([]error, len(decisions))
	for i, c := range calls {
		results[i] = make([]driver.Result, len(decisions[i]))
		if errs[i] = classify(c.err); errs[i] == nil {
			oks[i], errs[i] = parse(c.reply, decisions[i], results[i], true, tokens[i])
		}
	}
	return oks, results, errs
}

// WithBetweenPhases runs fn in a two-phase decision after the peeks (phase
// 1) and, when a group denied, before the groups that passed are undone
// (phase 2).
func WithBetweenPhases(fn func(phase int)) Option { return func(s *Store) { s.betweenPhases = fn } }

// RecordPrefix stores in p the key prefix that the options before it set.
func RecordPrefix(p *string) Option { return func(s *Store) { *p = s.prefix } }

// WithGeneralPaths turns off the single-bucket compact paths (decide.lua's
// fast path and the batch's compact form): every decision goes through
// the general script.
func WithGeneralPaths() Option { return func(s *Store) { s.general = true } }

// DecideBatchErrs is DecideBatch returning only the errors.
func DecideBatchErrs(s *Store, decisions [][]driver.Check) []error {
	_, _, errs := DecideBatch(s, decisions)
	return errs
}
