package ratesync_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// A registry of your own, configured in code: one store, one rule, then
// the calls of rate-sync's quick start. The package-level functions
// (ratesync.Acquire, ratesync.Try...) do the same on the registry loaded
// from rate-sync.toml.
func Example() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 10})

	ctx := context.Background()
	start := time.Now()
	for range 3 {
		lease, err := reg.Acquire(ctx, "api") // waits until the limit allows
		if err != nil {
			panic(err)
		}
		lease.Release(ctx) // a no-op for pure rate limits; frees max_concurrent slots
	}
	fmt.Println("3 acquisitions at 10/s took at least 200ms:", time.Since(start) >= 200*time.Millisecond)
	// Output: 3 acquisitions at 10/s took at least 200ms: true
}

// Being limited is a result, not an error: Try answers at once.
func ExampleLimiter_Try() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 1, Burst: 2})
	api, _ := reg.Get("api")
	for range 3 {
		d, err := api.Try(context.Background())
		if err != nil {
			panic(err) // the store could not decide and the rule fails closed
		}
		fmt.Printf("allowed=%v remaining=%d of %d, retry after %v\n", d.Allowed, d.Remaining, d.Limit, d.RetryAfter.Round(100*time.Millisecond))
	}
	// Output:
	// allowed=true remaining=1 of 2, retry after 0s
	// allowed=true remaining=0 of 2, retry after 0s
	// allowed=false remaining=0 of 2, retry after 1s
}

// Do runs a function under the limit, waiting up to a budget, and
// releases the concurrency slot when the function returns.
func ExampleLimiter_Do() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("exports", ratesync.Rule{Store: "main", MaxConcurrent: 1})
	exports, _ := reg.Get("exports")
	ctx := context.Background()

	held, _ := exports.Acquire(ctx) // someone else's export holds the only slot
	err := exports.Do(ctx, func(context.Context) error {
		fmt.Println("never runs: the slot stays taken")
		return nil
	}, ratesync.WithTimeout(50*time.Millisecond))
	fmt.Println("gave up:", errors.Is(err, ratesync.ErrTimeout))

	held.Release(ctx)
	err = exports.Do(ctx, func(context.Context) error {
		fmt.Println("exporting")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// gave up: true
	// exporting
	// done: <nil>
}

// Per-key limits from one rule: each user has a bucket of their own, and
// a path of identifiers (tenant, then user) is a key of its own.
func ExampleRegistry_For() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 0.1, Burst: 1})
	ctx := context.Background()
	for _, user := range []string{"alice", "alice", "bob"} {
		l, _ := reg.For("api", user)
		d, _ := l.Try(ctx)
		fmt.Println(l.Key(), d.Allowed)
	}
	l, _ := reg.For("api", "acme", "alice")
	fmt.Println(l.Key())
	// Output:
	// api:alice true
	// api:alice false
	// api:bob true
	// api:acme:alice
}

// A template names the rule and where each identifier goes.
func ExampleRegistry_Resolve() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 5})
	l, err := reg.Resolve("api:{tenant_id}:{user_id}", ratesync.Values{"tenant_id": "acme", "user_id": "42"})
	if err != nil {
		panic(err)
	}
	fmt.Println(l.Name(), l.Key())
	_, err = reg.Resolve("api:{tenant_id}", nil)
	fmt.Println(errors.Is(err, ratesync.ErrMissingValue))
	// Output:
	// api api:acme:42
	// true
}

// Login protection: per IP and per account, decided as one request. With
// AllMustPass (rate-sync's "most_restrictive", the default) the request is
// admitted only when every part admits, in one all-or-nothing store call,
// so a denial consumes nothing from the other part; with AnyMustPass the
// first part that admits lets it through.
func ExampleRegistry_Composite() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("login_ip", ratesync.Rule{Store: "main", Algorithm: ratesync.SlidingWindow, Limit: 5, Window: 15 * time.Minute})
	reg.ConfigureLimiter("login_account", ratesync.Rule{Store: "main", Algorithm: ratesync.SlidingWindow, Limit: 2, Window: 15 * time.Minute})
	login, err := reg.Composite(map[string]string{"by_ip": "login_ip", "by_account": "login_account"}, ratesync.AllMustPass)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	account := ratesync.HashIdentifier("alice@example.com")
	for range 3 {
		res, _ := login.Check(ctx, map[string]string{"by_ip": "198.51.100.7", "by_account": account})
		fmt.Printf("allowed=%v triggered by %q; IP attempts left %d, account attempts left %d\n",
			res.Allowed, res.TriggeredBy, res.Results["by_ip"].Remaining, res.Results["by_account"].Remaining)
	}
	// Output:
	// allowed=true triggered by ""; IP attempts left 4, account attempts left 1
	// allowed=true triggered by ""; IP attempts left 3, account attempts left 0
	// allowed=false triggered by "by_account"; IP attempts left 3, account attempts left 0
}

// A configuration in rate-sync.toml's schema, parsed and applied to a
// registry (LoadConfig does both for a file; the package-level functions
// load ./rate-sync.toml by themselves).
func ExampleParseConfig() {
	cfg, err := ratesync.ParseConfig("rate-sync.toml", []byte(`
[stores.main]
engine = "memory"

[limiters.uploads]
store = "main"
max_concurrent = 2
timeout = 30.0
`))
	if err != nil {
		panic(err)
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := reg.ApplyConfig(cfg); err != nil {
		panic(err)
	}
	l, _ := reg.Get("uploads")
	fmt.Println(l.Rule().MaxConcurrent, l.Rule().Timeout, l.Rule().OnStoreError)

	// Errors name the file, the line, the table and the key.
	_, err = ratesync.ParseConfig("rate-sync.toml", []byte("[limiter.api]\nstore = \"main\"\n"))
	fmt.Println(err)
	// Output:
	// 2 30s local
	// ratesync: rate-sync.toml:1: limiter: unknown top-level key: did you mean [limiters.api]? (the file has [stores.NAME], [limiters.NAME] and [http] tables)
}

// State reads a limiter's state without consuming anything.
func ExampleLimiter_State() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("jobs", ratesync.Rule{Store: "main", MaxConcurrent: 3})
	jobs, _ := reg.Get("jobs")
	ctx := context.Background()
	lease, _ := jobs.Acquire(ctx)
	defer lease.Release(ctx)
	st, _ := jobs.State(ctx)
	fmt.Printf("allowed=%v remaining=%d of %d, in use %d\n", st.Allowed, st.Remaining, st.Limit, st.CurrentUsage)
	// Output: allowed=true remaining=2 of 3, in use 1
}

// Raw emails or API keys never need to become store keys. The hash equals
// rate-sync's hash_identifier: sha256 of the lowercased, trimmed value
// ("salt:" before it with a salt), 16 hex digits by default.
func ExampleHashIdentifier() {
	fmt.Println(ratesync.HashIdentifier("  Alice@Example.com "))
	fmt.Println(ratesync.HashIdentifier("alice@example.com", ratesync.WithSalt("pepper"), ratesync.WithLength(8)))
	// Output:
	// ff8d9819fc0e12bf
	// 881b8690
}

// Distinct lists of parts are distinct identifiers, whatever they hold.
func ExampleCombineIdentifiers() {
	fmt.Println(ratesync.CombineIdentifiers("acme", "42"))
	fmt.Println(ratesync.CombineIdentifiers("acme", "x:y"))
	fmt.Println(ratesync.CombineIdentifiers("acme:x", "y"))
	// Output:
	// acme:42
	// acme:x%3Ay
	// acme%3Ax:y
}
