package ratesync_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// seedTOML is every TOML snippet of rate-sync's description, in one file,
// with the stores they name.
const seedTOML = `
[stores.main]
engine = "memory"  # or "redis", "postgres"

[stores.local]
engine = "memory"

[stores.redis]
engine = "redis"
url = "${REDIS_URL}"

[stores.db]
engine = "postgres"
url = "postgresql://user:pass@localhost/mydb"

[limiters.api]
store = "main"
rate_per_second = 10.0

[limiters.auth_credential]
store = "redis"
algorithm = "sliding_window"
limit = 5                # 5 attempts
window_seconds = 300     # per 5 minutes

[limiters.upload]
store = "redis"
max_concurrent = 10          # max 10 uploads at once
timeout = 300.0

[limiters.stripe_api]
store = "redis"
rate_per_second = 90.0   # stay under Stripe's 100/s limit
max_concurrent = 10       # max 10 in-flight calls

[limiters.external_api]
store = "redis"
rate_per_second = 100.0  # Max 100 req/sec
max_concurrent = 10      # Max 10 in-flight requests
timeout = 30.0           # Wait up to 30s for a slot

[limiters.login]
store = "redis"
algorithm = "sliding_window"
limit = 5              # Max 5 attempts
window_seconds = 300   # Per 5 minutes
`

func TestSeedSnippetsParse(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://:s3cret@localhost:6379/0")
	cfg, err := ratesync.ParseConfig("rate-sync.toml", []byte(seedTOML))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]ratesync.Rule{}
	for _, l := range cfg.Limiters {
		got[l.Name] = l.Rule
	}
	want := map[string]ratesync.Rule{
		"api":             {Store: "main", Algorithm: ratesync.TokenBucket, RatePerSecond: 10, Burst: 1},
		"auth_credential": {Store: "redis", Algorithm: ratesync.SlidingWindow, Limit: 5, Window: 300 * time.Second},
		"upload":          {Store: "redis", Algorithm: ratesync.TokenBucket, MaxConcurrent: 10, LeaseTTL: ratesync.DefaultLeaseTTL, Timeout: 300 * time.Second},
		"stripe_api":      {Store: "redis", Algorithm: ratesync.TokenBucket, RatePerSecond: 90, Burst: 1, MaxConcurrent: 10, LeaseTTL: ratesync.DefaultLeaseTTL},
		"external_api":    {Store: "redis", Algorithm: ratesync.TokenBucket, RatePerSecond: 100, Burst: 1, MaxConcurrent: 10, LeaseTTL: ratesync.DefaultLeaseTTL, Timeout: 30 * time.Second},
		"login":           {Store: "redis", Algorithm: ratesync.SlidingWindow, Limit: 5, Window: 300 * time.Second},
	}
	if len(got) != len(want) {
		t.Fatalf("limiters %v, want %d", got, len(want))
	}
	for name, w := range want {
		w.OnStoreError, w.FallbackReplicas = ratesync.Local, 1 // the default failure policy
		if got[name] != w {
			t.Errorf("%s: got %+v, want %+v", name, got[name], w)
		}
	}
	var redisURL string
	for _, s := range cfg.Stores {
		if s.Name == "redis" {
			redisURL, err = s.String("url", "")
		}
	}
	if err != nil || redisURL != "redis://:s3cret@localhost:6379/0" {
		t.Fatalf("redis url = %q, %v: ${REDIS_URL} not resolved", redisURL, err)
	}

	// Without the Redis engine linked in, applying says which import to add.
	err = ratesync.NewRegistry().ApplyConfig(cfg)
	if !errors.Is(err, ratesync.ErrEngineNotLinked) || !strings.Contains(err.Error(), `import _ "github.com/rate-sync/ratesync-go/`) || strings.Contains(err.Error(), "engine not linked") {
		t.Fatalf("apply without redis engine: %v", err)
	}

	// On memory stores every seed limiter works.
	mem := strings.NewReplacer(`engine = "redis"`, `engine = "memory"`, `engine = "postgres"`, `engine = "memory"`,
		`url = "${REDIS_URL}"`, "", `url = "postgresql://user:pass@localhost/mydb"`, "").Replace(seedTOML)
	r := loadString(t, mem)
	for name := range want {
		d, err := r.Try(context.Background(), name)
		if err != nil || !d.Allowed {
			t.Errorf("%s: first try %+v, %v", name, d, err)
		}
	}
}

