package server

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

func init() { ratesync.RegisterSection("rls", parseRLS) }

// RLSConfig is the [rls] table of a configuration file: the Envoy rate
// limit domains, each a tree of descriptor entries that name ratesync
// limiters. Every key of [rls] is a domain; its value is the list of the
// domain's top-level descriptors, nested as in envoyproxy/ratelimit's YAML:
//
//	[[rls.edge_proxy_per_ip]]        # domain "edge_proxy_per_ip"
//	key = "remote_address"           # matches ("remote_address", any value)
//	limiter = "per_ip"               # a [limiters.NAME]; the value is the identifier
//
//	[[rls.edge_proxy_per_ip]]
//	key = "remote_address"
//	value = "50.0.0.5"               # the exact value wins over the key alone
//	limiter = "blocked"
//
//	[[rls.messaging]]
//	key = "message_type"
//	value = "marketing"
//	  [[rls.messaging.descriptors]]  # nested: ("message_type", "marketing"), ("to_number", any)
//	  key = "to_number"
//	  limiter = "marketing_per_number"
//
// A descriptor has a key, optionally a value, nested descriptors, and at
// most one of limiter (a limiter of the configuration), unlimited = true
// (answered OK without a store call) and deny = true (answered OVER_LIMIT
// without a store call, envoyproxy/ratelimit's requests_per_unit = 0). A
// request's descriptor matches only where its entries end at one of those.
type RLSConfig struct {
	Domains map[string][]*Descriptor
}

// Descriptor is one entry of a domain's descriptor tree (see RLSConfig).
type Descriptor struct {
	Key         string
	Value       string // empty: any value
	Limiter     string // the limiter that decides a request matching here
	Unlimited   bool   // answered OK, with no store call
	Deny        bool   // answered OVER_LIMIT, with no store call
	Descriptors []*Descriptor
}

// maxDepth bounds the nesting of descriptors in a configuration.
const maxDepth = 16

var descriptorKeys = []string{"key", "value", "limiter", "unlimited", "deny", "descriptors"}

func parseRLS(c *ratesync.SectionConfig) (any, error) {
	cfg := &RLSConfig{Domains: map[string][]*Descriptor{}}
	for _, domain := range slices.Sorted(maps.Keys(c.Options)) {
		c.Has(domain)
		list, err := parseDescriptors(c.Options[domain], domain, 1)
		if err != nil {
			return nil, c.Errorf(domain, "%v", err)
		}
		cfg.Domains[domain] = list
	}
	return cfg, nil
}

// tableList returns v as a list of tables: [[arrays of tables]] and
// inline arrays of inline tables alike.
func tableList(v any) ([]map[string]any, bool) {
	switch v := v.(type) {
	case []map[string]any:
		return v, true
	case []any:
		out := make([]map[string]any, 0, len(v))
		for _, e := range v {
			t, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			out = append(out, t)
		}
		return out, true
	}
	return nil, false
}

func parseDescriptors(v any, path string, depth int) ([]*Descriptor, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%s: descriptors nested deeper than %d levels", path, maxDepth)
	}
	tables, ok := tableList(v)
	if !ok {
		return nil, fmt.Errorf("%s: must be a list of descriptor tables ([[rls.DOMAIN]] with key = ..., limiter = ...)", path)
	}
	seen := map[[2]string]bool{}
	var out []*Descriptor
	for i, t := range tables {
		where := fmt.Sprintf("%s[%d]", path, i)
		d := &Descriptor{}
		for _, k := range slices.Sorted(maps.Keys(t)) {
			switch k {
			case "rate_limit":
				return nil, fmt.Errorf("%s: rate_limit: name a limiter instead (limiter = \"NAME\", with the limit in [limiters.NAME])", where)
			case "shadow_mode":
				return nil, fmt.Errorf("%s: shadow_mode: set shadow = true in the limiter's [limiters.NAME] table instead", where)
			case "key", "value", "limiter":
				s, ok := t[k].(string)
				if !ok {
					return nil, fmt.Errorf("%s: %s must be a string", where, k)
				}
				switch k {
				case "key":
					d.Key = s
				case "value":
					d.Value = s
				default:
					d.Limiter = s
				}
			case "unlimited", "deny":
				b, ok := t[k].(bool)
				if !ok {
					return nil, fmt.Errorf("%s: %s must be true or false", where, k)
				}
				if k == "deny" {
					d.Deny = b
				} else {
					d.Unlimited = b
				}
			case "descriptors":
				sub, err := parseDescriptors(t[k], where+".descriptors", depth+1)
				if err != nil {
					return nil, err
				}
				d.Descriptors = sub
			default:
				return nil, fmt.Errorf("%s: unknown key %q: a descriptor has %s", where, k, strings.Join(descriptorKeys, ", "))
			}
		}
		switch {
		case d.Key == "":
			return nil, fmt.Errorf("%s: key is required", where)
		case btoi(d.Limiter != "")+btoi(d.Unlimited)+btoi(d.Deny) > 1:
			return nil, fmt.Errorf("%s: limiter, unlimited = true and deny = true exclude each other", where)
		case d.Limiter != "" && strings.ContainsAny(d.Limiter, ":{}"):
			return nil, fmt.Errorf("%s: limiter %q: name a [limiters.NAME] rule, not a key or template", where, d.Limiter)
		}
		kv := [2]string{d.Key, d.Value}
		if seen[kv] {
			if d.Value == "" {
				return nil, fmt.Errorf("%s: key %q appears twice at this level", where, d.Key)
			}
			return nil, fmt.Errorf("%s: key %q with value %q appears twice at this level", where, d.Key, d.Value)
		}
		seen[kv] = true
		out = append(out, d)
	}
	return out, nil
}

