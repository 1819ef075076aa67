package ratesync

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is a parsed rate-sync.toml: the same schema as rate-sync's.
//
//	[stores.NAME]    engine = "memory" | "redis" | "postgres", then engine options
//	[limiters.NAME]  store, algorithm, rate_per_second, burst, max_concurrent,
//	                 limit, window_seconds, timeout, fail_closed, lease_seconds
//	[http]           read by package httplimit (see RegisterSection)
//
// Strings may use ${VAR} and ${VAR:-default}, table names too. Apply a
// Config to a Registry with Registry.ApplyConfig.
type Config struct {
	File     string
	Stores   []*StoreConfig
	Limiters []LimiterConfig
	// Sections holds what the registered Section of each other top-level
	// table returned, by the table's registered name ("http").
	Sections map[string]any
}

// LimiterConfig is one [limiters.NAME] table, validated.
type LimiterConfig struct {
	Name string
	Rule Rule // normalized: defaults filled in
	// Overrides are the rules of particular identifiers, from the
	// limiter's overrides table: the identifier given to For (or a path of
	// identifiers joined by ':', or a template's values in order), to the
	// limiter's rule with the override's keys changed. Same store and key:
	// an override changes limits, not where the state is.
	Overrides map[string]Rule

	storeLine int // line of the store key, for the error when it names no store
}

// A Section reads a top-level table of configuration files that a package
// other than this one defines, as httplimit does with [http]. It returns
// the table's settings, which Registry.Section gives back once the
// configuration is applied. It reads the table with the accessors of
// SectionConfig; a key it does not read is an error that names it.
type Section func(cfg *SectionConfig) (any, error)

var (
	sectionsMu sync.RWMutex
	sections   = map[string]Section{}
)

// knownSections names the package that reads each top-level table of this
// module, for the error when that package is not linked in.
var knownSections = map[string]string{"http": "github.com/rate-sync/ratesync-go/httplimit"}

// sectionAliases maps other names of a top-level table to its own:
// rate-sync calls [http] [fastapi].
var sectionAliases = map[string]string{"fastapi": "http"}

// RegisterSection makes the top-level table [name] of configuration files
// readable, by parse. Packages call it from init, as store packages call
// RegisterEngine; a file with a table no package registered is an error
// (that says which import to add, for the tables of this module). It
// panics if name is empty, "stores", "limiters" or already registered, or
// parse is nil.
func RegisterSection(name string, parse Section) {
	sectionsMu.Lock()
	defer sectionsMu.Unlock()
	switch {
	case name == "" || parse == nil:
		panic("ratesync: RegisterSection needs a name and a function")
	case name == "stores" || name == "limiters" || sectionAliases[name] != "":
		panic("ratesync: RegisterSection: [" + name + "] is a table of the root package")
	case sections[name] != nil:
		panic("ratesync: RegisterSection called twice for [" + name + "]")
	}
	sections[name] = parse
}

// SectionConfig is one top-level table of a configuration file, given to
// the Section registered for it. Its accessors expand ${VAR} references,
// convert the value to the type asked for, and return errors that name the
// file, table, key and line.
type SectionConfig struct {
	Name    string         // the registered name, also when the file used an alias
	Options map[string]any // raw values

	file  string
	raw   string // the table's name as written
	lines *lineIndex
	used  map[string]bool
}

func (c *SectionConfig) field(key string) (field, bool) {
	if c.used != nil {
		c.used[key] = true
	}
	v, ok := c.Options[key]
	raw := c.raw
	if raw == "" {
		raw = c.Name
	}
	return field{file: c.file, table: raw, key: key, line: c.lines.line(raw, key), v: v}, ok
}

// Has reports whether the option key is set (and marks it as known).
func (c *SectionConfig) Has(key string) bool {
	_, ok := c.field(key)
	return ok
}

// String returns the string option key, or def when it is not set.
func (c *SectionConfig) String(key, def string) (string, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.str()
}

// Int returns the integer option key, or def when it is not set.
func (c *SectionConfig) Int(key string, def int) (int, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.int()
}

// Float returns the number option key, or def when it is not set.
func (c *SectionConfig) Float(key string, def float64) (float64, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.float()
}

// Bool returns the boolean option key, or def when it is not set.
func (c *SectionConfig) Bool(key string, def bool) (bool, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.bool()
}

// Seconds returns the option key, a number of seconds, as a duration, or
// def when it is not set.
func (c *SectionConfig) Seconds(key string, def time.Duration) (time.Duration, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.seconds()
}

