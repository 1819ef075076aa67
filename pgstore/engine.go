package pgstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

func init() { ratesync.RegisterEngine("postgres", open) }

// Defaults of the network bounds of a store opened from configuration
// (connect_timeout_seconds, keepalive_seconds, tcp_user_timeout_seconds;
// statement_timeout_seconds defaults to DefaultStatementTimeout).
const (
	DefaultConnectTimeout = 2 * time.Second
	DefaultKeepalive      = 10 * time.Second
	DefaultTCPUserTimeout = 10 * time.Second
)

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
	connectTimeout, err := cfg.Seconds("connect_timeout_seconds", DefaultConnectTimeout)
	if err != nil {
		return nil, err
	}
	keepalive, err := cfg.Seconds("keepalive_seconds", DefaultKeepalive)
	if err != nil {
		return nil, err
	}
	userTimeout, err := cfg.Seconds("tcp_user_timeout_seconds", DefaultTCPUserTimeout)
	if err != nil {
		return nil, err
	}
	stmtTimeout, err := cfg.Seconds("statement_timeout_seconds", DefaultStatementTimeout)
	if err != nil {
		return nil, err
	}
	batchWorkers, err := cfg.Int("batch_workers", 0)
	if err != nil {
		return nil, err
	}
	batchSize, err := cfg.Int("batch_size", 0)
	if err != nil {
		return nil, err
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
	case connectTimeout <= 0:
		return nil, cfg.Errorf("connect_timeout_seconds", "must be > 0")
	case keepalive < 0:
		return nil, cfg.Errorf("keepalive_seconds", "must be >= 0 (0 turns TCP keepalive off)")
	case userTimeout < 0:
		return nil, cfg.Errorf("tcp_user_timeout_seconds", "must be >= 0 (0 leaves the system default)")
	case stmtTimeout < time.Millisecond:
		return nil, cfg.Errorf("statement_timeout_seconds", "must be at least 0.001")
	case batchWorkers < 0:
		return nil, cfg.Errorf("batch_workers", "must be >= 1")
	case batchSize < 0:
		return nil, cfg.Errorf("batch_size", "must be >= 1 (1 turns batching off)")
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
	// Bounds: the URL's connect_timeout and statement_timeout stand unless
	// the table sets them.
	if pc.ConnConfig.ConnectTimeout == 0 || cfg.Has("connect_timeout_seconds") {
		pc.ConnConfig.ConnectTimeout = connectTimeout
	}
	if _, ok := pc.ConnConfig.RuntimeParams["statement_timeout"]; !ok || cfg.Has("statement_timeout_seconds") {
		pc.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(stmtTimeout.Milliseconds(), 10)
	}
	d := newDialer(keepalive, userTimeout, pc.ConnConfig.ConnectTimeout)
	pc.ConnConfig.DialFunc = d.DialContext // fallback hosts too
	// A connection that pgx closed after an abandoned call is still
	// draining in the background (up to 15 s on a silent network), and the
	// pool holds its slot until that ends: cut it now.
	pc.BeforeClose = func(c *pgx.Conn) {
		if c.IsClosed() {
			closeRaw(c.PgConn().Conn())
		}
	}
	// NewWithConfig connects lazily (MinConns aside): opening a store does
	// no I/O, so `ratesync check` works without the database.
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("stores.%s: %w", cfg.Name, err)
	}
	s, err := New(pool, WithSchema(schema), WithTable(table), WithAutoCreate(auto), WithUnlogged(unlogged),
		WithSweepInterval(sweep), WithStatementTimeout(stmtTimeout), WithBatching(batchWorkers, batchSize))
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("stores.%s: %w", cfg.Name, err)
	}
	s.owned, s.dialer = pool.Close, d
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
