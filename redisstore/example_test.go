package redisstore_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/redisstore"
)

// The configuration file names the engine; importing the package (here,
// and with import _ in a program that only loads files) registers it.
// REDIS_URL is the server, KEY_PREFIX keeps this program's keys apart.
func Example() {
	cfg, err := ratesync.ParseConfig("rate-sync.toml", []byte(`
[stores.redis]
engine = "redis"
url = "${REDIS_URL}"
key_prefix = "${KEY_PREFIX:-myapp}"

[limiters.api]
store = "redis"          # every instance of the service shares this limit
rate_per_second = 1.0
burst = 2
`))
	if err != nil {
		panic(err)
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := reg.ApplyConfig(cfg); err != nil {
		panic(err)
	}
	api, _ := reg.For("api", "user-42")
	for range 3 {
		d, err := api.Try(context.Background())
		if err != nil {
			panic(err)
		}
		fmt.Println(d.Allowed, d.Remaining)
	}
	// Prints:
	// true 1
	// true 0
	// false 0
}

// A store on a go-redis client the program owns (any redis.UniversalClient:
// a Cluster or Sentinel client too), added to a registry in code.
func ExampleNew() {
	opts, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	client := redis.NewClient(opts)
	defer client.Close() // the store never closes a client it was given
	store, err := redisstore.New(client, redisstore.WithKeyPrefix(cmp.Or(os.Getenv("KEY_PREFIX"), "myapp")))
	if err != nil {
		panic(err)
	}
	defer store.Close()

	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.AddStore("redis", store)
	reg.ConfigureLimiter("exports", ratesync.Rule{Store: "redis", MaxConcurrent: 1})
	exports, _ := reg.Get("exports")
	ctx := context.Background()
	first, _ := exports.Try(ctx)
	second, _ := exports.Try(ctx)
	fmt.Println(first.Allowed, second.Allowed)
	first.Lease.Release(ctx)
	third, _ := exports.Try(ctx)
	fmt.Println(third.Allowed)
	third.Lease.Release(ctx)
	// Prints:
	// true false
	// true
}

// The examples need a Redis server, so they have no Output comment (go
// test would run them without one): TestExamples runs each on the server
// of RATESYNC_TEST_REDIS_URL, under a key prefix of its own that it
// deletes afterwards, and compares what the example prints with the
// "Prints:" comment at its end.
func TestExamples(t *testing.T) {
	url := testenv.RedisURL(t)
	for name, fn := range map[string]func(){"Example": Example, "ExampleNew": ExampleNew} {
		t.Run(name, func(t *testing.T) {
			prefix := randomPrefix(t)
			t.Setenv("REDIS_URL", url)
			t.Setenv("KEY_PREFIX", prefix)
			defer func() {
				o, _ := redis.ParseURL(url)
				c := redis.NewClient(o)
				defer c.Close()
				if s, err := redisstore.New(c, redisstore.WithKeyPrefix(prefix)); err == nil {
					s.ResetAll(context.Background())
					s.Close()
				}
			}()
			if got, want := exampleOutput(t, fn), examplePrints(t, name); got != want {
				t.Fatalf("%s printed:\n%s\nwant:\n%s", name, got, want)
			}
		})
	}
}

// exampleOutput returns what fn prints on os.Stdout.
func exampleOutput(t *testing.T, fn func()) (got string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	defer func() { // also when fn panics
		os.Stdout = stdout
		w.Close()
		got = strings.TrimSpace(<-out)
		r.Close()
		if p := recover(); p != nil {
			t.Fatalf("panic: %v (printed %q)", p, got)
		}
	}()
	fn()
	return ""
}

// examplePrints returns the "Prints:" comment at the end of the example
// function name in example_test.go.
func examplePrints(t *testing.T, name string) string {
	t.Helper()
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(src), "\nfunc "+name+"() {\n")
	body, _, _ = strings.Cut(body, "\n}\n")
	_, prints, found := strings.Cut(body, "\t// Prints:\n")
	if !ok || !found {
		t.Fatalf("example_test.go: no func %s with a Prints: comment", name)
	}
	var lines []string
	for _, l := range strings.Split(prints, "\n") {
		lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, "\t//"), " "))
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
