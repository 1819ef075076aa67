package ratesync

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

// Engine opens a store from its configuration. Engines read their options
// with the typed accessors of StoreConfig; a key they do not read is
// reported as unknown. An engine must do no network I/O.
type Engine func(cfg *StoreConfig) (driver.Store, error)

var (
	enginesMu sync.RWMutex
	engines   = map[string]Engine{"memory": openMemory}
)

// knownEngines names the package to import for each engine this module
// provides, for the error when one is not linked in.
var knownEngines = map[string]string{
	"redis":    "github.com/rate-sync/ratesync-go/redisstore",
	"postgres": "github.com/rate-sync/ratesync-go/pgstore",
}

// RegisterEngine makes an engine available by name to configuration files
// and ConfigureStore. Store packages call it from init, as database/sql
// drivers do. It panics if name is empty, open is nil, or name is already
// registered.
func RegisterEngine(name string, open Engine) {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	if name == "" || open == nil {
		panic("ratesync: RegisterEngine needs a name and a function")
	}
	if _, dup := engines[name]; dup {
		panic("ratesync: RegisterEngine called twice for engine " + name)
	}
	engines[name] = open
}

// Engines returns the names of the registered engines, sorted.
func Engines() []string {
	enginesMu.RLock()
	defer enginesMu.RUnlock()
	return slices.Sorted(maps.Keys(engines))
}

func openMemory(cfg *StoreConfig) (driver.Store, error) {
	sweep, err := cfg.Seconds("sweep_interval_seconds", memstore.DefaultSweepInterval)
	if err != nil {
		return nil, err
	}
	if err := driver.ValidateSweepInterval(sweep); err != nil {
		var pe *driver.PolicyError
		if errors.As(err, &pe) {
			return nil, cfg.Errorf("sweep_interval_seconds", "%s", pe.Msg)
		}
		return nil, err
	}
	return memstore.New(memstore.WithSweepInterval(sweep)), nil
}

func (r *Registry) openStore(cfg *StoreConfig) (*storeHandle, error) {
	c := *cfg // the engine marks the keys it reads: a Config may be applied by several registries at once
	cfg = &c
	if cfg.Engine == "" {
		return nil, cfg.Errorf("engine", "required: one of %s", strings.Join(Engines(), ", "))
	}
	enginesMu.RLock()
	open := engines[cfg.Engine]
	enginesMu.RUnlock()
	if open == nil {
		if pkg, ok := knownEngines[cfg.Engine]; ok {
			e := cfg.Errorf("engine", "engine %q is not linked into this program: add import _ %q", cfg.Engine, pkg)
			e.(*ConfigError).Err = ErrEngineNotLinked
			return nil, e
		}
		return nil, cfg.Errorf("engine", "unknown engine %q: use one of %s", cfg.Engine, strings.Join(Engines(), ", "))
	}
	cfg.used = map[string]bool{"engine": true}
	var o storeOptions
	var err error
	if o.callTimeout, err = cfg.Seconds("call_timeout_seconds", DefaultCallTimeout); err != nil {
		return nil, err
	}
	if o.threshold, err = cfg.Int("breaker_threshold", DefaultBreakerThreshold); err != nil {
		return nil, err
	}
	if o.cooldown, err = cfg.Seconds("breaker_cooldown_seconds", DefaultBreakerCooldown); err != nil {
		return nil, err
	}
	if key, msg := o.check(); key != "" {
		return nil, cfg.Errorf(key, "%s", msg)
	}
	if cfg.Has("timing_margin_ms") { // rate-sync's, for every engine
		return nil, cfg.Errorf("timing_margin_ms", "not supported: ratesync-go decides on the server's clock with exact timing; remove the key")
	}
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Options)) {
		if !cfg.used[k] {
			s.Close()
			return nil, cfg.Errorf(k, "unknown key for engine %q", cfg.Engine)
		}
	}
	h := r.newHandle(cfg.Name, cfg.Engine, s, true)
	h.options = cfg.redacted()
	h.apply(o)
	return h, nil
}

// DefaultCallTimeout bounds how long a call waits for a store that is not
// in process (call_timeout_seconds) before it gives up and, for a
// decision, the rule's failure policy answers.
const DefaultCallTimeout = 250 * time.Millisecond

