// Package pgstore is the PostgreSQL rate limit store: engine = "postgres"
// in a configuration file, or New with a pgx v5 pool in code.
//
// Every decision, whatever its checks, is one round trip: one call of a
// PL/pgSQL function that creates and locks the rows it needs in (key,
// kind) order (so concurrent decisions never deadlock) and applies every
// check or none, on the server's clock (clock_timestamp()). Concurrency
// waiters are woken through LISTEN/NOTIFY on one connection per store; a
// background sweep deletes idle rows. See docs/postgres.md.
//
// Importing the package registers the "postgres" engine:
//
//	import _ "github.com/rate-sync/ratesync-go/pgstore"
package pgstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/notify"
)

// Pool is the part of a *pgxpool.Pool the store uses.
type Pool interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
}

// Defaults of the options.
const (
	DefaultSchema        = "public"
	DefaultTable         = "rate_limiter_state" // rate-sync's table name
	DefaultSweepInterval = 30 * time.Second
	sweepBatch           = 1000
)

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("ratesync/pgstore: store is closed")

// SchemaVersion is the version of the schema this package writes.
const SchemaVersion = 1

//go:embed schema.sql
var schemaSQL string

// Store is a [driver.Store] on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool     Pool
	owned    func() // closes the pool when the store opened it
	schema   string
	table    string
	unlogged bool
	auto     bool
	clock    func() time.Time // tests only

	q       queries
	channel string

	migrateOnce sync.Mutex
	migrated    atomic.Bool

	sweepEvery time.Duration
	stop       chan struct{}
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closed     atomic.Bool

	hub *notify.Hub // release subscribers and the one LISTEN connection
}

// queries are the statements, with the quoted object names filled in.
type queries struct {
	decide, bucket, release, extend, reset, resetAll, sweep string
}

// Option configures a Store.
type Option func(*Store)

// WithSchema sets the schema of the store's objects (default "public").
func WithSchema(s string) Option { return func(st *Store) { st.schema = s } }

// WithTable sets the table name, also the prefix of the store's functions
// (default "rate_limiter_state").
func WithTable(t string) Option { return func(st *Store) { st.table = t } }

// WithAutoCreate says whether the store creates or upgrades its schema on
// first use (default true). With false, run Migrate (or `ratesync migrate`)
// first, or give the SQL of MigrationSQL to a DBA.
func WithAutoCreate(on bool) Option { return func(st *Store) { st.auto = on } }

// WithUnlogged creates the table UNLOGGED: faster writes, but its content
// is lost after a crash and not replicated to standbys (see
// docs/postgres.md). It applies when the table is created.
func WithUnlogged(on bool) Option { return func(st *Store) { st.unlogged = on } }

// WithSweepInterval sets how often idle rows are deleted (default 30s).
func WithSweepInterval(d time.Duration) Option {
	return func(st *Store) {
		if d > 0 {
			st.sweepEvery = d
		}
	}
}

func withClock(now func() time.Time) Option { return func(s *Store) { s.clock = now } }

// New returns a store on the caller's pool; the store never closes it. It
// does no I/O; the schema is created on first use unless
// WithAutoCreate(false).
func New(pool Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("ratesync/pgstore: New: pool is nil")
	}
	s := &Store{pool: pool, schema: DefaultSchema, table: DefaultTable, auto: true, sweepEvery: DefaultSweepInterval, stop: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.schema == "" || s.table == "" {
		return nil, errors.New("ratesync/pgstore: schema and table names must not be empty")
	}
	if len(s.table) > 50 {
		return nil, fmt.Errorf("ratesync/pgstore: table name %q is longer than 50 bytes (PostgreSQL truncates identifiers at 63 with the function suffixes)", s.table)
	}
	S := quote(s.schema)
	fn := func(name string) string { return S + "." + quote(s.table+"_"+name) }
	T := S + "." + quote(s.table)
	s.q = queries{
		decide:   "SELECT " + fn("decide") + "($1, $2, $3, $4, $5, $6, $7, $8)",
		bucket:   strings.ReplaceAll(bucketSQL, "{{T}}", T),
		release:  "SELECT " + fn("release") + "($1, $2, $3)",
		extend:   "SELECT " + fn("extend") + "($1, $2, $3, $4)",
		reset:    "DELETE FROM " + T + " WHERE key = $1",
		resetAll: "TRUNCATE " + T,
		sweep:    "DELETE FROM " + T + " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " + T + " WHERE expires_at <= " + fn("now") + "(NULL) LIMIT " + fmt.Sprint(sweepBatch) + "))",
	}
	s.channel = s.schema + "." + s.table + "_released"
	s.hub = notify.New(s.listen)
	s.wg.Add(1)
	go s.sweeper()
	return s, nil
}

