package ratesync_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rate-sync/ratesync-go"
)

// With no configuration file found, a limiter that is not found says where
// the file was looked for: the user configured it, in a file never read.
func TestNoConfigFileNamesThePlacesSearched(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv(ratesync.ConfigEnv, "")
	ratesync.ResetDefault()
	t.Cleanup(ratesync.ResetDefault)
	_, err := ratesync.Try(ctx, "api")
	if !errors.Is(err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("got %v, want ErrLimiterNotFound", err)
	}
	for _, want := range []string{`limiter not found: "api"`, "RATE_SYNC_CONFIG is not set", "rate-sync.toml nor config/rate-sync.toml", dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	for name, call := range map[string]func() error{
		"Get":     func() error { _, err := ratesync.Get("api"); return err },
		"For":     func() error { _, err := ratesync.For("api", "x"); return err },
		"Acquire": func() error { _, err := ratesync.Acquire(ctx, "api"); return err },
		"ConfigureLimiter": func() error {
			return ratesync.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 1})
		},
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "no configuration file was loaded") {
			t.Errorf("%s: %v, want the places searched", name, err)
		}
	}
	// Once a file is loaded, a missing limiter is only that.
	good := filepath.Join(dir, "limits.toml")
	writeFile(t, good, quickStart)
	if err := ratesync.LoadConfig(good); err != nil {
		t.Fatal(err)
	}
	if _, err := ratesync.Get("nope"); err == nil || strings.Contains(err.Error(), "no configuration file") {
		t.Fatalf("after LoadConfig: %v", err)
	}
}

// A broken file named by RATE_SYNC_CONFIG: one "ratesync:" prefix, the file
// and line, and which variable named it.
func TestConfigEnvErrorNoDoubledPrefix(t *testing.T) {
	t.Chdir(t.TempDir())
	p := filepath.Join(t.TempDir(), "limits.toml")
	writeFile(t, p, "[limiters.api]\nstore = \"main\"\nrate_per_second = \"x\"\n")
	t.Setenv(ratesync.ConfigEnv, p)
	ratesync.ResetDefault()
	t.Cleanup(ratesync.ResetDefault)
	_, err := ratesync.Try(ctx, "api")
	if !errors.Is(err, ratesync.ErrInvalidConfig) {
		t.Fatalf("got %v, want ErrInvalidConfig", err)
	}
	msg := err.Error()
	if n := strings.Count(msg, "ratesync:"); n != 1 {
		t.Errorf("%q has %d 'ratesync:' prefixes, want 1", msg, n)
	}
	if !strings.Contains(msg, p+":3") || !strings.Contains(msg, "RATE_SYNC_CONFIG") {
		t.Errorf("%q does not name the file, the line and RATE_SYNC_CONFIG", msg)
	}
}
