package httplimit

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/rate-sync/ratesync-go"
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
	pols := make(map[string]policy, len(parts))
	var hdr strings.Builder
	for i, p := range parts {
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
		pols[p.Name] = describe(p.Name, l.Rule())
		if i > 0 {
			hdr.WriteString(", ")
		}
		pols[p.Name].item(&hdr)
	}
	comp, err := reg.Composite(limiters, strategy)
	if err != nil {
		return nil, err
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
				setComposite(h, policyHeader, parts, pols, res, c.legacy)
				var violated []string
				if d, ok := res.Results[res.TriggeredBy]; ok && !d.Allowed {
					violated = []string{res.TriggeredBy}
				} else {
					for _, p := range parts {
						violated = append(violated, p.Name)
					}
				}
				deny(w, r, c, res.MostRestrictive, violated)
				return
			}
			if !c.noHeaders && !res.MostRestrictive.FailedOpen && res.Results != nil {
				setComposite(h, policyHeader, parts, pols, res, c.legacy)
			}
			if res.Lease.Held() {
				defer res.Lease.Release(context.WithoutCancel(r.Context()))
			}
			next.ServeHTTP(w, r)
		})
	}, nil
}

// setComposite writes one RateLimit item per part.
func setComposite(h http.Header, policyHeader []string, parts []Part, pols map[string]policy, res ratesync.CompositeResult, legacy bool) {
	h[hdrPolicy] = policyHeader
	var items []string
	for _, p := range parts {
		d, ok := res.Results[p.Name]
		if !ok {
			continue
		}
		tmp := http.Header{}
		pols[p.Name].set(tmp, nil, d, false)
		items = append(items, tmp.Get("RateLimit"))
	}
	h.Set("RateLimit", strings.Join(items, ", "))
	if legacy {
		tmp := http.Header{}
		pols[res.MostRestrictive.Limiter].set(tmp, nil, res.MostRestrictive, true)
		for _, k := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} {
			h.Set(k, tmp.Get(k))
		}
	}
}
