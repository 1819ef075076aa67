package benchmarks

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/pgstore"
)

// The PostgreSQL benchmarks use schema rsbench of the database named by
// RATESYNC_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
// dropped before and after each run.
const pgKeys = 10_000

func pgPool(b *testing.B) *pgxpool.Pool {
	url := os.Getenv("RATESYNC_TEST_POSTGRES_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 40
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err == nil {
		err = p.Ping(context.Background())
	}
	if err != nil {
		b.Skipf("no PostgreSQL: %v", err)
	}
	reset := func() { p.Exec(context.Background(), "DROP SCHEMA IF EXISTS rsbench CASCADE") }
	reset()
	b.Cleanup(func() { reset(); p.Close() })
	return p
}

func pgTable(b *testing.B, p *pgxpool.Pool, unlogged bool, ddl string) {
	u := ""
	if unlogged {
		u = "UNLOGGED "
	}
	if _, err := p.Exec(context.Background(), "CREATE SCHEMA IF NOT EXISTS rsbench; CREATE "+u+"TABLE "+ddl); err != nil {
		b.Fatal(err)
	}
}

// pgTransaction is design (a): BEGIN; SELECT ... FOR UPDATE; UPDATE (or
// INSERT); COMMIT, with the GCRA computed in Go on the client's clock.
func pgTransaction(b *testing.B, p *pgxpool.Pool, unlogged bool) decider {
	pgTable(b, p, unlogged, "rsbench.tx (key text PRIMARY KEY, tat bigint NOT NULL)")
	const interval, burst = int64(time.Microsecond), int64(1_000_000) // admits everything
	return func(ctx context.Context, key string) bool {
		err := pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
			now := time.Now().UnixNano()
			var tat int64
			err := tx.QueryRow(ctx, "SELECT tat FROM rsbench.tx WHERE key = $1 FOR UPDATE", key).Scan(&tat)
			if errors.Is(err, pgx.ErrNoRows) {
				_, err = tx.Exec(ctx, "INSERT INTO rsbench.tx VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, now+interval)
				return err
			}
			if err != nil {
				return err
			}
			tat = max(tat, now) + interval
			if tat-now > burst*interval {
				return errors.New("denied")
			}
			_, err = tx.Exec(ctx, "UPDATE rsbench.tx SET tat = $2 WHERE key = $1", key, tat)
			return err
		})
		return err == nil
	}
}

// pgBareUpsert is design (b), the ceiling: one upsert, no limiting logic.
func pgBareUpsert(b *testing.B, p *pgxpool.Pool, unlogged, async bool) decider {
	pgTable(b, p, unlogged, "rsbench.bare (key text PRIMARY KEY, n bigint NOT NULL)")
	q := "INSERT INTO rsbench.bare VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET n = rsbench.bare.n + 1"
	return func(ctx context.Context, key string) bool {
		if async {
			// One round trip: the SET LOCAL and the upsert in one implicit transaction.
			_, err := p.Exec(ctx, "SET LOCAL synchronous_commit = off; "+q, pgx.QueryExecModeSimpleProtocol, key)
			return err == nil
		}
		_, err := p.Exec(ctx, q, key)
		return err == nil
	}
}

func pgRatesync(b *testing.B, p *pgxpool.Pool, unlogged bool) decider {
	s, err := pgstore.New(p, pgstore.WithSchema("rsbench"), pgstore.WithUnlogged(unlogged))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	r := ratesync.NewRegistry()
	b.Cleanup(func() { r.Close(); s.Close() })
	// A stall of the shared machine past the default 250 ms call timeout
	// would open the breaker and hand the decisions to the local
	// fallback, which the decider below counts as failures: a long
	// timeout keeps every measured decision a store decision.
	r.AddStore("pg", s, ratesync.WithCallTimeout(10*time.Second))
	if err := r.ConfigureLimiter("api", ratesync.Rule{Store: "pg", RatePerSecond: ratesyncRate, Burst: ratesyncBurst}); err != nil {
		b.Fatal(err)
	}
	l, _ := r.Get("api")
	return func(ctx context.Context, key string) bool {
		d, err := l.For(key).Try(ctx)
		return err == nil && d.Allowed && !d.FailedOpen && !d.Fallback // a store error is no decision
	}
}

// BenchmarkPostgres10kKeys compares one decision at 32 goroutines on 10k
// keys: ratesync's function, the transaction design and the bare upsert,
// on logged and unlogged tables.
func BenchmarkPostgres10kKeys(b *testing.B) {
	for _, unlogged := range []bool{false, true} {
		kind := "logged"
		if unlogged {
			kind = "unlogged"
		}
		designs := []struct {
			name string
			make func(b *testing.B, p *pgxpool.Pool) decider
		}{
			{"ratesync", func(b *testing.B, p *pgxpool.Pool) decider { return pgRatesync(b, p, unlogged) }},
			{"transaction", func(b *testing.B, p *pgxpool.Pool) decider { return pgTransaction(b, p, unlogged) }},
			{"bare-upsert", func(b *testing.B, p *pgxpool.Pool) decider { return pgBareUpsert(b, p, unlogged, false) }},
			{"bare-upsert-async", func(b *testing.B, p *pgxpool.Pool) decider { return pgBareUpsert(b, p, unlogged, true) }},
		}
		for _, d := range designs {
			b.Run(kind+"/"+d.name, func(b *testing.B) {
				p := pgPool(b)
				benchConcurrentN(b, d.make(b, p), 32, pgKeys)
			})
		}
	}
}
