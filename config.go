package ratesync

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is a parsed rate-sync.toml: the same schema as rate-sync's.
//
//	[stores.NAME]    engine = "memory" | "redis" | "postgres", then engine options
//	[limiters.NAME]  store, algorithm, rate_per_second, burst, max_concurrent,
//	                 limit, window_seconds, timeout, fail_closed, lease_seconds
//	[http]           trusted_proxy_networks = ["10.0.0.0/8", ...]
//
// Strings may use ${VAR} and ${VAR:-default}, table names too. Apply a
// Config to a Registry with Registry.ApplyConfig.
type Config struct {
	File     string
	Stores   []*StoreConfig
	Limiters []LimiterConfig
	HTTP     HTTPConfig
}

// LimiterConfig is one [limiters.NAME] table, validated.
type LimiterConfig struct {
	Name string
	Rule Rule // normalized: defaults filled in
}

// HTTPConfig is the [http] table ([fastapi] is accepted as an alias, for
// files written for rate-sync).
type HTTPConfig struct {
	// TrustedProxyNetworks are the networks whose X-Forwarded-For and
	// X-Real-IP headers are believed (trusted_proxy_networks).
	TrustedProxyNetworks []netip.Prefix
}

var limiterKeys = []string{"store", "algorithm", "rate_per_second", "burst", "max_concurrent", "limit", "window_seconds", "timeout", "fail_closed", "on_store_error", "fallback_replicas", "lease_seconds"}

// readConfig reads and parses the configuration file at path.
func readConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ratesync: read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses a configuration; file names it in errors. It checks
// every limiter rule and that each limiter's store is defined in the same
// data. Store options are checked by their engine when the config is
// applied.
func ParseConfig(file string, data []byte) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{File: file, Line: pe.Position.Line, Msg: "TOML syntax: " + pe.Message}
		}
		return nil, &ConfigError{File: file, Msg: "TOML: " + err.Error()}
	}
	lines := indexLines(data)
	cfg := &Config{File: file}
	top := field{file: file}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		f := field{file: file, key: k, line: lines.line("", k), v: raw[k]}
		if f.line == 0 {
			f.line = lines.table(k)
		}
		switch k {
		case "stores":
			tables, err := f.tables()
			if err != nil {
				return nil, err
			}
			for _, name := range slices.Sorted(maps.Keys(tables)) {
				sc, err := parseStore(file, lines, name, tables[name])
				if err != nil {
					return nil, err
				}
				cfg.Stores = append(cfg.Stores, sc)
			}
		case "limiters":
			tables, err := f.tables()
			if err != nil {
				return nil, err
			}
			for _, name := range slices.Sorted(maps.Keys(tables)) {
				lc, err := parseLimiter(file, lines, name, tables[name])
				if err != nil {
					return nil, err
				}
				cfg.Limiters = append(cfg.Limiters, lc)
			}
		case "http", "fastapi":
			h, err := parseHTTP(file, lines, k, raw[k])
			if err != nil {
				return nil, err
			}
			cfg.HTTP = h
		default:
			top.key, top.line = k, f.line
			return nil, top.errorf("unknown top-level key: the file has [stores.NAME], [limiters.NAME] and [http] tables")
		}
	}
	seen := map[string]bool{}
	for _, s := range cfg.Stores {
		if seen[s.Name] {
			return nil, &ConfigError{File: file, Table: "stores." + s.Name, Msg: "defined twice (after ${VAR} expansion)"}
		}
		seen[s.Name] = true
	}
	seenL := map[string]bool{}
	for _, l := range cfg.Limiters {
		if seenL[l.Name] {
			return nil, &ConfigError{File: file, Table: "limiters." + l.Name, Msg: "defined twice (after ${VAR} expansion)"}
		}
		seenL[l.Name] = true
	}
	return cfg, nil
}

func expandName(file, kind, raw string, line int) (string, error) {
	name, err := expandEnv(raw)
	if err != nil {
		return "", &ConfigError{File: file, Table: kind + "." + raw, Line: line, Msg: "table name", Err: err}
	}
	if err := checkName(strings.TrimSuffix(kind, "s"), name); err != nil {
		e := err.(*ConfigError)
		e.File, e.Table, e.Line = file, kind+"."+raw, line
		return "", e
	}
	return name, nil
}