func loadString(t *testing.T, toml string) *ratesync.Registry {
	t.Helper()
	cfg, err := ratesync.ParseConfig("test.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	r := ratesync.NewRegistry()
	if err := r.ApplyConfig(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestConfigErrors(t *testing.T) {
	const store = "[stores.main]\nengine = \"memory\"\n"
	tests := []struct {
		name string
		toml string
		want []string // substrings of the error
	}{
		{"syntax", "[stores.main\nengine = 1", []string{"test.toml:2", "TOML syntax"}},
		{"unknown limiter key", store + "[limiters.api]\nstore = \"main\"\nrate_per_secnd = 10.0\n", []string{"test.toml:5", "[limiters.api]", "rate_per_secnd", "unknown key", "rate_per_second"}},
		{"wrong type", store + "[limiters.api]\nstore = \"main\"\nrate_per_second = \"fast\"\n", []string{"test.toml:5", "rate_per_second", `want a number, got "fast"`}},
		{"bool type", store + "[limiters.api]\nstore = \"main\"\nrate_per_second = 1.0\nfail_closed = 1\n", []string{"fail_closed", "want true or false"}},
		{"negative", store + "[limiters.api]\nstore = \"main\"\nrate_per_second = -1.0\n", []string{"test.toml:5", "rate_per_second", "> 0"}},
		{"explicit zero", store + "[limiters.api]\nstore = \"main\"\nmax_concurrent = 0\n", []string{"max_concurrent", "must be > 0"}},
		{"unknown algorithm", store + "[limiters.api]\nstore = \"main\"\nalgorithm = \"leaky\"\nrate_per_second = 1.0\n", []string{"test.toml:5", "unknown algorithm \"leaky\""}},
		{"limit needs window", store + "[limiters.api]\nstore = \"main\"\nalgorithm = \"sliding_window\"\nlimit = 5\n", []string{"window_seconds", "needs window_seconds"}},
		{"no policy", store + "[limiters.api]\nstore = \"main\"\ntimeout = 1.0\n", []string{"set rate_per_second or max_concurrent"}},
		{"rate with window", store + "[limiters.api]\nstore = \"main\"\nrate_per_second = 1.0\nlimit = 5\nwindow_seconds = 60\n", []string{"limit and window_seconds belong to algorithm \"sliding_window\""}},
		{"fractional int", store + "[limiters.api]\nstore = \"main\"\nmax_concurrent = 2.5\n", []string{"max_concurrent", "whole number"}},
		{"unset variable", store + "[limiters.api]\nstore = \"main\"\nrate_per_second = \"${RATESYNC_TEST_UNSET_VAR}\"\n", []string{"RATESYNC_TEST_UNSET_VAR is not set"}},
		{"unknown top-level", store + "[limters.api]\nstore = \"main\"\n", []string{"limters", "unknown top-level key"}},
		{"unknown store", store + "[limiters.api]\nstore = \"mian\"\nrate_per_second = 1.0\n", []string{"test.toml:4", "[limiters.api] store", `store "mian" is not defined (stores: main)`}},
		{"singular table", store + "\n[limiter.api]\nstore = \"main\"\n", []string{"test.toml:4", "limiter", "did you mean [limiters.api]?"}},
		{"singular store table", "[store.main]\nengine = \"memory\"\n", []string{"test.toml:1", "did you mean [stores.main]?"}},
		{"http without httplimit", store + "[http]\ntrusted_proxy_networks = [\"10.0.0.0/8\"]\n", []string{"test.toml:3", "[http]", `add import _ "github.com/rate-sync/ratesync-go/httplimit"`}},
		{"fastapi without httplimit", "[fastapi]\ntrusted_proxy_networks = []\n", []string{"test.toml:1", "[fastapi]", `add import _ "github.com/rate-sync/ratesync-go/httplimit"`}},
		{"missing required key of an engine", "\n[stores.main]\nengine = \"test-required\"\n", []string{"test.toml:2", "[stores.main] url", "required"}},
		{"missing engine", "[stores.main]\nurl = \"x\"\n", []string{"test.toml:1", "[stores.main] engine", "required"}},
		{"unknown engine", "[stores.main]\nengine = \"mongo\"\n", []string{"test.toml:2", `unknown engine "mongo"`, "memory"}},
		{"unknown store option", "[stores.main]\nengine = \"memory\"\nurl = \"redis://x\"\n", []string{"test.toml:3", "[stores.main] url", `unknown key for engine "memory"`}},
	}
	registerTestEngines()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ratesync.ParseConfig("test.toml", []byte(tt.toml))
			if err == nil {
				err = ratesync.NewRegistry().ApplyConfig(cfg)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ratesync.ErrInvalidConfig) {
				t.Errorf("error %v does not match ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigEnvExpansion(t *testing.T) {
	t.Setenv("RS_RATE", "2.5")
	t.Setenv("RS_MAX", "7")
	t.Setenv("RS_CLOSED", "true")
	t.Setenv("RS_EMPTY", "")
	t.Setenv("RS_NAME", "payments")
	const envTOML = `
[stores."${RS_STORE:-main}"]
engine = "memory"

[limiters."${RS_NAME:-api}"]
store = "${RS_STORE:-main}"
rate_per_second = "${RS_RATE}"
max_concurrent = "${RS_MAX:-1}"
fail_closed = "${RS_CLOSED:-false}"
timeout = "${RS_EMPTY:-1.5}"
`
	_, err := ratesync.ParseConfig("t.toml", []byte(envTOML+"lease_seconds = \"$${RS_RATE}\"\n"))
	if err == nil {
		t.Fatal("lease_seconds = \"$${RS_RATE}\" is the literal ${RS_RATE}, not a number: want an error")
	}
	cfg, err := ratesync.ParseConfig("t.toml", []byte(envTOML))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Stores[0].Name != "main" || len(cfg.Limiters) != 1 {
		t.Fatalf("stores %v limiters %v", cfg.Stores, cfg.Limiters)
	}
	l := cfg.Limiters[0]
	want := ratesync.Rule{Store: "main", Algorithm: ratesync.TokenBucket, RatePerSecond: 2.5, Burst: 1, MaxConcurrent: 7,
		LeaseTTL: ratesync.DefaultLeaseTTL, OnStoreError: ratesync.Deny, Timeout: 1500 * time.Millisecond}
	if l.Name != "payments" || l.Rule != want {
		t.Fatalf("got %s %+v, want payments %+v", l.Name, l.Rule, want)
	}
}

func TestApplyConfigIsAllOrNothing(t *testing.T) {
	r := loadString(t, "[stores.main]\nengine = \"memory\"\n[limiters.api]\nstore = \"main\"\nrate_per_second = 1.0\n")
	cfg, err := ratesync.ParseConfig("t.toml", []byte("[stores.other]\nengine = \"memory\"\n[limiters.api]\nstore = \"main\"\nrate_per_second = 5.0\n[limiters.bad]\nstore = \"nope\"\nrate_per_second = 1.0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ApplyConfig(cfg); !errors.Is(err, ratesync.ErrStoreNotFound) {
		t.Fatalf("got %v, want ErrStoreNotFound", err)
	}
	l, _ := r.Get("api")
	if l.Rule().RatePerSecond != 1 || len(r.Stores()) != 1 {
		t.Fatalf("failed apply changed the registry: rate %v, stores %v", l.Rule().RatePerSecond, r.Stores())
	}
}

// registerTestEngines registers the engines and sections of the config
// tests once per test binary, so that they can run with -count > 1.
var registerTestEngines = sync.OnceFunc(func() {
	ratesync.RegisterEngine("test-required", func(cfg *ratesync.StoreConfig) (ratesyncStore, error) {
		url, err := cfg.String("url", "")
		if err == nil && url == "" {
			err = cfg.Errorf("url", "required")
		}
		if err != nil {
			return nil, err
		}
		return newMem(), nil
	})
	ratesync.RegisterSection("test_section", func(t *ratesync.SectionConfig) (any, error) {
		n, err := t.Int("size", 1)
		if err != nil {
			return nil, err
		}
		names, err := t.Strings("names")
		return fmt.Sprint(n, names), err
	})
})

func TestConfigSections(t *testing.T) {
	registerTestEngines()
	r := loadString(t, "[test_section]\nsize = \"${RATESYNC_TEST_SIZE:-3}\"\nnames = [\"a\", \"b\"]\n")
	if got := r.Section("test_section"); got != "3 [a b]" {
		t.Fatalf("Section = %v, want what the section's parser returned", got)
	}
	if r.Section("http") != nil {
		t.Fatal("a table the file does not have has settings")
	}
	for _, tt := range []struct{ name, toml, want string }{
		{"unknown key", "[test_section]\nsize = 2\nsise = 3\n", "test.toml:3: [test_section] sise: unknown key: [test_section] has names, size"},
		{"wrong type", "\n[test_section]\nsize = \"big\"\n", `test.toml:3: [test_section] size: want an integer, got "big"`},
		{"not a table", "test_section = 1\n", "test.toml:1: [test_section] must be a table"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ratesync.ParseConfig("test.toml", []byte(tt.toml))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ratesync.ErrInvalidConfig) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// ConfigureStore takes Go values as they come in a program: int, []string,
// float32; a time.Duration is refused with what to write instead.
func TestConfigureStoreGoValues(t *testing.T) {
	registerSecretEngine()
	var got []string
	ratesyncTestValues = func(cfg *ratesync.StoreConfig) error {
		n, err := cfg.Int("pool_size", 0)
		if err != nil {
			return err
		}
		f, err := cfg.Float("ratio", 0)
		if err != nil {
			return err
		}
		nodes, err := cfg.Strings("nodes")
		if err != nil {
			return err
		}
		d, err := cfg.Seconds("timeout_seconds", 0)
		got = append(got, fmt.Sprint(n, " ", f, " ", nodes, " ", d))
		return err
	}
	defer func() { ratesyncTestValues = nil }()
	r := ratesync.NewRegistry()
	defer r.Close()
	err := r.ConfigureStore("s", "test-secret", map[string]any{"pool_size": 10, "ratio": float32(0.5), "nodes": []string{"a:1", "b:2"}, "timeout_seconds": uint8(2)})
	if err != nil || len(got) != 1 || got[0] != "10 0.5 [a:1 b:2] 2s" {
		t.Fatalf("ConfigureStore with Go values: %v, read %q", err, got)
	}
	err = r.ConfigureStore("s", "test-secret", map[string]any{"timeout_seconds": 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "time.Duration (write seconds as a number") {
		t.Fatalf("a time.Duration for seconds: %v, want an error saying to write seconds", err)
	}
}

// registerSecretEngine registers the engine of TestStoresRedactSecrets
// once per test binary, so that the test can run with -count > 1.
// ratesyncTestValues, when set, reads more options in the test-secret
// engine.
var ratesyncTestValues func(cfg *ratesync.StoreConfig) error

var registerSecretEngine = sync.OnceFunc(func() {
	ratesync.RegisterEngine("test-secret", func(cfg *ratesync.StoreConfig) (ratesyncStore, error) {
		cfg.String("url", "")
		cfg.String("password", "")
		if ratesyncTestValues != nil {
			if err := ratesyncTestValues(cfg); err != nil {
				return nil, err
			}
		}
		return newMem(), nil
	})
})

func TestStoresRedactSecrets(t *testing.T) {
	registerSecretEngine()
	r := loadString(t, "[stores.s]\nengine = \"test-secret\"\nurl = \"redis://user:hunter2@host:6379/0\"\npassword = \"hunter2\"\n")
	info := r.Stores()[0]
	for k, v := range info.Options {
		if strings.Contains(v, "hunter2") {
			t.Errorf("option %s shows the secret: %s", k, v)
		}
	}
	if info.Options["url"] != "redis://user:xxxxx@host:6379/0" {
		t.Errorf("url shown as %q", info.Options["url"])
	}
}

func TestConfigFileErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "limits.toml")
	os.WriteFile(path, []byte("[limiters.api]\nstore = \"main\"\nrate_per_second = 0.0\n"), 0o600)
	err := ratesync.NewRegistry().LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path+":3") {
		t.Fatalf("got %v, want the file and line", err)
	}
}
