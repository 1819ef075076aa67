package ratesync

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Strategy says how a Composite combines its parts.
type Strategy string

const (
	// AllMustPass admits only when every part admits, all or nothing in one
	// store call: a denial consumes nothing from any part. It is the
	// default; rate-sync's "most_restrictive" is the same strategy.
	AllMustPass Strategy = "all_must_pass"
	// AnyMustPass admits when any part admits: parts are tried in name
	// order, one decision each, and the first that admits is the only one
	// consumed.
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
	// Results holds each part's decision, by part name; each Decision's
	// Limiter is the part name, and its Allowed the composite's outcome.
	// With AnyMustPass it holds the parts that were tried.
	Results map[string]Decision
	// MostRestrictive is the decision of the binding part: when denied,
	// the part that denied (with the longest RetryAfter, when several did);
	// when allowed, the part with the least quota left.
	MostRestrictive Decision
	// TriggeredBy names the part that denied ("all" when AnyMustPass found
	// none that admits); empty when allowed.
	TriggeredBy string
	// Lease holds the concurrency slots taken; release it after the work.
	Lease *Lease
}

// Composite returns a composite of limiters, a map from part name (such as
// "by_ip") to limiter name (such as "login_ip"). Strategy empty means
// AllMustPass. With AllMustPass every limiter must use the same store, so
// that the decision is one atomic call.
func (r *Registry) Composite(limiters map[string]string, strategy Strategy) (*Composite, error) {
	if len(limiters) == 0 {
		return nil, &ConfigError{Msg: "composite: at least one limiter must be provided"}
	}
	switch strategy {
	case "", "most_restrictive":
		strategy = AllMustPass
	case AllMustPass, AnyMustPass:
	default:
		return nil, &ConfigError{Msg: fmt.Sprintf("composite: unknown strategy %q: use %q or %q", strategy, AllMustPass, AnyMustPass)}
	}
	parts := slices.Sorted(maps.Keys(limiters))
	stores := map[string][]string{} // store -> parts
	for _, part := range parts {
		l, err := r.Get(limiters[part])
		if err != nil {
			return nil, fmt.Errorf("composite part %q: %w", part, err)
		}
		stores[l.r.rule.Store] = append(stores[l.r.rule.Store], part)
	}
	if strategy == AllMustPass && len(stores) > 1 {
		var desc []string
		for _, s := range slices.Sorted(maps.Keys(stores)) {
			desc = append(desc, fmt.Sprintf("%s on store %q", strings.Join(stores[s], ", "), s))
		}
		return nil, &ConfigError{Msg: fmt.Sprintf("composite: parts %s: an all-or-nothing decision needs every part on one store", strings.Join(desc, "; "))}
	}
	return &Composite{reg: r, parts: parts, limiters: maps.Clone(limiters), strategy: strategy}, nil
}

// Check decides the composite for ids, a map from part name to
// identifier; it must have exactly the composite's parts. It makes one
// attempt and does not wait. WithCost takes that many units from every
// part (it must not exceed any part's burst or limit); WithTimeout does
// not apply. When the store cannot decide, the strictest
// failure policy of the parts answers (deny, then local, then allow); local
// decides every part in process.
func (c *Composite) Check(ctx context.Context, ids map[string]string, opts ...CallOption) (CompositeResult, error) {
	cost := 1
	if len(opts) > 0 { // apart, so that calls without options allocate nothing for them
		cost = applyOpts(callOpts{cost: 1}, opts).cost
	}
	if len(ids) != len(c.parts) {
		return CompositeResult{}, fmt.Errorf("ratesync: composite: identifiers for %v, want exactly %v", slices.Sorted(maps.Keys(ids)), c.parts)
	}
	lims := make([]*Limiter, len(c.parts))
	for i, part := range c.parts {
		id, ok := ids[part]
		if !ok {
			return CompositeResult{}, fmt.Errorf("ratesync: composite: no identifier for part %q (parts: %v)", part, c.parts)
		}
		l, err := c.reg.For(c.limiters[part], id)
		if err == nil {
			l, err = l.current() // the identifier's override, if any
		}
		if err != nil {
			return CompositeResult{}, fmt.Errorf("ratesync: composite part %q: %w", part, err)
		}
		if err := l.checkCost(cost); err != nil {
			return CompositeResult{}, fmt.Errorf("ratesync: composite part %q: %w", part, err)
		}
		lims[i] = l
	}
	if c.strategy == AnyMustPass {
		return c.any(ctx, lims, cost)
	}
	return c.all(ctx, lims, cost)
}

func (c *Composite) any(ctx context.Context, lims []*Limiter, cost int) (CompositeResult, error) {
	res := CompositeResult{Results: map[string]Decision{}, TriggeredBy: "all"}
	shadowOnly := true
	for i, l := range lims {
		d, err := l.Try(ctx, WithCost(cost))
		if err != nil {
			return res, err
		}
		d.Limiter = c.parts[i]
		res.Results[c.parts[i]] = d
		if d.Allowed && !d.Shadow { // a shadow part's would-be denial admits nothing
			res.Allowed, res.MostRestrictive, res.TriggeredBy, res.Lease = true, d, "", d.Lease
			return res, nil
		}
		if i == 0 || d.RetryAfter < res.MostRestrictive.RetryAfter {
			res.MostRestrictive = d // the part that frees first
		}
		shadowOnly = shadowOnly && l.r.rule.Shadow
	}
	if shadowOnly { // only shadow parts: measured, never denied
		res.Allowed, res.TriggeredBy, res.Lease = true, "", noLease
		res.MostRestrictive.Allowed, res.MostRestrictive.Shadow = true, true
	}
	return res, nil
}

