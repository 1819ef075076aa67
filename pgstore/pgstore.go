// Package pgstore is the PostgreSQL rate limit store: engine = "postgres"
// in a configuration file, or New with a pgx v5 pool in code.
//
// Every decision, whatever its checks, is one round trip: one statement
// for a lone token-bucket check, one call of a PL/pgSQL function for
// anything else; under load, lone token-bucket checks share statements
// (WithBatching), each still decided on its own. Denials are answered on
// the committed state without a lock; admissions create and lock the rows
// they need in (key, kind) order (so concurrent decisions never deadlock)
// and apply every check or none, on the server's clock (clock_timestamp())
// read after the locks are held. Keys are bytes: any identifier of any length is a key.
// Concurrency waiters are woken through LISTEN/NOTIFY on one connection
// per store; a background sweep deletes idle rows. See docs/postgres.md.
//
// Importing the package registers the "postgres" engine:
//
//	import _ "github.com/rate-sync/ratesync-go/pgstore"
package pgstore

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
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
	DefaultSchema           = "public"
	DefaultTable            = "rate_limiter_state" // rate-sync's table name
	DefaultSweepInterval    = 30 * time.Second
	DefaultStatementTimeout = 5 * time.Second
	DefaultBatchWorkers     = 2
	DefaultBatchSize        = 64
	sweepBatch              = 1000
	// listenPing is how long the release listener waits for a
	// notification before it checks that its connection still answers.
	listenPing = 15 * time.Second
)

// ErrClosed is returned by calls on a closed Store. It is marked
// driver.ErrUnavailable.
var ErrClosed = errors.New("ratesync/pgstore: store is closed")

// SchemaVersion is the version of the schema this package writes.
// Version 2 holds keys as bytes and a window's admissions as (time, count)
// pairs; Migrate upgrades a version 1 table in place.
const SchemaVersion = 2

// maxKeyBytes is the longest key stored as it is; a longer key is stored
// as its first maxKeyBytes bytes followed by its SHA-256, so that rows stay
// small and still show which key they belong to.
const maxKeyBytes = 256

//go:embed schema.sql
var schemaSQL string

// Store is a [driver.Store] on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool     Pool
	owned    func()  // closes the pool when the store opened it
	dialer   *dialer // the owned pool's connections, closed by Close
	schema   string
	table    string
	unlogged bool
	auto     bool
	clock    func() time.Time // tests only
	noBucket bool             // benchmarks only: single buckets by the function
	bound    time.Duration    // statement timeout: calls without a deadline
	ping     time.Duration    // listener's quiet time before a ping

	q       queries
	channel string

	// Auto-create: the migration runs in the background under the store's
	// context (ready), so that a call timeout shorter than a first
	// migration does not undo it; callers wait for it up to their own
	// deadline.
	migMu    sync.Mutex
	migDone  chan struct{} // closed when the running migration ends; nil when none runs
	migErr   error         // the last migration's error
	migrated atomic.Bool

	sweepEvery time.Duration
	ctx        context.Context // cancelled by Close
	cancel     context.CancelFunc
	wg         sync.WaitGroup // the sweeper and background releases
	bgMu       sync.Mutex     // orders wg.Add before Close's wg.Wait
	closeOnce  sync.Once
	closed     atomic.Bool

	hub *notify.Hub // release subscribers and the one LISTEN connection

	// Batches of lone bucket decisions (bucket.go).
	inflight     atomic.Int32 // lone bucket decisions in flight
	directMax    int32        // in flight before batching starts
	batchWorkers int
	batchSize    int
	batchMu      sync.Mutex
	batchQueue   []*bucketCall
	batchRunners int
	batchClosed  bool

	longMu   sync.Mutex
	longKeys map[string]string // stored form → encoded key, for notifications
}

