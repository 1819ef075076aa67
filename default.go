package ratesync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
)

// ConfigEnv is the environment variable that names the configuration file
// the package-level functions load.
const ConfigEnv = "RATE_SYNC_CONFIG"

// defaultConfigPaths are tried in order when ConfigEnv is not set.
var defaultConfigPaths = []string{"rate-sync.toml", "config/rate-sync.toml"}

var std struct {
	mu     sync.Mutex
	reg    *Registry
	loaded bool
	err    error
	noFile bool // the automatic loading found no file
}

// Default returns the registry behind the package-level functions. On first
// use it loads the configuration: the file named by RATE_SYNC_CONFIG, else
// the first of ./rate-sync.toml and ./config/rate-sync.toml that exists;
// with none, the registry starts empty. Loading happens once; its error is
// returned by every later call, so fix the file (or call LoadConfig).
func Default() (*Registry, error) {
	std.mu.Lock()
	defer std.mu.Unlock()
	if std.reg == nil {
		std.reg = NewRegistry()
	}
	if !std.loaded {
		std.loaded = true
		std.err = autoLoad(std.reg)
	}
	return std.reg, std.err
}

func autoLoad(r *Registry) error {
	path, err := FindConfig()
	std.noFile = err == nil && path == ""
	if err != nil || path == "" {
		return err
	}
	if err := r.LoadConfig(path); err != nil {
		if os.Getenv(ConfigEnv) != "" {
			return &envError{path: path, err: err}
		}
		return err
	}
	return nil
}

// envError is an error of the file RATE_SYNC_CONFIG names.
type envError struct {
	path string
	err  error
}

func (e *envError) Error() string {
	msg := e.err.Error()
	if strings.Contains(msg, e.path) {
		return msg + " (the file " + ConfigEnv + " names)"
	}
	return "ratesync: " + ConfigEnv + "=" + e.path + ": " + strings.TrimPrefix(msg, "ratesync: ")
}

func (e *envError) Unwrap() error { return e.err }

// hint adds to a "not found" error of the package-level functions where
// the configuration was looked for, when no file was found: otherwise the
// error names a limiter the user did configure, in a file never read.
func hint(err error) error {
	if err == nil || !errors.Is(err, ErrLimiterNotFound) && !errors.Is(err, ErrStoreNotFound) {
		return err
	}
	std.mu.Lock()
	none := std.noFile
	std.mu.Unlock()
	if !none {
		return err
	}
	return &noConfigError{err}
}

// noConfigError is a not-found error of the default registry when no
// configuration file was found.
type noConfigError struct{ err error }

func (e *noConfigError) Error() string {
	dir, _ := os.Getwd()
	return fmt.Sprintf("%v (no configuration file was loaded: %s is not set, and neither %s exists in the working directory %s; create one, set %s, or call ratesync.LoadConfig)",
		e.err, ConfigEnv, strings.Join(defaultConfigPaths, " nor "), dir, ConfigEnv)
}

func (e *noConfigError) Unwrap() error { return e.err }

// FindConfig returns the configuration file the package-level functions
// load: the file named by RATE_SYNC_CONFIG (an error if it does not exist),
// else the first of defaultConfigPaths that exists, else "".
func FindConfig() (string, error) {
	if path := os.Getenv(ConfigEnv); path != "" {
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("ratesync: %s=%s: %w", ConfigEnv, path, err)
		}
		return path, nil
	}
	for _, path := range defaultConfigPaths {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return path, nil
	}
	return "", nil
}

// LoadConfig loads the file at path into the default registry, instead of
// (or after) the file found automatically, and clears an earlier automatic
// loading error.
func LoadConfig(path string) error {
	std.mu.Lock()
	defer std.mu.Unlock()
	if std.reg == nil {
		std.reg = NewRegistry()
	}
	std.loaded = true
	if err := std.reg.LoadConfig(path); err != nil {
		return err
	}
	std.err, std.noFile = nil, false
	return nil
}

// ConfigureStore opens a store on the default registry; see
// Registry.ConfigureStore.
func ConfigureStore(name, engine string, options map[string]any) error {
	r, err := Default()
	if err != nil {
		return err
	}
	return hint(r.ConfigureStore(name, engine, options))
}

// ConfigureLimiter adds a limiter to the default registry; see
// Registry.ConfigureLimiter.
func ConfigureLimiter(name string, rule Rule) error {
	r, err := Default()
	if err != nil {
		return err
	}
	return hint(r.ConfigureLimiter(name, rule))
}

// Clone adds a copy of a limiter to the default registry; see
// Registry.Clone.
func Clone(source, name string, edit func(*Rule)) error {
	r, err := Default()
	if err != nil {
		return err
	}
	return hint(r.Clone(source, name, edit))
}

// Get returns a limiter of the default registry.
func Get(name string) (*Limiter, error) {
	r, err := Default()
	if err != nil {
		return nil, err
	}
	l, err := r.Get(name)
	return l, hint(err)
}

// For returns the limiter of rule name for one identifier (or a path
// of identifiers) in the default registry; see Registry.For.
func For(name string, ids ...string) (*Limiter, error) {
	r, err := Default()
	if err != nil {
		return nil, err
	}
	l, err := r.For(name, ids...)
	return l, hint(err)
}

// Resolve resolves a template such as "api:{user_id}" in the default
// registry; see Registry.Resolve.
func Resolve(tmpl string, values Values) (*Limiter, error) {
	r, err := Default()
	if err != nil {
		return nil, err
	}
	l, err := r.Resolve(tmpl, values)
	return l, hint(err)
}

// Try makes one attempt on a limiter of the default registry; see
// Limiter.Try.
func Try(ctx context.Context, name string, opts ...CallOption) (Decision, error) {
	r, err := Default()
	if err != nil {
		return Decision{Limiter: name}, err
	}
	d, err := r.Try(ctx, name, opts...)
	return d, hint(err)
}

// Acquire waits on a limiter of the default registry; see Limiter.Acquire.
func Acquire(ctx context.Context, name string, opts ...CallOption) (*Lease, error) {
	r, err := Default()
	if err != nil {
		return nil, err
	}
	lease, err := r.Acquire(ctx, name, opts...)
	return lease, hint(err)
}

// Do acquires, runs fn and releases, on a limiter of the default registry;
// see Limiter.Do.
func Do(ctx context.Context, name string, fn func(context.Context) error, opts ...CallOption) error {
	r, err := Default()
	if err != nil {
		return err
	}
	return hint(r.Do(ctx, name, fn, opts...))
}

// TryDo runs fn only if one attempt on a limiter of the default registry
// admits it; see Limiter.TryDo.
func TryDo(ctx context.Context, name string, fn func(context.Context) error, opts ...CallOption) (bool, error) {
	r, err := Default()
	if err != nil {
		return false, err
	}
	ran, err := r.TryDo(ctx, name, fn, opts...)
	return ran, hint(err)
}
