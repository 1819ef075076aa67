package pgstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

func init() { ratesync.RegisterEngine("postgres", open) }

// open builds a store and the pool it owns from a [stores.NAME] table with
// engine = "postgres". See docs/postgres.md for the keys.
func open(cfg *ratesync.StoreConfig) (driver.Store, error) {
	url, err := cfg.String("url", "")
	if err != nil {
		return nil, err
	}
	schema, err := cfg.String("schema_name", DefaultSchema)
	if err != nil {
		return nil, err
	}
	table, err := cfg.String("table_name", DefaultTable)
	if err != nil {
		return nil, err
	}
	poolMin, err := cfg.Int("pool_min_size", 0)
	if err != nil {
		return nil, err
	}
	poolMax, err := cfg.Int("pool_max_size", 0)
	if err != nil {
		return nil, err
	}
	auto, err := cfg.Bool("auto_create", true)
	if err != nil {
		return nil, err
	}
	unlogged, err := cfg.Bool("unlogged", false)
	if err != nil {
		return nil, err
	}
	sweep, err := cfg.Seconds("sweep_interval_seconds", DefaultSweepInterval)
	if err != nil {
		return nil, err
	}
	if cfg.Has("timing_margin_ms") {
		return nil, cfg.Errorf("timing_margin_ms", "not supported: ratesync-go decides on the server's clock with exact timing; remove the key")
	}
	switch {
	case url == "":
		return nil, cfg.Errorf("url", "required: a PostgreSQL URL such as postgres://user@host:5432/db")
	case schema == "":
		return nil, cfg.Errorf("schema_name", "must not be empty")
	case table == "":
		return nil, cfg.Errorf("table_name", "must not be empty")
	case len(table) > 50:
		return nil, cfg.Errorf("table_name", "must be at most 50 bytes (PostgreSQL identifiers are 63 with the function suffixes)")
	case poolMin < 0:
		return nil, cfg.Errorf("pool_min_size", "must be >= 0")
	case poolMax < 0:
		return nil, cfg.Errorf("pool_max_size", "must be >= 1")
	case poolMax > 0 && poolMin > poolMax:
		return nil, cfg.Errorf("pool_min_size", "must not exceed pool_max_size (%d)", poolMax)
	case sweep <= 0:
		return nil, cfg.Errorf("sweep_interval_seconds", "must be > 0")
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, cfg.Errorf("url", "%s", strings.ReplaceAll(err.Error(), url, "<url>"))
	}
	if poolMax > 0 {
		pc.MaxConns = int32(poolMax)
	}
	if poolMin > 0 {
		pc.MinConns = int32(poolMin)
	}
	// NewWithConfig connects lazily (MinConns aside): opening a store does
	// no I/O, so `ratesync check` works without the database.
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("stores.%s: %w", cfg.Name, err)
	}
	s, err := New(pool, WithSchema(schema), WithTable(table), WithAutoCreate(auto), WithUnlogged(unlogged), WithSweepInterval(sweep))
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("stores.%s: %w", cfg.Name, err)
	}
	s.owned = pool.Close
	return s, nil
}

// FromConfig opens the store of a [stores.NAME] table with engine =
// "postgres", as the engine does; `ratesync migrate` uses it. The store
// owns its pool: Close closes it.
func FromConfig(cfg *ratesync.StoreConfig) (*Store, error) {
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	return s.(*Store), nil
}
