package pgstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

// pgHolders counts lease holders in PostgreSQL itself, in a table of the
// test's own: holders is the current count, peak the highest seen.
type pgHolders struct {
	p      *pgxpool.Pool
	schema string
}

func (h pgHolders) Enter(ctx context.Context) error {
	_, err := h.p.Exec(ctx, "UPDATE "+h.schema+".holders SET holders = holders + 1, peak = greatest(peak, holders + 1)")
	return err
}

func (h pgHolders) Leave(ctx context.Context) error {
	_, err := h.p.Exec(ctx, "UPDATE "+h.schema+".holders SET holders = holders - 1")
	return err
}

func (h pgHolders) Peak(ctx context.Context) (n int, err error) {
	err = h.p.QueryRow(ctx, "SELECT peak FROM "+h.schema+".holders").Scan(&n)
	return n, err
}

// childPool is a small pool: four processes share the server's
// connections.
func childPool(t *testing.T) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	p, err := pgxpool.NewWithConfig(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

var hammer = storetest.MultiProcessOptions{
	ChildTest: "TestHammerChild",
	Namespace: func(t *testing.T) string {
		p := pool(t, nil)
		schema := randomSchema()
		t.Cleanup(func() { p.Exec(bg, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
		s, _ := pgstore.New(p, pgstore.WithSchema(schema))
		defer s.Close()
		if err := s.Migrate(bg); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Exec(bg, fmt.Sprintf(`CREATE TABLE %s.holders (id int PRIMARY KEY, holders int NOT NULL, peak int NOT NULL);
INSERT INTO %s.holders VALUES (1, 0, 0)`, schema, schema)); err != nil {
			t.Fatal(err)
		}
		return schema
	},
	Open: func(t *testing.T, schema string) driver.Store {
		s, err := pgstore.New(childPool(t), pgstore.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
	Holders: func(t *testing.T, schema string) storetest.Holders { return pgHolders{childPool(t), schema} },
	// Every decision on the one hot row takes its lock until commit, so
	// PostgreSQL serves far fewer acquisitions than Redis here.
	MinAcquisitions: 20,
}

// TestMultiProcessAccuracy runs 4 OS processes of 32 goroutines each on one
// key per policy (storetest.MultiProcess): never above the exact bound,
// never more holders (counted in PostgreSQL by the test) than
// max_concurrent, and no error surfaced.
func TestMultiProcessAccuracy(t *testing.T) { storetest.MultiProcess(t, hammer) }

// TestHammerChild is one process of TestMultiProcessAccuracy.
func TestHammerChild(t *testing.T) { storetest.MultiProcessChild(t, hammer) }

// TestReloadUnderLoad rewrites the configuration that 4 processes of 32
// goroutines follow every 200 ms for 10 s (storetest.ReloadUnderLoad).
func TestReloadUnderLoad(t *testing.T) { storetest.ReloadUnderLoad(t, hammer) }
