package httplimit

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

// Part is one part of a composite rule: a limiter and the key it limits by.
type Part struct {
	Name    string  // part name, used as the policy name ("by_ip")
	Limiter string  // limiter name in the registry ("login_ip")
	Key     KeyFunc // how to key a request for this part
}

// Composite returns middleware that decides several parts at once, such
// as a login limited per IP and per account: with ratesync.AllMustPass
// the decision is one all-or-nothing store call,
// and a denial consumes nothing from the other parts. The response carries
// one policy per part; a 429 names the part that denied in
// violated-policies.
func Composite(reg *ratesync.Registry, strategy ratesync.Strategy, parts []Part, opts ...Option) (func(http.Handler) http.Handler, error) {
	c := newConfig(opts)
	limiters := make(map[string]string, len(parts))
	pols := make(map[string]*ratefields.Policy, len(parts))
	var hdr strings.Builder
	for _, p := range parts {
		if p.Key == nil {
			return nil, fmt.Errorf("httplimit: composite part %q has no key function", p.Name)
		}
		if _, dup := limiters[p.Name]; dup {
			return nil, fmt.Errorf("httplimit: composite part %q given twice", p.Name)
		}
		l, err := reg.Get(p.Limiter)
		if err != nil {
			return nil, fmt.Errorf("httplimit: composite part %q: %w", p.Name, err)
		}
		limiters[p.Name] = p.Limiter
		pols[p.Name] = ratefields.Describe(p.Name, l.Rule())
		pols[p.Name].WriteItems(&hdr)
	}
	comp, err := reg.Composite(limiters, strategy)
	if err != nil {
		return nil, err // names the parts and their stores
	}
	policyHeader := []string{hdr.String()}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !c.applies(r.URL.Path) {
				next.ServeHTTP(w, r)
				return
			}
			ids := make(map[string]string, len(parts))
			for _, p := range parts {
				id, err := p.Key(r)
				if err != nil {
					c.keyError(w, r, err)
					return
				}
				ids[p.Name] = id
			}
			res, err := comp.Check(r.Context(), ids)
			if err != nil {
				c.failed(w, r, err)
				return
			}
			h := w.Header()
			if !res.Allowed {
				d := res.MostRestrictive
				var violated []*ratefields.Quota
				retry := d.RetryAfter
				if pd, ok := res.Results[res.TriggeredBy]; ok && !pd.Allowed && pd.RetryAfter > 0 {
					pol := pols[res.TriggeredBy]
					violated, retry = []*ratefields.Quota{pol.Binding(pd.Concurrency)}, pol.RetryAfter(pd)
				} else {
					for _, p := range parts {
						violated = append(violated, pols[p.Name].Binding(res.Results[p.Name].Concurrency))
					}
				}
				setComposite(h, policyHeader, parts, pols, res, retry, c.legacy)
				deny(w, r, c, d, retry, violated)
				return
			}
			if !c.noHeaders && !res.MostRestrictive.FailedOpen && res.Results != nil {
				setComposite(h, policyHeader, parts, pols, res, 0, c.legacy)
			}
			if res.Lease.Held() {
				start := time.Now()
				defer func() {
					held := time.Since(start)
					for _, pol := range pols {
						if pol.Conc != nil {
							pol.ObserveHold(held)
						}
					}
					res.Lease.Release(context.WithoutCancel(r.Context()))
				}()
			}
			next.ServeHTTP(w, r)
		})
	}, nil
}

// setComposite writes one RateLimit item per part; retry is the
// advertised retry of the part that denied.
func setComposite(h http.Header, policyHeader []string, parts []Part, pols map[string]*ratefields.Policy, res ratesync.CompositeResult, retry time.Duration, legacy bool) {
	h[hdrPolicy] = policyHeader
	var b []byte
	for _, p := range parts {
		d, ok := res.Results[p.Name]
		if !ok {
			continue
		}
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		pr := time.Duration(0)
		if p.Name == res.TriggeredBy {
			pr = retry
		} else if !d.Allowed && d.RetryAfter > 0 {
			pr = pols[p.Name].RetryAfter(d)
		}
		b = ratefields.AppendItem(b, pols[p.Name].Binding(d.Concurrency), d, ratefields.FieldTime(d, pr))
	}
	h[hdrRateLimit] = []string{string(b)}
	if legacy {
		d := res.MostRestrictive
		q := pols[d.Limiter].Binding(d.Concurrency)
		t := ratefields.FieldTime(d, retry)
		h.Set("X-RateLimit-Limit", strconv.FormatInt(q.Limit, 10))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(d.Remaining, 0)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(t, 10))
	}
}