// StoreConfig is one [stores.NAME] table: the engine and its options. Its
// accessors expand ${VAR} references, convert the value to the type asked
// for, and return errors that name the file, table, key and line.
type StoreConfig struct {
	Name    string
	Engine  string
	Options map[string]any // raw values, engine key excluded

	file  string
	raw   string // table name as written, for line lookups
	lines *lineIndex
	used  map[string]bool
}

// sameAs reports whether c configures the same store as o: a reload keeps
// the open store (and, for the memory store, its state) when it does.
func (c *StoreConfig) sameAs(o *StoreConfig) bool {
	return o != nil && c.Name == o.Name && c.Engine == o.Engine && reflect.DeepEqual(c.Options, o.Options)
}

func (c *StoreConfig) field(key string) (field, bool) {
	if c.used != nil {
		c.used[key] = true
	}
	v, ok := c.Options[key]
	return c.fieldOf(key, v), ok
}

func (c *StoreConfig) fieldOf(key string, v any) field {
	raw := c.raw
	if raw == "" {
		raw = c.Name
	}
	return field{file: c.file, table: "stores." + c.Name, key: key, line: c.lines.line("stores."+raw, key), v: v}
}

// Has reports whether the option key is set (and marks it as known).
func (c *StoreConfig) Has(key string) bool {
	_, ok := c.field(key)
	return ok
}

// String returns the string option key, or def when it is not set.
func (c *StoreConfig) String(key, def string) (string, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.str()
}

// Int returns the integer option key, or def when it is not set.
func (c *StoreConfig) Int(key string, def int) (int, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.int()
}

// Float returns the number option key, or def when it is not set.
func (c *StoreConfig) Float(key string, def float64) (float64, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.float()
}

// Bool returns the boolean option key, or def when it is not set.
func (c *StoreConfig) Bool(key string, def bool) (bool, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.bool()
}

// Seconds returns the option key, a number of seconds, as a duration, or
// def when it is not set.
func (c *StoreConfig) Seconds(key string, def time.Duration) (time.Duration, error) {
	f, ok := c.field(key)
	if !ok {
		return def, nil
	}
	return f.seconds()
}

// Strings returns the option key, a list of strings, or nil when it is not
// set.
func (c *StoreConfig) Strings(key string) ([]string, error) {
	f, ok := c.field(key)
	if !ok {
		return nil, nil
	}
	return f.strings()
}

// Errorf returns a *ConfigError about the option key of this store.
func (c *StoreConfig) Errorf(key, format string, args ...any) error {
	return c.fieldOf(key, nil).errorf(format, args...)
}

// redacted returns the options as strings for display, with secrets
// hidden: keys that name a password, secret or token, and passwords in
// URLs.
func (c *StoreConfig) redacted() map[string]string {
	out := map[string]string{}
	for k, v := range c.Options {
		s := fmt.Sprint(v)
		if str, ok := v.(string); ok {
			if e, err := expandEnv(str); err == nil {
				s = e
			}
		}
		lk := strings.ToLower(k)
		switch {
		case strings.Contains(lk, "password") || strings.Contains(lk, "secret") || strings.Contains(lk, "token"):
			if s != "" {
				s = "xxxxx"
			}
		case strings.Contains(s, "://"):
			s = redactURL(s)
		}
		out[k] = s
	}
	return out
}

// redactURL hides the password of a URL (and of each URL in a comma
// separated list).
// redactErr returns err's message with passwords in URLs removed, for
// logs.
func redactErr(err error) string {
	msg := err.Error()
	for _, f := range strings.Fields(msg) {
		f = strings.Trim(f, "\"'`()[],;")
		if strings.Contains(f, "://") && strings.Contains(f, "@") {
			if r := redactURL(f); r != f {
				msg = strings.ReplaceAll(msg, f, r)
			}
		}
	}
	return msg
}

func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		} else if err != nil && strings.Contains(p, "@") {
			parts[i] = "xxxxx" // unparsable, may hold a secret
		}
	}
	return strings.Join(parts, ",")
}