// bucketSQL is the fast path of a decision that is one token-bucket check
// (the most common): a single upsert statement, with no PL/pgSQL. The
// conflict branch runs on the locked row and records in ok whether it
// admitted, so RETURNING gives the exact answer for both outcomes; the
// asynchronous commit is set from inside the statement. $1 key, $2 cost
// times interval (ns), $3 burst times interval, $4 test clock or NULL.
const bucketSQL = `WITH c AS (
  SELECT coalesce($4::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000) AS now,
    set_config('synchronous_commit', 'off', true) AS cfg
)
INSERT INTO {{T}} AS s (key, kind, tat, expires_at, ok)
SELECT $1, 1, c.now + $2, c.now + $2, true FROM c
ON CONFLICT (key, kind) DO UPDATE SET
  ok = greatest(coalesce(s.tat, 0), excluded.tat - $2) + $2 - $3 <= excluded.tat - $2,
  tat = CASE WHEN greatest(coalesce(s.tat, 0), excluded.tat - $2) + $2 - $3 <= excluded.tat - $2
    THEN greatest(coalesce(s.tat, 0), excluded.tat - $2) + $2 ELSE s.tat END,
  expires_at = CASE WHEN greatest(coalesce(s.tat, 0), excluded.tat - $2) + $2 - $3 <= excluded.tat - $2
    THEN greatest(coalesce(s.tat, 0), excluded.tat - $2) + $2 ELSE s.expires_at END
RETURNING s.tat, s.ok, (SELECT now FROM c)`

// quote returns a PostgreSQL quoted identifier.
func quote(id string) string { return `"` + strings.ReplaceAll(id, `"`, `""`) + `"` }