// Strings returns the option key, a list of strings, or nil when it is not
// set.
func (c *SectionConfig) Strings(key string) ([]string, error) {
	f, ok := c.field(key)
	if !ok {
		return nil, nil
	}
	return f.strings()
}

// Errorf returns a *ConfigError about the option key of this table.
func (c *SectionConfig) Errorf(key, format string, args ...any) error {
	f, _ := c.field(key)
	return f.errorf(format, args...)
}

// parseSection reads the top-level table k (as written) with its
// registered Section.
func parseSection(file string, lines *lineIndex, k string, v any, line int) (string, any, error) {
	name := k
	if a, ok := sectionAliases[k]; ok {
		name = a
	}
	sectionsMu.RLock()
	parse := sections[name]
	sectionsMu.RUnlock()
	if parse == nil {
		pkg, ok := knownSections[name]
		if !ok {
			return "", nil, unknownTopLevel(file, k, v, line)
		}
		return "", nil, &ConfigError{File: file, Table: k, Line: line,
			Msg: fmt.Sprintf("read by package %s, which this program does not import: add import _ %q", path.Base(pkg), pkg)}
	}
	t, ok := v.(map[string]any)
	if !ok {
		return "", nil, &ConfigError{File: file, Table: k, Line: line, Msg: "must be a table"}
	}
	sc := &SectionConfig{Name: name, Options: t, file: file, raw: k, lines: lines, used: map[string]bool{}}
	out, err := parse(sc)
	if err != nil {
		return "", nil, err
	}
	for _, key := range slices.Sorted(maps.Keys(t)) {
		if !sc.used[key] {
			known := slices.Sorted(maps.Keys(sc.used))
			return "", nil, sc.Errorf(key, "unknown key: [%s] has %s", k, strings.Join(known, ", "))
		}
	}
	return name, out, nil
}