func parseStore(file string, lines *lineIndex, raw string, v any) (*StoreConfig, error) {
	line := lines.table("stores." + raw)
	name, err := expandName(file, "stores", raw, line)
	if err != nil {
		return nil, err
	}
	t, ok := v.(map[string]any)
	if !ok {
		return nil, &ConfigError{File: file, Table: "stores." + raw, Line: line, Msg: "must be a table"}
	}
	sc := &StoreConfig{Name: name, Options: maps.Clone(t), file: file, raw: raw, lines: lines}
	delete(sc.Options, "engine")
	ev, ok := t["engine"]
	if !ok {
		return nil, sc.Errorf("engine", "required: one of %s", strings.Join(Engines(), ", "))
	}
	sc.Engine, err = sc.fieldOf("engine", ev).str()
	if err != nil {
		return nil, err
	}
	return sc, nil
}

func parseLimiter(file string, lines *lineIndex, raw string, v any) (LimiterConfig, error) {
	table := "limiters." + raw
	line := lines.table(table)
	name, err := expandName(file, "limiters", raw, line)
	if err != nil {
		return LimiterConfig{}, err
	}
	t, ok := v.(map[string]any)
	if !ok {
		return LimiterConfig{}, &ConfigError{File: file, Table: table, Line: line, Msg: "must be a table"}
	}
	var r Rule
	var failClosed *field // rate-sync's fail_closed, reconciled with on_store_error below
	for _, k := range slices.Sorted(maps.Keys(t)) {
		f := field{file: file, table: "limiters." + name, key: k, line: lines.line(table, k), v: t[k]}
		var err error
		switch k {
		case "store":
			r.Store, err = f.str()
		case "algorithm":
			var s string
			s, err = f.str()
			switch s {
			case "token_bucket":
				r.Algorithm = TokenBucket
			case "sliding_window":
				r.Algorithm = SlidingWindow
			default:
				err = f.errorf("unknown algorithm %q: use %q or %q", s, TokenBucket, SlidingWindow)
			}
		case "rate_per_second":
			r.RatePerSecond, err = f.float()
		case "burst":
			r.Burst, err = f.int()
		case "max_concurrent":
			r.MaxConcurrent, err = f.int()
		case "limit":
			r.Limit, err = f.int()
		case "window_seconds":
			r.Window, err = f.seconds()
		case "timeout":
			r.Timeout, err = f.seconds()
		case "fail_closed":
			_, err = f.bool()
			failClosed = &f
		case "on_store_error":
			var v string
			v, err = f.str()
			r.OnStoreError = FailurePolicy(v)
		case "fallback_replicas":
			r.FallbackReplicas, err = f.int()
		case "lease_seconds":
			r.LeaseTTL, err = f.seconds()
		default:
			return LimiterConfig{}, f.errorf("unknown key: a limiter has %s", strings.Join(limiterKeys, ", "))
		}
		if err != nil {
			return LimiterConfig{}, err
		}
		// Zero is "unset" in Rule, so reject explicit zeros here, where the
		// user wrote them.
		if isZeroNumber(k, r) {
			return LimiterConfig{}, f.errorf("must be > 0, got 0")
		}
	}
	if failClosed != nil {
		closed, _ := failClosed.bool()
		p := Allow
		if closed {
			p = Deny
		}
		if r.OnStoreError != "" && r.OnStoreError != p {
			return LimiterConfig{}, failClosed.errorf("fail_closed = %v means on_store_error = %q; it contradicts on_store_error = %q: keep one", closed, p, r.OnStoreError)
		}
		r.OnStoreError = p
	}
	nr, err := r.normalize()
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File, ce.Table = file, "limiters."+name
			ce.Line = lines.line(table, ce.Key)
			if ce.Line == 0 {
				ce.Line = line
			}
		}
		return LimiterConfig{}, err
	}
	return LimiterConfig{Name: name, Rule: nr}, nil
}

func isZeroNumber(key string, r Rule) bool {
	switch key {
	case "rate_per_second":
		return r.RatePerSecond == 0
	case "burst":
		return r.Burst == 0
	case "max_concurrent":
		return r.MaxConcurrent == 0
	case "limit":
		return r.Limit == 0
	case "window_seconds":
		return r.Window == 0
	case "lease_seconds":
		return r.LeaseTTL == 0
	case "fallback_replicas":
		return r.FallbackReplicas == 0
	}
	return false
}