// MigrationSQL returns the SQL that creates (or upgrades to) the current
// schema, for a DBA to review and run.
func (s *Store) MigrationSQL() string {
	unlogged := ""
	if s.unlogged {
		unlogged = "UNLOGGED "
	}
	r := strings.NewReplacer("{{S}}", quote(s.schema), "{{T}}", quote(s.table), "{{UNLOGGED}}", unlogged)
	// Functions are named table_name + "_" + suffix, quoted as one identifier.
	sql := schemaSQL
	for _, suffix := range []string{"now", "check", "decide", "release", "extend"} {
		sql = strings.ReplaceAll(sql, "{{P}}"+suffix, quote(s.table+"_"+suffix))
	}
	version := fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s.%[2]s (version int NOT NULL);
DELETE FROM %[1]s.%[2]s;
INSERT INTO %[1]s.%[2]s VALUES (%[3]d);
`, quote(s.schema), quote(s.table+"_version"), SchemaVersion)
	return r.Replace(sql) + version
}

// Migrate creates or upgrades the store's schema. Many processes can call
// it at once: an advisory lock makes them take turns, and each step is
// idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("ratesync/pgstore: migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "ratesync:"+s.schema+"."+s.table); err != nil {
		return fmt.Errorf("ratesync/pgstore: migrate: %w", err)
	}
	var version int
	err = tx.QueryRow(ctx, "SELECT version FROM "+quote(s.schema)+"."+quote(s.table+"_version")).Scan(&version)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
	case errors.Is(err, pgx.ErrNoRows), errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000"):
		// No version table (or schema) yet: a fresh database. The failed
		// statement aborted the transaction; start again under the lock.
		tx.Rollback(ctx)
		if tx, err = s.pool.Begin(ctx); err != nil {
			return fmt.Errorf("ratesync/pgstore: migrate: %w", err)
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "ratesync:"+s.schema+"."+s.table); err != nil {
			return fmt.Errorf("ratesync/pgstore: migrate: %w", err)
		}
		version = 0
	default:
		return fmt.Errorf("ratesync/pgstore: migrate: reading the schema version: %w", err)
	}
	if version > SchemaVersion {
		return fmt.Errorf("ratesync/pgstore: schema %s.%s is at version %d, newer than this program's %d: upgrade ratesync-go", s.schema, s.table, version, SchemaVersion)
	}
	if version < SchemaVersion {
		if _, err := tx.Exec(ctx, s.MigrationSQL()); err != nil {
			return fmt.Errorf("ratesync/pgstore: migrate %s.%s to version %d: %w", s.schema, s.table, SchemaVersion, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("ratesync/pgstore: migrate: %w", err)
	}
	s.migrated.Store(true)
	return nil
}

// ready runs the migrations once when auto-create is on.
func (s *Store) ready(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.auto || s.migrated.Load() {
		return nil
	}
	s.migrateOnce.Lock()
	defer s.migrateOnce.Unlock()
	if s.migrated.Load() {
		return nil
	}
	return s.Migrate(ctx)
}

func (s *Store) now() any {
	if s.clock == nil {
		return nil
	}
	return s.clock().UnixNano()
}

func (s *Store) run(ctx context.Context, checks []driver.Check, results []driver.Result, consume bool) (bool, error) {
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	if consume && len(checks) == 1 && checks[0].Policy.Kind == driver.TokenBucket && max(checks[0].Cost, 1) <= checks[0].Policy.Burst {
		return s.bucket(ctx, &checks[0], &results[0])
	}
	n := len(checks)
	keys := make([]string, n)
	kinds := make([]int16, n)
	as := make([]int64, n)
	bs := make([]int64, n)
	costs := make([]int32, n)
	token := ""
	for i := range checks {
		c := &checks[i]
		p := &c.Policy
		keys[i] = c.Key.Encoded()
		costs[i] = int32(max(c.Cost, 1))
		switch p.Kind {
		case driver.TokenBucket:
			kinds[i], as[i], bs[i] = 1, int64(p.Interval()), int64(p.Burst)
		case driver.SlidingWindow:
			kinds[i], as[i], bs[i] = 2, int64(p.Window), int64(p.Limit)
		default:
			kinds[i], as[i], bs[i] = 3, int64(p.LeaseTTL), int64(p.MaxConcurrent)
			if consume && token == "" {
				token = driver.NewLeaseID()
			}
		}
	}
	var out []int64
	// The call must finish once sent: a cancelled context would leave
	// the caller without the lease the server may have granted.
	if err := s.pool.QueryRow(context.WithoutCancel(ctx), s.q.decide, consume, token, s.now(), keys, kinds, as, bs, costs).Scan(&out); err != nil {
		return false, fmt.Errorf("ratesync/pgstore: decide: %w", err)
	}
	if len(out) != 1+4*n {
		return false, fmt.Errorf("ratesync/pgstore: decide returned %d values for %d checks", len(out), n)
	}
	all := out[0] == 1
	for i := range checks {
		v := out[1+4*i:]
		r := driver.Result{
			Allowed:    v[0] == 1,
			Limit:      checks[i].Policy.Capacity(),
			Remaining:  int(v[1]),
			RetryAfter: time.Duration(v[2]),
			ResetAfter: time.Duration(v[3]),
		}
		if v[2] < 0 {
			r.RetryAfter = time.Duration(1<<63 - 1)
		}
		if consume && all && checks[i].Policy.Kind == driver.Concurrency {
			r.Lease = token
		}
		results[i] = r
	}
	return all, nil
}

// bucket decides one token-bucket check with bucketSQL.
func (s *Store) bucket(ctx context.Context, c *driver.Check, res *driver.Result) (bool, error) {
	iv := int64(c.Policy.Interval())
	cost := int64(max(c.Cost, 1))
	capNs := int64(c.Policy.Burst) * iv
	var tat, now int64
	var ok bool
	if err := s.pool.QueryRow(context.WithoutCancel(ctx), s.q.bucket, c.Key.Encoded(), cost*iv, capNs, s.now()).Scan(&tat, &ok, &now); err != nil {
		return false, fmt.Errorf("ratesync/pgstore: decide: %w", err)
	}
	d := max(tat-now, 0)
	avail := func(d int64) int {
		if capNs > d {
			return int((capNs - d) / iv)
		}
		return 0
	}
	*res = driver.Result{Allowed: ok, Limit: c.Policy.Burst, Remaining: avail(d), ResetAfter: time.Duration(d)}
	if !ok {
		res.RetryAfter = time.Duration(d + cost*iv - capNs)
	}
	return ok, nil
}

// Decide implements driver.Store.
func (s *Store) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	if len(checks) == 0 {
		return true, s.ready(ctx)
	}
	if dupLeases(checks) {
		return false, errors.New("ratesync/pgstore: one decision holds two concurrency checks on the same key")
	}
	return s.run(ctx, checks, results, true)
}

func dupLeases(checks []driver.Check) bool {
	for i := range checks {
		if checks[i].Policy.Kind != driver.Concurrency {
			continue
		}
		for j := i + 1; j < len(checks); j++ {
			if checks[j].Policy.Kind == driver.Concurrency && checks[j].Key == checks[i].Key {
				return true
			}
		}
	}
	return false
}

// Peek implements driver.Store.
func (s *Store) Peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	if len(checks) == 0 {
		return s.ready(ctx)
	}
	_, err := s.run(ctx, checks, results, false)
	return err
}

// Release implements driver.Store; releasing a lease that is not held
// does nothing.
func (s *Store) Release(ctx context.Context, key driver.Key, lease string) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	var ok bool
	if err := s.pool.QueryRow(ctx, s.q.release, key.Encoded(), lease, s.channel).Scan(&ok); err != nil {
		return fmt.Errorf("ratesync/pgstore: release: %w", err)
	}
	return nil
}

// Extend implements driver.Extender.
func (s *Store) Extend(ctx context.Context, key driver.Key, lease string, ttl time.Duration) (bool, error) {
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	var ok bool
	if err := s.pool.QueryRow(ctx, s.q.extend, key.Encoded(), lease, int64(ttl), s.now()).Scan(&ok); err != nil {
		return false, fmt.Errorf("ratesync/pgstore: extend: %w", err)
	}
	return ok, nil
}

// Reset implements driver.Store.
func (s *Store) Reset(ctx context.Context, key driver.Key) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, s.q.reset, key.Encoded())
	return err
}

// ResetAll implements driver.Store: it empties the store's table.
func (s *Store) ResetAll(ctx context.Context) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, s.q.resetAll)
	return err
}

// Ping implements driver.Store: it checks the connection and, with
// auto-create, the schema.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, "SELECT 1")
	return err
}

// Sweep deletes up to 1000 idle rows (state equivalent to no state) and
// returns how many it deleted. The background sweeper calls it every sweep
// interval, again at once while it finds full batches.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	tag, err := s.pool.Exec(ctx, s.q.sweep)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (s *Store) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.sweepEvery)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// Bounded: at most ten batches per tick.
			for range 10 {
				n, err := s.Sweep(ctx)
				if err != nil || n < sweepBatch {
					break
				}
			}
		}
	}
}

// SubscribeReleases implements driver.ReleaseNotifier: all subscribers
// share one LISTEN connection, opened in the background.
func (s *Store) SubscribeReleases(fn func(driver.Key)) func() { return s.hub.Subscribe(fn) }

// listen holds one connection in LISTEN until ctx is done; it reconnects
// after errors (waiters fall back on lease expiry meanwhile).
func (s *Store) listen(ctx context.Context, deliver func(string)) {
	for ctx.Err() == nil {
		s.listenOnce(ctx, deliver)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, deliver func(string)) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// The connection is in LISTEN: close it rather than reuse it.
		c := conn.Hijack()
		c.Close(context.Background())
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+quote(s.channel)); err != nil {
		return err
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		deliver(n.Payload)
	}
}

// Close stops the sweeper and the listener; it closes the pool only when
// the store opened it. Close is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		s.wg.Wait()
		s.hub.Close()
		if s.owned != nil {
			s.owned()
		}
	})
	return nil
}

var (
	_ driver.Store           = (*Store)(nil)
	_ driver.Extender        = (*Store)(nil)
	_ driver.ReleaseNotifier = (*Store)(nil)
)