// unknownTopLevel is the error of a top-level key nothing reads, with the
// table the user probably meant ([limiter.api]: [limiters.api]).
func unknownTopLevel(file, k string, v any, line int) error {
	names := []string{"stores", "limiters"}
	sectionsMu.RLock()
	names = append(names, slices.Collect(maps.Keys(sections))...)
	sectionsMu.RUnlock()
	for n := range knownSections {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	names = append(names, slices.Collect(maps.Keys(sectionAliases))...)
	slices.Sort(names)
	msg := "unknown top-level key: the file has [stores.NAME], [limiters.NAME] and [http] tables"
	best, dist := "", 3
	for _, n := range names {
		if d := editDistance(strings.ToLower(k), n); d < dist {
			best, dist = n, d
		}
	}
	if best != "" {
		sub := ""
		if t, ok := v.(map[string]any); ok && (best == "stores" || best == "limiters") && len(t) > 0 {
			sub = "." + slices.Sorted(maps.Keys(t))[0]
		}
		msg = fmt.Sprintf("unknown top-level key: did you mean [%s%s]? (the file has [stores.NAME], [limiters.NAME] and [http] tables)", best, sub)
	}
	return &ConfigError{File: file, Key: k, Line: line, Msg: msg}
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var limiterKeys = []string{"store", "algorithm", "rate_per_second", "burst", "max_concurrent", "limit", "window_seconds", "timeout", "fail_closed", "on_store_error", "fallback_replicas", "lease_seconds", "shadow", "overrides"}

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
		default:
			name, v, err := parseSection(file, lines, k, raw[k], f.line)
			if err != nil {
				return nil, err
			}
			if _, dup := cfg.Sections[name]; dup {
				return nil, &ConfigError{File: file, Table: k, Line: f.line, Msg: fmt.Sprintf("the file has [%s] under two names (%s is rate-sync's name of [%s]): keep one", name, aliasOf(name), name)}
			}
			if cfg.Sections == nil {
				cfg.Sections = map[string]any{}
			}
			cfg.Sections[name] = v
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
	var overrides *field
	for _, k := range slices.Sorted(maps.Keys(t)) {
		f := field{file: file, table: "limiters." + name, key: k, line: lines.line(table, k), v: t[k]}
		if k == "overrides" {
			overrides = &f
			continue
		}
		if err := setRuleKey(&r, f, &failClosed); err != nil {
			return LimiterConfig{}, err
		}
	}
	base := r
	nr, err := finishRule(r, failClosed, file, "limiters."+name, lines, table, line)
	if err != nil {
		return LimiterConfig{}, err
	}
	lc := LimiterConfig{Name: name, Rule: nr, storeLine: lines.line(table, "store")}
	if overrides != nil {
		if lc.Overrides, err = parseOverrides(*overrides, base, failClosed, lines, table); err != nil {
			return LimiterConfig{}, err
		}
	}
	return lc, nil
}

// parseOverrides reads a limiter's overrides table: identifier = { the
// limiter keys to change }. Each override is the limiter's rule with those
// keys changed, validated as a rule.
func parseOverrides(f field, base Rule, failClosed *field, lines *lineIndex, table string) (map[string]Rule, error) {
	t, ok := f.v.(map[string]any)
	if !ok {
		return nil, f.errorf("must be a table of identifier = { limiter keys }, like \"tenant:acme\" = { rate_per_second = 500 }; got %s", tomlType(f.v))
	}
	otable := table + ".overrides"
	out := make(map[string]Rule, len(t))
	for _, id := range slices.Sorted(maps.Keys(t)) {
		ot := f.table + ".overrides." + strconv.Quote(id)
		oline := lines.line(otable, id)
		if oline == 0 {
			oline = f.line
		}
		keys, ok := t[id].(map[string]any)
		if !ok {
			return nil, &ConfigError{File: f.file, Table: ot, Line: oline, Msg: fmt.Sprintf("must be a table of limiter keys, like { rate_per_second = 500 }; got %s", tomlType(t[id]))}
		}
		if len(keys) == 0 {
			return nil, &ConfigError{File: f.file, Table: ot, Line: oline, Msg: "empty: give the limiter keys this identifier changes, or remove it"}
		}
		r, fc := base, failClosed
		// An override that gives one algorithm's keys (or names it) drops
		// the other's, and one that gives fail_closed drops the limiter's
		// on_store_error: it cannot unset the limiter's keys otherwise.
		alg, _ := keys["algorithm"].(string)
		_, rateKeys := keys["rate_per_second"]
		_, burstKey := keys["burst"]
		_, limitKey := keys["limit"]
		_, windowKey := keys["window_seconds"]
		rateKeys = rateKeys || burstKey || alg == "token_bucket"
		windowKeys := limitKey || windowKey || alg == "sliding_window"
		switch {
		case windowKeys && !rateKeys:
			r.RatePerSecond, r.Burst, r.Algorithm = 0, 0, 0
		case rateKeys && !windowKeys:
			r.Limit, r.Window, r.Algorithm = 0, 0, 0
		}
		if _, ok := keys["fail_closed"]; ok {
			if _, own := keys["on_store_error"]; !own {
				r.OnStoreError = ""
			}
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			kf := field{file: f.file, table: ot, key: k, line: oline, v: keys[k]}
			switch k {
			case "store", "overrides":
				return nil, kf.errorf("an override keeps the limiter's %s; it changes the limits only", k)
			case "on_store_error":
				if fc != nil && fc.table != ot {
					fc = nil // the override's policy replaces the limiter's fail_closed
				}
			}
			if err := setRuleKey(&r, kf, &fc); err != nil {
				return nil, err
			}
		}
		nr, err := finishRule(r, fc, f.file, ot, nil, "", oline)
		if err != nil {
			return nil, err
		}
		out[id] = nr
	}
	return out, nil
}

// setRuleKey sets the rule field of one limiter key. fail_closed is kept
// in failClosed, for finishRule to reconcile with on_store_error.
func setRuleKey(r *Rule, f field, failClosed **field) error {
	var err error
	switch f.key {
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
		*failClosed = &f
	case "on_store_error":
		var v string
		v, err = f.str()
		r.OnStoreError = FailurePolicy(v)
	case "fallback_replicas":
		r.FallbackReplicas, err = f.int()
	case "lease_seconds":
		r.LeaseTTL, err = f.seconds()
	case "shadow":
		r.Shadow, err = f.bool()
	default:
		return f.errorf("unknown key: a limiter has %s", strings.Join(limiterKeys, ", "))
	}
	if err != nil {
		return err
	}
	// Zero is "unset" in Rule, so reject explicit zeros here, where the
	// user wrote them.
	if isZeroNumber(f.key, *r) {
		return f.errorf("must be > 0, got 0")
	}
	return nil
}

// finishRule reconciles fail_closed with on_store_error and normalizes r;
// errors name the file, table and line.
func finishRule(r Rule, failClosed *field, file, tableName string, lines *lineIndex, table string, line int) (Rule, error) {
	if failClosed != nil {
		closed, _ := failClosed.bool()
		p := Allow
		if closed {
			p = Deny
		}
		if r.OnStoreError != "" && r.OnStoreError != p {
			return Rule{}, failClosed.errorf("fail_closed = %v means on_store_error = %q; it contradicts on_store_error = %q: keep one", closed, p, r.OnStoreError)
		}
		r.OnStoreError = p
	}
	nr, err := r.normalize()
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File, ce.Table = file, tableName
			ce.Line = lines.line(table, ce.Key)
			if ce.Line == 0 {
				ce.Line = line
			}
		}
		return Rule{}, err
	}
	return nr, nil
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