func parseHTTP(file string, lines *lineIndex, table string, v any) (HTTPConfig, error) {
	var h HTTPConfig
	t, ok := v.(map[string]any)
	if !ok {
		return h, &ConfigError{File: file, Table: table, Line: lines.table(table), Msg: "must be a table"}
	}
	for _, k := range slices.Sorted(maps.Keys(t)) {
		f := field{file: file, table: table, key: k, line: lines.line(table, k), v: t[k]}
		if k != "trusted_proxy_networks" {
			return h, f.errorf("unknown key: [%s] has trusted_proxy_networks", table)
		}
		nets, err := f.strings()
		if err != nil {
			return h, err
		}
		for _, n := range nets {
			p, err := parsePrefix(n)
			if err != nil {
				return h, f.errorf("%q is not a network: write a CIDR such as \"10.0.0.0/8\" or an address", n)
			}
			h.TrustedProxyNetworks = append(h.TrustedProxyNetworks, p)
		}
	}
	return h, nil
}

// parsePrefix parses a CIDR, or a single address as a one-address network.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// LoadConfig reads the file at path and applies it (see ApplyConfig).
func (r *Registry) LoadConfig(path string) error {
	cfg, err := readConfig(path)
	if err != nil {
		return err
	}
	return r.ApplyConfig(cfg)
}

// ApplyConfig opens the config's stores and adds its stores and limiters,
// replacing those of the same names. It is all or nothing: on error the
// registry is unchanged. A limiter may use a store of the config or one
// already in the registry.
func (r *Registry) ApplyConfig(cfg *Config) error {
	opened := map[string]*storeHandle{}
	fail := func(err error) error {
		for _, h := range opened {
			h.close()
		}
		return err
	}
	for _, sc := range cfg.Stores {
		h, err := r.openStore(sc)
		if err != nil {
			return fail(err)
		}
		opened[sc.Name] = h
	}
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return fail(ErrClosed)
	}
	rules := map[string]*ruleState{}
	for _, lc := range cfg.Limiters {
		h := opened[lc.Rule.Store]
		if h == nil {
			h = r.stores[lc.Rule.Store]
		}
		if h == nil {
			r.mu.Unlock()
			names := slices.Sorted(maps.Keys(opened))
			for n := range r.stores {
				if opened[n] == nil {
					names = append(names, n)
				}
			}
			list := strings.Join(names, ", ")
			if list == "" {
				list = "none"
			}
			return fail(&ConfigError{File: cfg.File, Table: "limiters." + lc.Name, Key: "store",
				Msg: fmt.Sprintf("store %q is not defined (stores: %s)", lc.Rule.Store, list), Err: ErrStoreNotFound})
		}
		rules[lc.Name] = r.newRuleState(lc.Name, lc.Rule, h)
	}
	old := map[*storeHandle]time.Duration{} // replaced stores, with their longest lease TTL
	for name, h := range opened {
		o := r.stores[name]
		r.stores[name] = h
		r.subscribe(h)
		ttl := time.Duration(0)
		for _, rs := range r.rules {
			if rs.rule.Store == name {
				rs.bind.Store(rs.bindTo(h))
				ttl = max(ttl, rs.rule.LeaseTTL)
			}
		}
		if o != nil {
			old[o] = ttl
		}
	}
	maps.Copy(r.rules, rules)
	if len(cfg.HTTP.TrustedProxyNetworks) > 0 {
		r.http = cfg.HTTP
	}
	r.mu.Unlock()
	for h, ttl := range old {
		h.retire(ttl)
	}
	return nil
}

// field is one configuration value with where it came from, converted on
// demand to the type a key needs. Strings are expanded (${VAR}) first, so a
// number may come from the environment: rate_per_second = "${RATE:-10}".
type field struct {
	file, table, key string
	line             int
	v                any
}

func (f field) errorf(format string, args ...any) error {
	return &ConfigError{File: f.file, Table: f.table, Key: f.key, Line: f.line, Msg: fmt.Sprintf(format, args...)}
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func (f field) expanded() (string, bool, error) {
	s, ok := f.v.(string)
	if !ok {
		return "", false, nil
	}
	e, err := expandEnv(s)
	if err != nil {
		return "", true, &ConfigError{File: f.file, Table: f.table, Key: f.key, Line: f.line, Msg: err.Error()}
	}
	return e, true, nil
}

func (f field) str() (string, error) {
	s, ok, err := f.expanded()
	if err != nil {
		return "", err
	}
	if !ok {
		return "", f.errorf("want a string, got %s", tomlType(f.v))
	}
	return s, nil
}

func (f field) float() (float64, error) {
	switch v := f.v.(type) {
	case int64:
		return float64(v), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, f.errorf("want a finite number, got %v", v)
		}
		return v, nil
	}
	s, ok, err := f.expanded()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, f.errorf("want a number, got %s", tomlType(f.v))
	}
	x, perr := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if perr != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, f.errorf("want a number, got %q", s)
	}
	return x, nil
}