// queries are the statements, with the quoted object names filled in.
type queries struct {
	decide, bucket, batch, release, extend, reset, resetAll, sweep string
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

// WithStatementTimeout bounds each call whose context has no deadline, the
// sweeper's and the release listener's calls included (default 5s). A
// store opened from configuration also sets it as the connections'
// statement_timeout, so the server gives up on a statement as the client
// does.
func WithStatementTimeout(d time.Duration) Option {
	return func(st *Store) {
		if d > 0 {
			st.bound = d
		}
	}
}

// WithBatching sets how lone token-bucket decisions (one check that
// consumes, the most common decision) are batched: up to workers
// statements in flight, each deciding up to maxBatch of them (defaults
// DefaultBatchWorkers and DefaultBatchSize). A decision is sent at once,
// in a statement of its own, while at most four are in flight, so batching
// adds no wait at low concurrency; under load, the decisions that queue
// up while the workers are busy go together in one statement, each still
// decided on its own. maxBatch 1 sends every decision in a statement of
// its own.
func WithBatching(workers, maxBatch int) Option {
	return func(s *Store) {
		if workers > 0 {
			s.batchWorkers = workers
		}
		if maxBatch > 0 {
			s.batchSize = maxBatch
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
	s := &Store{pool: pool, schema: DefaultSchema, table: DefaultTable, auto: true,
		sweepEvery: DefaultSweepInterval, bound: DefaultStatementTimeout, ping: listenPing,
		directMax: 4, batchWorkers: DefaultBatchWorkers, batchSize: DefaultBatchSize}
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
		bucket:   strings.NewReplacer("{{T}}", T, "{{expiry}}", fn("expiry")).Replace(bucketSQL),
		batch:    strings.NewReplacer("{{T}}", T, "{{expiry}}", fn("expiry")).Replace(batchSQL),
		release:  "SELECT " + fn("release") + "($1, $2, $3)",
		extend:   "SELECT " + fn("extend") + "($1, $2, $3, $4)",
		reset:    "DELETE FROM " + T + " WHERE key = $1",
		resetAll: "TRUNCATE " + T,
		sweep: "DELETE FROM " + T + " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " + T + " WHERE expires_at <= " + fn("now") + "($1) LIMIT " +
			fmt.Sprint(sweepBatch) + ")) AND expires_at <= " + fn("now") + "($1)",
	}
	s.channel = channelName(s.schema, s.table)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.hub = notify.New(s.listen)
	s.wg.Add(1)
	go s.sweeper()
	return s, nil
}

// channelName is the store's NOTIFY channel: schema.table_released, or a
// hash of it when that is longer than PostgreSQL's 63-byte names.
func channelName(schema, table string) string {
	c := schema + "." + table + "_released"
	if len(c) <= 63 {
		return c
	}
	sum := sha256.Sum256([]byte(c))
	return "ratesync_released_" + hex.EncodeToString(sum[:16])
}

// quote returns a PostgreSQL quoted identifier.
func quote(id string) string { return `"` + strings.ReplaceAll(id, `"`, `""`) + `"` }

// MigrationSQL returns the SQL that creates (or upgrades to) the current
// schema, for a DBA to review and run.
func (s *Store) MigrationSQL() string {
	unlogged := ""
	if s.unlogged {
		unlogged = "UNLOGGED "
	}
	rel := quote(s.schema) + "." + quote(s.table)
	r := strings.NewReplacer("{{S}}", quote(s.schema), "{{T}}", quote(s.table), "{{UNLOGGED}}", unlogged,
		"{{REL}}", "'"+strings.ReplaceAll(rel, "'", "''")+"'")
	// Functions are named table_name + "_" + suffix, quoted as one identifier.
	sql := schemaSQL
	for _, suffix := range []string{"now", "expiry", "check", "decide", "release", "extend", "expires"} {
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
// idempotent. It runs on ctx alone (no statement timeout): upgrading a
// large table takes as long as it takes.
func (s *Store) Migrate(ctx context.Context) error {
	if err := s.migrate(ctx); err != nil {
		return classify(fmt.Errorf("ratesync/pgstore: migrate %s.%s: %w", s.schema, s.table, err))
	}
	s.migrated.Store(true)
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	lock := func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "ratesync:"+s.schema+"."+s.table)
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := lock(tx); err != nil {
		return err
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
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if err := lock(tx); err != nil {
			return err
		}
		version = 0
	default:
		return fmt.Errorf("reading the schema version: %w", err)
	}
	if version > SchemaVersion {
		return fmt.Errorf("schema at version %d, newer than this program's %d: upgrade ratesync-go", version, SchemaVersion)
	}
	if version < SchemaVersion {
		if _, err := tx.Exec(ctx, s.MigrationSQL()); err != nil {
			return fmt.Errorf("to version %d: %w", SchemaVersion, err)
		}
	}
	return tx.Commit(ctx)
}

// ready runs the migrations once when auto-create is on. The migration
// runs on a goroutine of the store, bounded by migrateTimeout and ended by
// Close; a caller waits for it until its context ends (then the next call
// finds it done). A migration that failed is tried again by the next call.
func (s *Store) ready(ctx context.Context) error {
	if s.closed.Load() {
		return driver.Unavailable(ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.auto || s.migrated.Load() {
		return nil
	}
	s.migMu.Lock()
	done := s.migDone
	if done == nil {
		s.bgMu.Lock()
		if s.closed.Load() {
			s.bgMu.Unlock()
			s.migMu.Unlock()
			return driver.Unavailable(ErrClosed)
		}
		s.wg.Add(1)
		s.bgMu.Unlock()
		done = make(chan struct{})
		s.migDone = done
		go func() {
			defer s.wg.Done()
			mctx, cancel := context.WithTimeout(s.ctx, migrateTimeout)
			err := s.Migrate(mctx)
			cancel()
			s.migMu.Lock()
			s.migErr, s.migDone = err, nil
			s.migMu.Unlock()
			close(done)
		}()
	}
	s.migMu.Unlock()
	select {
	case <-done:
		if s.migrated.Load() {
			return nil
		}
		s.migMu.Lock()
		defer s.migMu.Unlock()
		return s.migErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// migrateTimeout bounds an automatic migration (auto_create), which waits
// for other processes' migrations of the same schema.
const migrateTimeout = 30 * time.Second

// bounded returns ctx, limited to the statement timeout when it has no
// deadline of its own.
func (s *Store) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.bound)
}

func (s *Store) now() any {
	if s.clock == nil {
		return nil
	}
	return s.clock().UnixNano()
}

// storedKey returns the bytes that identify k's rows: its encoded form, or
// for a long key the first maxKeyBytes bytes of it followed by its
// SHA-256 (longer than any key stored as it is, so the two never meet).
func storedKey(k driver.Key) []byte {
	e := k.Encoded()
	if len(e) <= maxKeyBytes {
		return []byte(e)
	}
	sum := sha256.Sum256([]byte(e))
	out := make([]byte, 0, maxKeyBytes+sha256.Size)
	return append(append(out, e[:maxKeyBytes]...), sum[:]...)
}

// rememberLong records a long key's encoded form under its stored form,
// so that a release notification (which carries the stored form) can name
// the key to local waiters. Bounded: the map starts afresh when full.
func (s *Store) rememberLong(stored []byte, k driver.Key) {
	s.longMu.Lock()
	if s.longKeys == nil || len(s.longKeys) >= 4096 {
		s.longKeys = map[string]string{}
	}
	s.longKeys[string(stored)] = k.Encoded()
	s.longMu.Unlock()
}

// payloadKey turns a release notification's payload (the stored key in
// hex) into the key's encoded form; ok is false when it cannot.
func (s *Store) payloadKey(payload string) (string, bool) {
	b, err := hex.DecodeString(payload)
	if err != nil {
		return "", false
	}
	if len(b) <= maxKeyBytes {
		return string(b), true
	}
	s.longMu.Lock()
	e, ok := s.longKeys[string(b)]
	s.longMu.Unlock()
	return e, ok
}

func (s *Store) run(ctx context.Context, checks []driver.Check, results []driver.Result, consume bool) (bool, error) {
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	if consume && len(checks) == 1 && checks[0].Policy.Kind == driver.TokenBucket && max(checks[0].Cost, 1) <= checks[0].Policy.Burst && !s.noBucket {
		ok, done, err := s.decideBucket(ctx, &checks[0], &results[0])
		if done || err != nil {
			return ok, err
		}
	}
	n := len(checks)
	keys := make([][]byte, n)
	kinds := make([]int16, n)
	as := make([]int64, n)
	bs := make([]int64, n)
	costs := make([]int64, n)
	token := ""
	for i := range checks {
		c := &checks[i]
		p := &c.Policy
		keys[i] = storedKey(c.Key)
		costs[i] = int64(max(c.Cost, 1))
		switch p.Kind {
		case driver.TokenBucket:
			kinds[i], as[i], bs[i] = 1, int64(p.Interval()), int64(p.Burst)
		case driver.SlidingWindow:
			kinds[i], as[i], bs[i] = 2, int64(p.Window), int64(p.Limit)
		default:
			kinds[i], as[i], bs[i] = 3, int64(p.LeaseTTL), int64(p.MaxConcurrent)
			if len(keys[i]) > maxKeyBytes {
				s.rememberLong(keys[i], c.Key)
			}
			if consume && token == "" {
				token = driver.NewLeaseID()
			}
		}
	}
	var out []int64
	if err := s.pool.QueryRow(ctx, s.q.decide, consume, token, s.now(), keys, kinds, as, bs, costs).Scan(&out); err != nil {
		if token != "" && ctx.Err() != nil {
			// The server may have granted the lease after the caller
			// gave up: give it back rather than let it hold a slot.
			s.abandon(checks, keys, token)
		}
		return false, classify(fmt.Errorf("ratesync/pgstore: decide: %w", err))
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

// abandon releases, in the background, the lease token that a decision
// abandoned by its caller may have been granted on each concurrency key,
// trying again until the statement timeout (the network that lost the
// answer may be back by then). Close stops it.
func (s *Store) abandon(checks []driver.Check, keys [][]byte, token string) {
	var held [][]byte
	for i := range checks {
		if checks[i].Policy.Kind == driver.Concurrency {
			held = append(held, keys[i])
		}
	}
	s.background(func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.bound)
		defer cancel()
		for _, k := range held {
			var ok bool
			for s.pool.QueryRow(ctx, s.q.release, k, token, s.channel).Scan(&ok) != nil {
				select {
				case <-ctx.Done():
					return // the lease, if granted, expires at its TTL
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	})
}

// background runs fn on a goroutine that Close waits for, unless the
// store is closed; it reports whether it did.
func (s *Store) background(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// Decide implements driver.Store.
func (s *Store) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	if len(checks) == 0 {
		return true, s.ready(ctx)
	}
	if err := validate(checks); err != nil {
		return false, err
	}
	if dupLeases(checks) {
		return false, driver.BadRequest(errors.New("ratesync/pgstore: one decision holds two concurrency checks on the same key"))
	}
	return s.run(ctx, checks, results, true)
}

// validate checks every check's policy and cost against the supported
// ranges (driver.Check.Validate): the SQL arithmetic is exact only inside
// them.
func validate(checks []driver.Check) error {
	for i := range checks {
		if err := checks[i].Validate(); err != nil {
			return driver.BadRequest(err)
		}
	}
	return nil
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
	if err := validate(checks); err != nil {
		return err
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
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var ok bool
	if err := s.pool.QueryRow(ctx, s.q.release, storedKey(key), lease, s.channel).Scan(&ok); err != nil {
		return classify(fmt.Errorf("ratesync/pgstore: release: %w", err))
	}
	return nil
}

// Extend implements driver.Extender.
func (s *Store) Extend(ctx context.Context, key driver.Key, lease string, ttl time.Duration) (bool, error) {
	if err := driver.ValidateLeaseTTL(ttl); err != nil {
		return false, driver.BadRequest(err)
	}
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var ok bool
	if err := s.pool.QueryRow(ctx, s.q.extend, storedKey(key), lease, int64(ttl), s.now()).Scan(&ok); err != nil {
		return false, classify(fmt.Errorf("ratesync/pgstore: extend: %w", err))
	}
	return ok, nil
}

// Reset implements driver.Store.
func (s *Store) Reset(ctx context.Context, key driver.Key) error {
	return s.exec(ctx, "reset", s.q.reset, storedKey(key))
}

// ResetAll implements driver.Store: it empties the store's table.
func (s *Store) ResetAll(ctx context.Context) error {
	return s.exec(ctx, "reset all", s.q.resetAll)
}

// Ping implements driver.Store: it checks the connection and, with
// auto-create, the schema.
func (s *Store) Ping(ctx context.Context) error {
	return s.exec(ctx, "ping", "SELECT 1")
}

func (s *Store) exec(ctx context.Context, what, sql string, args ...any) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, sql, args...); err != nil {
		return classify(fmt.Errorf("ratesync/pgstore: %s: %w", what, err))
	}
	return nil
}

// Sweep deletes up to 1000 idle rows (state equivalent to no state) and
// returns how many it deleted. The background sweeper calls it every sweep
// interval, again at once while it finds full batches.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, s.q.sweep, s.now())
	if err != nil {
		return 0, classify(fmt.Errorf("ratesync/pgstore: sweep: %w", err))
	}
	return tag.RowsAffected(), nil
}

func (s *Store) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			// Bounded: at most ten batches per tick.
			for range 10 {
				n, err := s.Sweep(s.ctx)
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

// listenOnce listens on one connection until ctx is done or the
// connection fails. Every call is bounded: when no notification came for
// s.ping, the connection must answer a query within as long (or the
// statement timeout, if shorter), so a connection gone silent is
// replaced.
func (s *Store) listenOnce(ctx context.Context, deliver func(string)) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, s.bound)
	defer cancel()
	pc, err := s.pool.Acquire(bctx)
	if err != nil {
		return err
	}
	// The connection will be in LISTEN: it leaves the pool for good.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(bctx, "LISTEN "+quote(s.channel)); err != nil {
		return err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, s.ping)
		n, err := conn.WaitForNotification(wctx)
		quiet := wctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			if k, ok := s.payloadKey(n.Payload); ok {
				deliver(k)
			}
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !quiet:
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, min(s.ping, s.bound))
		_, err = conn.Exec(pctx, "SELECT 1")
		cancel()
		if err != nil {
			return err
		}
	}
}

// Close stops the sweeper and the listener; it closes the pool only when
// the store opened it, and then first cuts its connections, so Close
// returns at once whatever the network does. Close is safe to call more
// than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.bgMu.Lock()
		s.closed.Store(true)
		s.bgMu.Unlock()
		s.cancel()
		s.closeBatches()
		if s.dialer != nil {
			s.dialer.closeAll()
		}
		s.hub.Close()
		s.wg.Wait()
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
