package pgstore_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
)

// The configuration file names the engine; importing the package (here,
// and with import _ in a program that only loads files) registers it.
// DATABASE_URL is the server. Once the configuration is applied, the store
// creates its schema (PG_SCHEMA here) and table in the background, and a
// first decision waits for that; with auto_create = false, run ratesync
// migrate first.
func Example() {
	cfg, err := ratesync.ParseConfig("rate-sync.toml", []byte(`
[stores.db]
engine = "postgres"
url = "${DATABASE_URL}"
schema_name = "${PG_SCHEMA:-ratesync}"

[limiters.reports]
store = "db"
max_concurrent = 2       # at most 2 reports at once, across every instance
lease_seconds = 60       # a crashed holder's slot frees within a minute
`))
	if err != nil {
		panic(err)
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := reg.ApplyConfig(cfg); err != nil {
		panic(err)
	}
	reports, _ := reg.For("reports", "tenant-7")
	ctx := context.Background()
	var leases []*ratesync.Lease
	for range 3 {
		d, err := reports.Try(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Println(d.Allowed, d.Remaining)
		if d.Allowed {
			leases = append(leases, d.Lease)
		}
	}
	for _, l := range leases {
		l.Release(ctx)
	}
	st, _ := reports.State(ctx)
	fmt.Println("after release:", st.Remaining, "of", st.Limit)
	// Prints:
	// true 1
	// true 0
	// false 0
	// after release: 2 of 2
}

// A store on a pgx pool the program owns, added to a registry in code.
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close() // the store never closes a pool it was given
	store, err := pgstore.New(pool, pgstore.WithSchema(cmp.Or(os.Getenv("PG_SCHEMA"), "ratesync")))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil { // or let the first decision create the schema
		panic(err)
	}

	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.AddStore("db", store)
	reg.ConfigureLimiter("login", ratesync.Rule{Store: "db", Algorithm: ratesync.SlidingWindow, Limit: 2, Window: 5 * time.Minute})
	login, _ := reg.For("login", ratesync.HashIdentifier("alice@example.com"))
	for range 3 {
		d, _ := login.Try(ctx)
		fmt.Println(d.Allowed, d.Remaining)
	}
	// Prints:
	// true 1
	// true 0
	// false 0
}

// The examples need a PostgreSQL server, so they have no Output comment
// (go test would run them without one): TestExamples runs each on the
// server of RATESYNC_TEST_POSTGRES_URL, in a schema of its own that it
// drops afterwards, and compares what the example prints with the
// "Prints:" comment at its end.
func TestExamples(t *testing.T) {
	url := testenv.PostgresURL(t)
	for name, fn := range map[string]func(){"Example": Example, "ExampleNew": ExampleNew} {
		t.Run(name, func(t *testing.T) {
			schema := randomSchema()
			t.Setenv("DATABASE_URL", url)
			t.Setenv("PG_SCHEMA", schema)
			defer func() {
				p, err := pgxpool.New(context.Background(), url)
				if err != nil {
					t.Errorf("drop schema %s: %v", schema, err)
					return
				}
				defer p.Close()
				if _, err := p.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
					t.Errorf("drop schema %s: %v", schema, err)
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