func (f field) int() (int, error) {
	switch v := f.v.(type) {
	case int64:
		if v > math.MaxInt32 || v < math.MinInt32 {
			return 0, f.errorf("%d is out of range", v)
		}
		return int(v), nil
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > math.MaxInt32 {
			return 0, f.errorf("want a whole number, got %v", v)
		}
		return int(v), nil
	}
	s, ok, err := f.expanded()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, f.errorf("want an integer, got %s", tomlType(f.v))
	}
	x, perr := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if perr != nil {
		return 0, f.errorf("want an integer, got %q", s)
	}
	return int(x), nil
}

func (f field) bool() (bool, error) {
	if v, ok := f.v.(bool); ok {
		return v, nil
	}
	s, ok, err := f.expanded()
	if err != nil {
		return false, err
	}
	if !ok {
		return false, f.errorf("want true or false, got %s", tomlType(f.v))
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, f.errorf("want true or false, got %q", s)
}

// maxSeconds bounds durations to keep nanosecond arithmetic far from
// overflow (about 31 years).
const maxSeconds = 1e9

func (f field) seconds() (time.Duration, error) {
	x, err := f.float()
	if err != nil {
		return 0, err
	}
	if x < 0 {
		return 0, f.errorf("must be >= 0 seconds, got %v", x)
	}
	if x > maxSeconds {
		return 0, f.errorf("must be at most %g seconds, got %v", maxSeconds, x)
	}
	d := time.Duration(math.Round(x * 1e9))
	if x > 0 && d == 0 {
		return 0, f.errorf("must be at least 1ns, got %v", x)
	}
	return d, nil
}

func (f field) strings() ([]string, error) {
	list, ok := f.v.([]any)
	if !ok {
		return nil, f.errorf("want an array of strings, got %s", tomlType(f.v))
	}
	out := make([]string, 0, len(list))
	for i, item := range list {
		g := f
		g.v = item
		s, err := g.str()
		if err != nil {
			return nil, f.errorf("item %d: want a string, got %s", i, tomlType(item))
		}
		out = append(out, s)
	}
	return out, nil
}

func (f field) tables() (map[string]any, error) {
	t, ok := f.v.(map[string]any)
	if !ok {
		return nil, f.errorf("want tables like [%s.NAME], got %s", f.key, tomlType(f.v))
	}
	return t, nil
}

// lineIndex finds the line of a table header or of a key in a table, for
// error messages. It understands the common layout of config files (one
// [table] header, then key = value lines), which is enough to point at a
// line; when it cannot, errors simply have no line.
type lineIndex struct {
	tables map[string]int
	keys   map[string]int
}

func (ix *lineIndex) table(t string) int {
	if ix == nil {
		return 0
	}
	return ix.tables[t]
}

func (ix *lineIndex) line(table, key string) int {
	if ix == nil {
		return 0
	}
	return ix.keys[table+"\x00"+key]
}

func indexLines(data []byte) *lineIndex {
	ix := &lineIndex{tables: map[string]int{}, keys: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	table := ""
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "[["):
			table = ""
		case strings.HasPrefix(line, "["):
			end := strings.LastIndexByte(line, ']')
			if end < 0 {
				continue
			}
			table = normalizeHeader(line[1:end])
			if _, ok := ix.tables[table]; !ok {
				ix.tables[table] = n
			}
		default:
			k, _, ok := strings.Cut(line, "=")
			if !ok || strings.HasPrefix(line, "#") {
				continue
			}
			k = strings.Trim(strings.TrimSpace(k), `"'`)
			if _, seen := ix.keys[table+"\x00"+k]; !seen {
				ix.keys[table+"\x00"+k] = n
			}
		}
	}
	return ix
}

// normalizeHeader turns `limiters . "api"` into `limiters.api`.
func normalizeHeader(h string) string {
	var parts []string
	for _, p := range splitDotted(h) {
		parts = append(parts, strings.Trim(strings.TrimSpace(p), `"'`))
	}
	return strings.Join(parts, ".")
}

// splitDotted splits a dotted key on dots outside quotes.
func splitDotted(s string) []string {
	var parts []string
	var q byte
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case q != 0 && c == q:
			q = 0
		case q == 0 && (c == '"' || c == '\''):
			q = c
		case q == 0 && c == '.':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}
