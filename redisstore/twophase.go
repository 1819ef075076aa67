package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/rate-sync/ratesync-go/driver"
)

// decideTwoPhase decides checks whose keys live in different Cluster slots:
// one decide call per slot, in order; when one denies, the calls that
// passed are undone and every group is answered as a peek. The outcome is
// all-or-nothing, but between the calls another client can see the units a
// passing group took.
func (s *Store) decideTwoPhase(ctx context.Context, checks []driver.Check, results []driver.Result, token string) (bool, error) {
	groups := s.groups(checks)
	sub := func(g []int) []driver.Check {
		cs := make([]driver.Check, len(g))
		for j, i := range g {
			cs[j] = checks[i]
		}
		return cs
	}
	var passed [][]int
	fail := func(err error) (bool, error) {
		for _, g := range passed {
			keys, args := s.decideArgs(sub(g), true, token)
			if _, uerr := s.undo.run(context.WithoutCancel(ctx), s.c, keys, args); uerr != nil {
				err = errors.Join(err, fmt.Errorf("ratesync/redisstore: undo after a failed two-phase decision: %w", uerr))
			}
		}
		return false, err
	}
	denied := -1
	for gi, g := range groups {
		cs := sub(g)
		keys, args := s.decideArgs(cs, true, token)
		reply, err := s.do(ctx, &s.decide, keys, args)
		if err != nil {
			return fail(err)
		}
		rs := make([]driver.Result, len(cs))
		ok, err := parse(reply, cs, rs, true, token)
		if err != nil {
			return fail(err)
		}
		for j, i := range g {
			results[i] = rs[j]
		}
		if !ok {
			denied = gi
			break
		}
		passed = append(passed, g)
	}
	if denied < 0 {
		return true, nil
	}
	if _, err := fail(nil); err != nil {
		return false, err
	}
	for gi, g := range groups {
		if gi == denied {
			continue
		}
		cs := sub(g)
		rs := make([]driver.Result, len(cs))
		if err := s.peek(ctx, cs, rs); err != nil {
			return false, err
		}
		for j, i := range g {
			results[i] = rs[j]
		}
	}
	return false, nil
}