// aliasOf returns the other names of the top-level table name.
func aliasOf(name string) string {
	var out []string
	for a, n := range sectionAliases {
		if n == name {
			out = append(out, "["+a+"]")
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// LoadConfig reads the file at path and applies it (see ApplyConfig).
func (r *Registry) LoadConfig(path string) error {
	cfg, err := readConfig(path)
	if err != nil {
		return err
	}
	return r.ApplyConfig(cfg)
}

// ApplyConfig adds the config's stores and limiters to the registry,
// replacing those of the same names; others stay. It is all or nothing: on
// error the registry is unchanged. A limiter may use a store of the config
// or one already in the registry. A store whose configuration did not
// change stays open, with its state; a changed one is opened anew and the
// old one closed once its decisions and leases are done. Limiters obtained
// before follow the new rules (see Reload).
func (r *Registry) ApplyConfig(cfg *Config) error { return r.apply(cfg, false) }

// Reload makes cfg the registry's configuration, atomically, keeping
// state: unlike ApplyConfig, the limiters, stores and sections that an
// earlier configuration defined and cfg does not are removed (those added
// in code stay). A rule whose store and key stay the same keeps its state:
// a raised limit applies at once to the usage already counted, and leases
// held stay held and releasable. Limiters obtained before the reload
// follow their rule's new settings; those of a removed rule fail with
// ErrLimiterNotFound. A store whose settings changed is opened anew and
// the old one closed when its leases are gone. On error nothing changes.
// Every call is counted in Reloads.
func (r *Registry) Reload(cfg *Config) error {
	return r.noteReload(cfg.File, r.apply(cfg, true))
}

// noteReload counts a reload of file that ended with err (nil: applied),
// logs a rejection, and returns err.
func (r *Registry) noteReload(file string, err error) error {
	r.reloads.note(file, err)
	if err != nil {
		r.logger().Error("ratesync: configuration rejected; the one in force stays", "file", file, "error", err)
	}
	return err
}

func (r *Registry) apply(cfg *Config, reload bool) error {
	// One at a time: the stores kept below must still be the registry's
	// when the swap happens, and the last configuration applied wins.
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	// Stores whose configuration is unchanged stay; the others open now,
	// outside the lock (opening does no I/O, but engines may be slow).
	r.mu.RLock()
	kept := map[string]*storeHandle{}
	for _, sc := range cfg.Stores {
		if h := r.stores[sc.Name]; h != nil && sc.sameAs(h.cfg) {
			kept[sc.Name] = h
		}
	}
	r.mu.RUnlock()
	opened := map[string]*storeHandle{}
	fail := func(err error) error {
		for _, h := range opened {
			h.close()
		}
		return err
	}
	for _, sc := range cfg.Stores {
		if kept[sc.Name] != nil {
			continue
		}
		h, err := r.openStore(sc)
		if err != nil {
			return fail(err)
		}
		h.cfg = sc // a configuration's: a later Reload may drop it
		opened[sc.Name] = h
	}
	r.mu.Lock()
	r.initLocked()
	if r.closed.Load() {
		r.mu.Unlock()
		return fail(ErrClosed)
	}
	storeOf := func(name string) *storeHandle {
		if h := opened[name]; h != nil {
			return h
		}
		if h := kept[name]; h != nil {
			return h
		}
		if reload {
			if h := r.stores[name]; h != nil && h.cfg == nil {
				return h // added in code
			}
			return nil
		}
		return r.stores[name]
	}
	rules := map[string]*ruleState{}
	for _, lc := range cfg.Limiters {
		h := storeOf(lc.Rule.Store)
		if h == nil {
			r.mu.Unlock()
			var names []string
			for _, sc := range cfg.Stores {
				names = append(names, sc.Name)
			}
			for n, h := range r.stores {
				if kept[n] == nil && opened[n] == nil && (!reload || h.cfg == nil) {
					names = append(names, n)
				}
			}
			slices.Sort(names)
			list := strings.Join(names, ", ")
			if list == "" {
				list = "none"
			}
			return fail(&ConfigError{File: cfg.File, Table: "limiters." + lc.Name, Key: "store", Line: lc.storeLine,
				Msg: fmt.Sprintf("store %q is not defined (stores: %s)", lc.Rule.Store, list), Err: ErrStoreNotFound})
		}
		old := r.rules[lc.Name]
		if old != nil && old.fromConfig && old.rule == lc.Rule && old.handle() == h && sameOverrides(old.overrides, lc.Overrides) {
			continue // unchanged: limiters keep their rule as it is
		}
		var m *metrics
		if old != nil {
			m = old.m
		}
		rs := r.newRuleState(lc.Name, lc.Rule, h, m)
		rs.fromConfig = true
		if len(lc.Overrides) > 0 {
			rs.overrides = make(map[string]*ruleState, len(lc.Overrides))
			for id, or := range lc.Overrides {
				o := r.newRuleState(lc.Name, or, h, rs.m)
				o.fromConfig = true
				rs.overrides[id] = o
			}
		}
		rules[lc.Name] = rs
	}
	// Swap: stores, then rules, then sections, under the lock.
	var old, opens []*storeHandle // replaced stores, and their replacements
	for name, h := range opened {
		if o := r.stores[name]; o != nil {
			old, opens = append(old, o), append(opens, h)
		}
		r.stores[name] = h
		r.subscribe(h)
	}
	for _, rs := range rules {
		r.putRule(rs)
	}
	var removed []*storeHandle
	if reload {
		inCfg := map[string]bool{}
		for _, lc := range cfg.Limiters {
			inCfg[lc.Name] = true
		}
		for name, rs := range r.rules {
			if rs.fromConfig && !inCfg[name] {
				r.removeRule(rs)
			}
		}
		used := map[string]bool{}
		for _, rs := range r.rules {
			used[rs.rule.Store] = true
		}
		for name, h := range r.stores {
			if h.cfg != nil && kept[name] == nil && opened[name] == nil && !used[name] {
				delete(r.stores, name)
				removed = append(removed, h)
			}
		}
		r.sections = maps.Clone(cfg.Sections)
	} else if len(cfg.Sections) > 0 {
		if r.sections == nil {
			r.sections = map[string]any{}
		}
		maps.Copy(r.sections, cfg.Sections)
	}
	r.mu.Unlock()
	for i, o := range old {
		r.replace(o, opens[i])
	}
	for _, h := range removed {
		h.retire(max(DefaultLeaseTTL, time.Duration(h.maxTTL.Load())))
	}
	return nil
}

// sameOverrides reports whether a rule's overrides are those of a
// configuration.
func sameOverrides(have map[string]*ruleState, want map[string]Rule) bool {
	if len(have) != len(want) {
		return false
	}
	for id, rs := range have {
		if w, ok := want[id]; !ok || w != rs.rule {
			return false
		}
	}
	return true
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
	case time.Duration:
		return "a time.Duration (write seconds as a number: 2.5)"
	}
	return fmt.Sprintf("%T", v)
}

// goNumber converts the Go numeric types a program may put in the options
// of ConfigureStore (int, uint32, float32...) to what TOML decodes: int64
// or float64. A time.Duration is not converted: options count seconds, and
// a Duration counts nanoseconds.
func goNumber(v any) any {
	if _, ok := v.(time.Duration); ok {
		return v
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if u := rv.Uint(); u <= math.MaxInt64 {
			return int64(u)
		}
		return math.Inf(1) // out of every range
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	}
	return v
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
	switch v := goNumber(f.v).(type) {
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
	switch v := goNumber(f.v).(type) {
	case int64:
		if v > math.MaxInt32 || v < math.MinInt32 {
			return 0, f.errorf("%d is out of range", v)
		}
		return int(v), nil
	case float64:
		if math.IsInf(v, 0) {
			return 0, f.errorf("%v is out of range", f.v)
		}
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
	if ss, ok := f.v.([]string); ok { // from ConfigureStore
		list := make([]any, len(ss))
		for i, s := range ss {
			list[i] = s
		}
		f.v = list
	}
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

// line returns the line of key in table, or, when the table does not set
// the key (a required key is missing), the line of the table's header.
func (ix *lineIndex) line(table, key string) int {
	if ix == nil {
		return 0
	}
	if n, ok := ix.keys[table+"\x00"+key]; ok {
		return n
	}
	return ix.tables[table]
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
			// [limiters.api] also places [limiters], so that an error about
			// a top-level key ([limiter.api]) has a line.
			for t := table; ; {
				if _, ok := ix.tables[t]; !ok {
					ix.tables[t] = n
				}
				i := strings.LastIndexByte(t, '.')
				if i < 0 {
					break
				}
				t = t[:i]
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