func (c *Composite) all(ctx context.Context, lims []*Limiter, cost int) (CompositeResult, error) {
	res, denied, err := c.allOnce(ctx, lims, c.parts, cost)
	if err != nil || res.Allowed {
		return res, err
	}
	// Denied. When only shadow parts denied, the request passes: the
	// enforced parts are decided again without them (a second store call),
	// and the shadow parts' denials count as shadow denials.
	var enforced []*Limiter
	var names []string
	shadowOnly := false
	for i, l := range lims {
		switch {
		case !l.r.rule.Shadow:
			if denied[i] {
				return res, nil
			}
			enforced, names = append(enforced, l), append(names, c.parts[i])
		case denied[i]:
			shadowOnly = true
		}
	}
	if !shadowOnly {
		return res, nil
	}
	shadow := map[string]Decision{}
	for i, l := range lims {
		if !l.r.rule.Shadow {
			continue
		}
		d := res.Results[c.parts[i]]
		if denied[i] {
			l.r.m.shadowDenials.Add(1) // its denial is counted already
			d.Shadow = true
		}
		d.Allowed, d.Lease = true, noLease
		shadow[c.parts[i]] = d
	}
	out := CompositeResult{Allowed: true, Results: shadow, Lease: noLease}
	if len(enforced) > 0 {
		er, _, err := c.allOnce(ctx, enforced, names, cost)
		if er.Results == nil {
			er.Results = map[string]Decision{}
		}
		maps.Copy(er.Results, shadow)
		return er, err
	}
	for _, part := range slices.Sorted(maps.Keys(shadow)) {
		if d := shadow[part]; out.MostRestrictive.Limiter == "" || d.Remaining < out.MostRestrictive.Remaining {
			out.MostRestrictive = d
		}
	}
	return out, nil
}

// allOnce decides lims, the parts names, in one store call; it reports
// which parts denied.
func (c *Composite) allOnce(ctx context.Context, lims []*Limiter, names []string, cost int) (CompositeResult, []bool, error) {
	parts := make([]part, len(lims))
	for i, l := range lims {
		parts[i] = part{l.r, l.skey()}
		// A part's limiter may have moved to another store since the
		// composite was built (ConfigureLimiter, a reload): deciding it on
		// the first part's store would count it apart from its limiter.
		if s := l.r.rule.Store; s != lims[0].r.rule.Store {
			err := &ConfigError{Msg: fmt.Sprintf("composite: part %q (limiter %q) is now on store %q, part %q on store %q: an all-or-nothing decision needs every part on one store",
				names[i], l.r.name, s, names[0], lims[0].r.rule.Store)}
			return CompositeResult{}, nil, err
		}
	}
	dec, err := c.reg.decideParts(ctx, lims[0].r.handle(), parts, cost)
	if err != nil {
		err = fmt.Errorf("ratesync: composite %v: %w", c.parts, err)
		for i, l := range lims {
			c.observe(l, Decision{Limiter: names[i]}, err)
		}
		return CompositeResult{}, nil, err
	}
	defer dec.done()
	res := CompositeResult{Allowed: dec.allowed, Results: make(map[string]Decision, len(lims))}
	if dec.failedOpen {
		d := Decision{Allowed: true, FailedOpen: true, Lease: failedOpenLease}
		for i, l := range lims {
			d.Limiter = names[i]
			res.Results[names[i]] = d
			l.r.m.admitted()
			c.observe(l, d, nil)
		}
		res.MostRestrictive, res.Lease = res.Results[names[0]], failedOpenLease
		return res, nil, nil
	}
	denied := make([]bool, len(lims))
	bind := -1 // the binding part
	k := 0
	for i, l := range lims {
		n := len(l.r.policies)
		results := dec.results[k : k+n]
		k += n
		partAllowed := true
		for _, r := range results {
			partAllowed = partAllowed && r.Allowed
		}
		d := combine(results, l.r.policies, partAllowed)
		d.Allowed = dec.allowed // a part that would pass alone is still denied with the rest
		d.Limiter = names[i]
		d.Fallback = dec.fallback
		res.Results[names[i]] = d
		switch {
		case dec.allowed:
			l.r.m.admitted()
			if bind < 0 || d.Remaining < res.Results[names[bind]].Remaining {
				bind = i
			}
		case !partAllowed:
			// Only the parts that denied count a denial: the others
			// consumed nothing and were not limited.
			denied[i] = true
			l.r.m.denials.Add(1)
			if bind < 0 || d.RetryAfter > res.Results[names[bind]].RetryAfter {
				bind = i
			}
		}
		c.observe(l, d, nil)
	}
	if bind < 0 { // denied, yet no part reports a denial: trust the store
		bind = 0
	}
	res.MostRestrictive = res.Results[names[bind]]
	if dec.allowed {
		res.Lease = leaseOf(dec, parts)
	} else {
		res.TriggeredBy = names[bind]
	}
	return res, denied, nil
}

// observe reports one part's decision of a composite check, under the
// part's own rule and key.
func (c *Composite) observe(l *Limiter, d Decision, err error) {
	if obs := c.reg.observer; obs != nil {
		h := l.r.handle()
		obs(Event{Op: OpComposite, Limiter: l.r.name, Store: h.name, Engine: h.engine, Key: l.Key(), Decision: d, Err: err})
	}
}
