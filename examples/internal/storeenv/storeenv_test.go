package storeenv

import (
	"errors"
	"strings"
	"testing"

	"github.com/rate-sync/ratesync-go"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

const file = `
[stores.redis]
engine = "redis"
url = "${REDIS_URL}"

[stores.local]
engine = "memory"

[limiters.api]
store = "redis"
rate_per_second = 10.0
`

func TestEngine(t *testing.T) {
	for _, c := range []struct {
		name, redis, pg, want string
	}{
		{"neither", "", "", "memory"},
		{"redis", "redis://127.0.0.1:6379/0", "", "redis"},
		{"postgres", "", "postgres://127.0.0.1/test", "postgres"},
		{"both: redis wins", "redis://127.0.0.1:6379/0", "postgres://127.0.0.1/test", "redis"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("REDIS_URL", c.redis)
			t.Setenv("POSTGRES_URL", c.pg)
			if got := Engine(); got != c.want {
				t.Fatalf("Engine() = %q, want %q", got, c.want)
			}
			if got := Shared(); got != (c.want != "memory") {
				t.Fatalf("Shared() = %v with engine %s", got, c.want)
			}
		})
	}
}

// Without a URL the description's Redis store runs in memory (its
// ${REDIS_URL} is never expanded), and memory stores stay as they are.
func TestApplyMemory(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := Apply(reg, "rate-sync.toml", []byte(file)); err != nil {
		t.Fatal(err)
	}
	for _, s := range reg.Stores() {
		if s.Engine != "memory" {
			t.Errorf("store %s on %s, want memory", s.Name, s.Engine)
		}
	}
	if !strings.Contains(Describe(), "memory") {
		t.Errorf("Describe() = %q", Describe())
	}
}

// A URL with a password never reaches the output, and the key prefix does.
func TestDescribeHidesURL(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://user:s3cret@127.0.0.1:6379/0")
	t.Setenv("KEY_PREFIX", "mine")
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := Apply(reg, "rate-sync.toml", []byte(file)); err != nil { // no I/O: the engine opens lazily
		t.Fatal(err)
	}
	d := Describe()
	if strings.Contains(d, "s3cret") || !strings.Contains(d, `"mine"`) {
		t.Errorf("Describe() = %q", d)
	}
	engines := map[string]string{}
	for _, s := range reg.Stores() {
		engines[s.Name] = s.Engine
	}
	if engines["redis"] != "redis" || engines["local"] != "memory" {
		t.Errorf("stores %v: want redis on redis, local on memory", engines)
	}
}

func TestApplyBadFile(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	reg := ratesync.NewRegistry()
	defer reg.Close()
	err := Apply(reg, "bad.toml", []byte("[limiters.api]\nstore = \"redis\"\nrate_per_second = -1\n"))
	if !errors.Is(err, ratesync.ErrInvalidConfig) || !strings.Contains(err.Error(), "bad.toml") {
		t.Fatalf("Apply of a bad file: %v", err)
	}
}