// RLSConfigOf returns the [rls] table of the configuration applied to reg,
// or nil when it had none.
func RLSConfigOf(reg *ratesync.Registry) *RLSConfig {
	c, _ := reg.Section("rls").(*RLSConfig)
	return c
}

// node is a descriptor of the match table: children indexed by key and
// value, and by key alone.
type node struct {
	d        *Descriptor
	limiter  string
	policy   *ratefields.Policy // how the limiter is advertised; nil without one
	exact    map[[2]string]*node
	anyValue map[string]*node
}

// table is a compiled [rls] table: what a request's descriptors match.
type table struct {
	src     *RLSConfig
	domains map[string]*node // the root of each domain (no descriptor of its own)
}

// compile builds the match table of cfg. rule returns the rule of a
// limiter name. A limiter must exist and have no max_concurrent (an RLS
// request has no release), and the limiters of one domain must share a
// store, so that every request is decided in one atomic store call.
func compile(cfg *RLSConfig, rule func(name string) (ratesync.Rule, bool)) (*table, error) {
	t := &table{src: cfg, domains: map[string]*node{}}
	if cfg == nil {
		return t, nil
	}
	for _, domain := range slices.Sorted(maps.Keys(cfg.Domains)) {
		stores := map[string]string{} // store -> a limiter on it
		root, err := compileLevel(&node{}, cfg.Domains[domain], domain, rule, stores)
		if err != nil {
			return nil, err
		}
		if len(stores) > 1 {
			var desc []string
			for _, s := range slices.Sorted(maps.Keys(stores)) {
				desc = append(desc, fmt.Sprintf("%s on store %q", stores[s], s))
			}
			return nil, fmt.Errorf("server: [rls.%s]: limiters %s: the limiters of a domain must share one store, so that a request is decided all or nothing in one store call", domain, strings.Join(desc, ", "))
		}
		t.domains[domain] = root
	}
	return t, nil
}

func compileLevel(n *node, list []*Descriptor, path string, rule func(string) (ratesync.Rule, bool), stores map[string]string) (*node, error) {
	for _, d := range list {
		c := &node{d: d, limiter: d.Limiter}
		where := path + "." + d.Key
		if d.Value != "" {
			where += "=" + d.Value
		}
		if d.Limiter != "" {
			r, ok := rule(d.Limiter)
			if !ok {
				return nil, fmt.Errorf("server: [rls.%s]: limiter %q is not configured", where, d.Limiter)
			}
			if r.MaxConcurrent > 0 {
				return nil, fmt.Errorf("server: [rls.%s]: limiter %q has max_concurrent, which needs a release that the rate limit protocol never sends: use a rate or window rule", where, d.Limiter)
			}
			stores[r.Store] = d.Limiter
			c.policy = describe(d.Limiter, r)
		}
		if _, err := compileLevel(c, d.Descriptors, where, rule, stores); err != nil {
			return nil, err
		}
		if d.Value != "" {
			if n.exact == nil {
				n.exact = map[[2]string]*node{}
			}
			n.exact[[2]string{d.Key, d.Value}] = c
		} else {
			if n.anyValue == nil {
				n.anyValue = map[string]*node{}
			}
			n.anyValue[d.Key] = c
		}
	}
	return n, nil
}

// match returns the node a descriptor's entries reach, as
// envoyproxy/ratelimit matches: one level per entry, the key with its value
// before the key alone, and a match only when the entries end at a
// descriptor that limits (or is unlimited).
func (t *table) match(domain string, keys, values []string) *node {
	n := t.domains[domain]
	if n == nil {
		return nil
	}
	for i := range keys {
		c := n.exact[[2]string{keys[i], values[i]}]
		if c == nil {
			c = n.anyValue[keys[i]]
		}
		if c == nil {
			return nil
		}
		n = c
	}
	if n.d == nil || n.limiter == "" && !n.d.Unlimited && !n.d.Deny {
		return nil
	}
	return n
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
