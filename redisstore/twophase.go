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
//  2. the group with the least room (the likeliest to deny) is decided
//     alone: if it denies, nothing else was written;
//  3. the other groups are decided, in one pipeline: if all pass, the
//     decision is allowed;
//  4. otherwise (another client took the quota since the peeks), the groups
//     that passed are undone and answered by a peek.
//
// Between their decide and their undo, other clients can see what the
// groups that passed took. The undo gives back no more than each group
// took (undo.lua).
func (s *Store) decideTwoPhase(ctx context.Context, checks []driver.Check, results []driver.Result, token string) (bool, error) {
	groups := s.slotGroups(checks)
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

	// 1. Peek every group, and find the one with the least room.
	calls := make([]*call, len(groups))
	for gi := range groups {
		keys, args := s.decideArgs(sub[gi], false, "")
		calls[gi] = &call{sc: &s.decide, keys: keys, args: args}
	}
	s.pipeline(ctx, calls, nil)
	allowed := true
	tightest, least := 0, 0
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
		for j, r := range rs {
			if room := r.Remaining - max(sub[gi][j].Cost, 1); (gi == 0 && j == 0) || room < least {
				tightest, least = gi, room
			}
		}
	}
	if !allowed {
		return false, nil
	}
	if s.betweenPhases != nil {
		s.betweenPhases(1)
	}

	// 2 and 3. Decide the tightest group, then the others. Once sent, the
	// calls are waited for whatever ctx does, so that what they took is
	// known and can be given back.
	nctx := context.WithoutCancel(ctx)
	decideCall := func(gi int) *call {
		keys, args := s.decideArgs(sub[gi], true, token)
		args[0] = "2" // consume, and report what was written
		return &call{sc: &s.decide, keys: keys, args: args}
	}
	order := []int{tightest}
	calls = make([]*call, len(groups))
	calls[tightest] = decideCall(tightest)
	s.pipeline(nctx, calls[tightest:tightest+1], nil)
	var rest []*call
	if first := calls[tightest]; first.err == nil && isAllowed(first.reply) {
		for gi := range groups {
			if gi != tightest {
				calls[gi] = decideCall(gi)
				rest = append(rest, calls[gi])
				order = append(order, gi)
			}
		}
		s.pipeline(nctx, rest, nil)
	}
	var passed []int
	var err error
	for _, gi := range order {
		c := calls[gi]
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
	if len(passed) > 0 && s.betweenPhases != nil {
		s.betweenPhases(2)
	}

	// 4. Undo the groups that passed, then answer them by a peek.
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

// isAllowed reports whether a decide.lua reply says the decision passed.
func isAllowed(reply any) bool {
	r, _ := reply.([]any)
	return len(r) > 0 && toInt(r[0]) == 1
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

// peekGroups peeks checks whose keys live in different slots, one call per
// slot.
func (s *Store) peekGroups(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	for _, g := range s.slotGroups(checks) {
		cs := make([]driver.Check, len(g))
		for j, i := range g {
			cs[j] = checks[i]
		}
		rs := make([]driver.Result, len(cs))
		if err := s.peek(ctx, cs, rs); err != nil {
			return err
		}
		for j, i := range g {
			results[i] = rs[j]
		}
	}
	return nil
}
