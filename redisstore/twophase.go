package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/rate-sync/ratesync-go/driver"
)

// decideTwoPhase decides checks whose keys live in different Cluster slots,
// as groups of checks that share a slot (see docs/redis.md, "Redis
// Cluster"):
//
//  1. every group is peeked, in one pipeline: if one denies, the decision
//     is denied with those answers, and nothing was written anywhere;
//  2. every group is decided, in one pipeline: if all pass, the decision
//     is allowed;
//  3. otherwise (another client took the quota between 1 and 2), the
//     groups that passed are undone and answered by a peek.
//
// Between 2 and 3 other clients can see what the groups that passed took.
// The undo gives back no more than each group took (undo.lua).
func (s *Store) decideTwoPhase(ctx context.Context, checks []driver.Check, results []driver.Result, token string) (bool, error) {
	groups := s.groups(checks)
	sub := make([][]driver.Check, len(groups))
	for gi, g := range groups {
		sub[gi] = make([]driver.Check, len(g))
		for j, i := range g {
			sub[gi][j] = checks[i]
		}
	}
	answer := func(gi int, rs []driver.Result) {
		for j, i := range groups[gi] {
			results[i] = rs[j]
		}
	}

	// 1. Peek.
	calls := make([]*call, len(groups))
	for gi := range groups {
		keys, args := s.decideArgs(sub[gi], false, "")
		calls[gi] = &call{sc: &s.decide, keys: keys, args: args}
	}
	s.pipeline(ctx, calls, nil)
	allowed := true
	for gi, c := range calls {
		if c.err != nil {
			return false, c.err
		}
		rs := make([]driver.Result, len(sub[gi]))
		ok, err := parse(c.reply, sub[gi], rs, false, "")
		if err != nil {
			return false, err
		}
		answer(gi, rs)
		allowed = allowed && ok
	}
	if !allowed {
		return false, nil
	}
	if s.betweenPhases != nil {
		s.betweenPhases(1)
	}

	// 2. Decide. Once sent, the calls are waited for whatever ctx does, so
	// that what they took is known and can be given back.
	nctx := context.WithoutCancel(ctx)
	for gi := range groups {
		keys, args := s.decideArgs(sub[gi], true, token)
		args[0] = "2"
		calls[gi] = &call{sc: &s.decide, keys: keys, args: args}
	}
	s.pipeline(nctx, calls, nil)
	var passed []int
	var err error
	for gi, c := range calls {
		if c.err != nil {
			err = errors.Join(err, c.err)
			continue
		}
		rs := make([]driver.Result, len(sub[gi]))
		ok, perr := parse(c.reply, sub[gi], rs, true, token)
		if perr != nil {
			err = errors.Join(err, perr)
			continue
		}
		answer(gi, rs)
		if ok {
			passed = append(passed, gi)
		} else {
			allowed = false
		}
	}
	if err == nil && allowed {
		return true, nil
	}
	if s.betweenPhases != nil {
		s.betweenPhases(2)
	}

	// 3. Undo the groups that passed, then answer them by a peek.
	for _, gi := range passed {
		keys, args, uerr := s.undoArgs(sub[gi], calls[gi].reply, token)
		if uerr == nil {
			_, uerr = s.undo.run(nctx, s.c, keys, args)
		}
		if uerr != nil {
			err = errors.Join(err, fmt.Errorf("ratesync/redisstore: undo after a failed two-phase decision: %w", uerr))
		}
	}
	if err != nil {
		return false, err
	}
	for _, gi := range passed {
		rs := make([]driver.Result, len(sub[gi]))
		if err := s.peek(ctx, sub[gi], rs); err != nil {
			return false, err
		}
		answer(gi, rs)
	}
	return false, nil
}

// undoArgs builds the keys and arguments of undo.lua for a group of checks
// that decide.lua decided with mode "2" and reply.
func (s *Store) undoArgs(checks []driver.Check, reply any, token string) ([]string, []any, error) {
	r, _ := reply.([]any)
	if len(r) != 1+5*len(checks) {
		return nil, nil, fmt.Errorf("ratesync/redisstore: two-phase reply has %d values for %d checks", len(r), len(checks))
	}
	wrote := r[1+4*len(checks):]
	var keys []string
	args := []any{token}
	index := map[string]int{} // key -> position of its delta in args
	for i := range checks {
		c := &checks[i]
		k := s.key(c.Key, c.Policy.Kind)
		var delta int64
		if c.Policy.Kind == driver.TokenBucket {
			delta = int64(max(c.Cost, 1)) * int64(c.Policy.Interval())
		}
		if at, ok := index[k]; ok {
			args[at] = args[at].(int64) + delta
			continue
		}
		w, _ := wrote[i].(string)
		keys = append(keys, k)
		args = append(args, kindCode(c.Policy.Kind), w, delta)
		index[k] = len(args) - 1
	}
	return keys, args, nil
}
