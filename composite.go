package ratesync

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/rate-sync/ratesync-go/driver"
)

// Strategy says how a Composite combines its parts.
type Strategy string

const (
	// MostRestrictive admits only when every part admits, all or nothing in
	// one store call; the result's MostRestrictive is the part with the least
	// quota left. It is the default.
	MostRestrictive Strategy = "most_restrictive"
	// AllMustPass admits like MostRestrictive; when denied, MostRestrictive
	// is the part that denied.
	AllMustPass Strategy = "all_must_pass"
	// AnyMustPass admits when any part admits: parts are tried in name
	// order and the first that admits is the only one consumed.
	AnyMustPass Strategy = "any_must_pass"
)

// Composite decides several limiters, each for its own identifier, as one
// request: for example login attempts per IP and per account. Build one
// with Registry.Composite. A Composite is safe for concurrent use.
type Composite struct {
	reg      *Registry
	parts    []string          // part names, sorted
	limiters map[string]string // part name -> limiter name
	strategy Strategy
}

// CompositeResult is the outcome of Composite.Check.
type CompositeResult struct {
	// Allowed reports whether the request was admitted.
	Allowed bool
	// Results holds each part's decision, by part name. With AnyMustPass it
	// holds the parts that were tried.
	Results map[string]Decision
	// MostRestrictive is the decision of the binding part (see Strategy).
	MostRestrictive Decision
	// TriggeredBy names the part that denied ("all" when AnyMustPass found
	// none that admits); empty when allowed.
	TriggeredBy string
	// Lease holds the concurrency slots taken; release it after the work.
	Lease *Lease
}

// Composite returns a composite of limiters, a map from part name (such as
// "by_ip") to limiter name (such as "login_ip"). Strategy empty means
// MostRestrictive. For an atomic decision every limiter must use the same
// store.
func (r *Registry) Composite(limiters map[string]string, strategy Strategy) (*Composite, error) {
	if len(limiters) == 0 {
		return nil, &ConfigError{Msg: "composite: at least one limiter must be provided"}
	}
	if strategy == "" {
		strategy = MostRestrictive
	}
	switch strategy {
	case MostRestrictive, AllMustPass, AnyMustPass:
	default:
		return nil, &ConfigError{Msg: fmt.Sprintf("composite: unknown strategy %q: use %q, %q or %q", strategy, MostRestrictive, AllMustPass, AnyMustPass)}
	}
	for part, name := range limiters {
		if _, err := r.Limiter(name); err != nil {
			return nil, fmt.Errorf("composite part %q: %w", part, err)
		}
	}
	return &Composite{reg: r, parts: slices.Sorted(maps.Keys(limiters)), limiters: maps.Clone(limiters), strategy: strategy}, nil
}

// Check decides the composite for ids, a map from part name to
// identifier; it must have exactly the composite's parts. It makes one
// attempt and does not wait.
func (c *Composite) Check(ctx context.Context, ids map[string]string) (CompositeResult, error) {
	if len(ids) != len(c.parts) {
		return CompositeResult{}, fmt.Errorf("ratesync: composite: identifiers for %v, want exactly %v", slices.Sorted(maps.Keys(ids)), c.parts)
	}
	lims := make([]*Limiter, len(c.parts))
	for i, part := range c.parts {
		id, ok := ids[part]
		if !ok {
			return CompositeResult{}, fmt.Errorf("ratesync: composite: no identifier for part %q (parts: %v)", part, c.parts)
		}
		l, err := c.reg.GetOrClone(c.limiters[part], id)
		if err != nil {
			return CompositeResult{}, fmt.Errorf("ratesync: composite part %q: %w", part, err)
		}
		lims[i] = l
	}
	if c.strategy == AnyMustPass {
		return c.any(ctx, lims)
	}
	return c.all(ctx, lims)
}

func (c *Composite) any(ctx context.Context, lims []*Limiter) (CompositeResult, error) {
	res := CompositeResult{Results: map[string]Decision{}, TriggeredBy: "all"}
	for i, l := range lims {
		d, err := l.Try(ctx)
		if err != nil {
			return res, err
		}
		d.Limiter = c.parts[i]
		res.Results[c.parts[i]] = d
		if d.Allowed {
			res.Allowed, res.MostRestrictive, res.TriggeredBy, res.Lease = true, d, "", d.Lease
			return res, nil
		}
		if i == 0 || d.RetryAfter < res.MostRestrictive.RetryAfter {
			res.MostRestrictive = d // the part that frees first
		}
	}
	return res, nil
}

func (c *Composite) all(ctx context.Context, lims []*Limiter) (CompositeResult, error) {
	h := lims[0].r.store.Load()
	var checks []driver.Check
	starts := make([]int, len(lims)+1) // part i owns checks[starts[i]:starts[i+1]]
	for i, l := range lims {
		if lh := l.r.store.Load(); lh != h {
			return CompositeResult{}, fmt.Errorf("ratesync: composite: parts %q and %q use different stores (%q, %q); an all-or-nothing decision needs one store",
				c.parts[0], c.parts[i], h.name, lh.name)
		}
		starts[i] = len(checks)
		for _, p := range l.r.policies {
			checks = append(checks, driver.Check{Key: l.skey(), Policy: p, Cost: 1})
		}
	}
	starts[len(lims)] = len(checks)
	results := make([]driver.Result, len(checks))
	allowed, err := h.store.Decide(ctx, checks, results)
	if err != nil {
		a, ferr := lims[0].storeFailure(ctx, checks[0].Key, 1, err)
		res := CompositeResult{Allowed: a.d.Allowed, MostRestrictive: a.d, Lease: a.d.Lease}
		c.observe(lims[0], res, ferr)
		return res, ferr
	}
	res := CompositeResult{Allowed: allowed, Results: make(map[string]Decision, len(lims))}
	lease := &Lease{}
	first := -1
	for i, l := range lims {
		part := results[starts[i]:starts[i+1]]
		partAllowed := true
		for _, r := range part {
			partAllowed = partAllowed && r.Allowed
		}
		d := combine(part, partAllowed)
		d.Allowed = allowed // a part that would pass alone is still denied with the rest
		d.Limiter = c.parts[i]
		res.Results[c.parts[i]] = d
		if allowed {
			l.r.m.admitted(0)
			for _, r := range part {
				if r.Lease != "" {
					lease.refs = append(lease.refs, leaseRef{rs: l.r, h: h, key: checks[starts[i]].Key, id: r.Lease})
					l.r.m.leaseTaken()
				}
			}
		} else {
			l.r.m.denials.Add(1)
			if !partAllowed && first < 0 {
				first = i
			}
		}
	}
	res.MostRestrictive = res.Results[c.parts[0]]
	for _, p := range c.parts[1:] {
		if d := res.Results[p]; d.Remaining < res.MostRestrictive.Remaining {
			res.MostRestrictive = d
		}
	}
	if allowed {
		res.Lease = lease
	} else if first >= 0 {
		res.TriggeredBy = c.parts[first]
		if c.strategy == AllMustPass {
			res.MostRestrictive = res.Results[c.parts[first]]
		}
	}
	c.observe(lims[0], res, nil)
	return res, nil
}

func (c *Composite) observe(l *Limiter, res CompositeResult, err error) {
	if obs := c.reg.observer; obs != nil {
		h := l.r.store.Load()
		obs(Event{Op: OpComposite, Limiter: l.r.name, Store: h.name, Engine: h.engine, Key: l.Key(), Decision: res.MostRestrictive, Err: err})
	}
}
