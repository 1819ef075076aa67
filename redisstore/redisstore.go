// Package redisstore is the Redis rate limit store: engine = "redis" in a
// configuration file, or New with a go-redis v9 client in code.
//
// Every decision, whatever its checks (token bucket, sliding window,
// concurrency lease, or all of them for several keys), is one EVALSHA of a
// script that applies all checks or none, on the Redis server's clock. The
// keys of one limiter key share a hash tag, so the scripts run on Redis
// Cluster, and WithColocation gives the rules that composites combine one
// slot, so that those composites are one call too; a decision whose keys
// fall in different Cluster slots takes the two-phase path described in
// docs/redis.md. Decisions that arrive together from many goroutines are
// sent in one pipeline, so throughput is not bound by one round trip per
// goroutine.
//
// Importing the package registers the "redis" engine:
//
//	import _ "github.com/rate-sync/ratesync-go/redisstore"
package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/notify"
)

// DefaultKeyPrefix is the prefix of every key unless WithKeyPrefix says
// otherwise (rate-sync's default).
const DefaultKeyPrefix = "rate_limit"

// Store is a [driver.Store] on Redis. It is safe for concurrent use.
type Store struct {
	c         Client
	owned     bool // opened from configuration: Close closes the client
	prefix    string
	prefixTag bool // the prefix holds a hash tag: every key in one slot
	channel   string
	colocated map[string]string // escaped rule name -> its group's tag text
	groups    [][]string        // WithColocation's groups
	// sharded: keys with different hash tags may live on different
	// servers (Cluster or Ring; see Client).
	sharded atomic.Bool

	decide, release, extend, undo script
	batch                         script // many decisions in one call: see batchSrc

	clock func() time.Time // tests only; nil reads TIME on the server
	// general, tests only, turns off the single-bucket compact paths
	// (decide.lua's fast path, the batch's compact form).
	general bool
	// betweenPhases, tests only, runs in a two-phase decision after the
	// peeks (phase 1) and, when a group denied, before the groups that
	// passed are undone (phase 2).
	betweenPhases func(phase int)

	workers   int
	maxBatch  int
	directMax int          // calls sent directly before batching starts
	direct    atomic.Int32 // calls being sent directly
	// deadlines: the client cuts a call at its context's deadline
	// (go-redis's ContextTimeoutEnabled).
	deadlines bool
	queue     chan *call
	stop      chan struct{}
	// life is cancelled by Close: the batch workers' calls run on it, so
	// that Close ends them (go-redis checks it between dial retries).
	life     context.Context
	lifeDone context.CancelFunc
	wg       sync.WaitGroup

	closeOnce sync.Once
	closed    atomic.Bool

	hub *notify.Hub // release subscribers and the one subscription
}

// Option configures a Store.
type Option func(*Store)

// WithKeyPrefix sets the prefix of every key the store writes (default
// DefaultKeyPrefix). Stores with different prefixes on one Redis are
// independent. A prefix holding a hash tag, such as "{rl}", puts every key
// in one Cluster slot, which makes every composite decision one call at the
// cost of spreading no load.
func WithKeyPrefix(p string) Option { return func(s *Store) { s.prefix = p } }

// WithColocation puts the keys of the named rules (their own keys and
// every per-key clone's) in one Redis Cluster slot, so that a composite
// decision that combines them is one atomic script call instead of the
// two-phase path. Call it once per group; a rule may be in one group only.
// The cost: every decision of the group's rules runs on the one node that
// holds the slot, and their state lives there (see docs/redis.md, "Redis
// Cluster"). It changes the keys of those rules, so their state starts
// afresh. Without Cluster it changes nothing but the keys.
func WithColocation(rules ...string) Option {
	return func(s *Store) { s.groups = append(s.groups, rules) }
}

// WithBatching sets how decisions are batched: up to workers calls in
// flight, each carrying up to maxBatch decisions. A decision is sent at
// once from the caller's goroutine while fewer than two are in flight, so
// batching adds no wait at low concurrency; under load, the decisions that
// queue up while the workers are busy go together in one batch script call
// (or one pipeline on Cluster), each decision still all-or-nothing on its
// own. The defaults are 2 workers per CPU (at least 4) and 256 decisions;
// maxBatch 1 sends every decision in a call of its own.
func WithBatching(workers, maxBatch int) Option {
	return func(s *Store) {
		if workers > 0 {
			s.workers = workers
		}
		if maxBatch > 0 {
			s.maxBatch = maxBatch
		}
	}
}

// withClock makes scripts use now instead of the server's TIME. Only the
// package's tests use it (export_test.go), to compare with the reference
// model exactly; now must be whole microseconds.
func withClock(now func() time.Time) Option { return func(s *Store) { s.clock = now } }

// New returns a Store on the caller's client. The store never closes c.
// It does no I/O: scripts load on first use; call Ping to check the
// connection.
func New(c Client, opts ...Option) (*Store, error) {
	if c == nil {
		return nil, errors.New("ratesync/redisstore: New: client is nil")
	}
	s := &Store{c: c, prefix: DefaultKeyPrefix, stop: make(chan struct{})}
	s.life, s.lifeDone = context.WithCancel(context.Background())
	s.workers = max(4, 2*runtime.GOMAXPROCS(0))
	s.maxBatch = 256
	s.directMax = 2
	for _, o := range opts {
		o(s)
	}
	var err error
	if s.prefixTag, err = checkPrefix(s.prefix); err != nil {
		return nil, err
	}
	if s.colocated, err = colocation(s.groups); err != nil {
		return nil, err
	}
	s.sharded.Store(isSharded(c))
	s.deadlines = honoursDeadlines(c)
	s.channel = s.prefix + ":released"
	s.hub = notify.New(s.listen)
	// A decision must not run twice; releases, extensions and undos may.
	s.decide = newScript(decideSrc, true)
	s.batch = newScript(batchSrc, true)
	if s.general {
		s.decide = newScript(withoutFastPath(decideSrc), true)
		s.batch = newScript(withoutFastPath(batchSrc), true)
	}
	s.release = newScript(releaseSrc, false)
	s.extend = newScript(extendSrc, false)
	s.undo = newScript(undoSrc, false)
	s.queue = make(chan *call, 4*s.maxBatch)
	s.wg.Add(s.workers)
	for range s.workers {
		go s.worker()
	}
	return s, nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// Decide implements driver.Store. Its errors are marked with their
// driver class (driver.ErrUnavailable, driver.ErrBadRequest), as are those
// of every other method.
func (s *Store) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	ok, err := s.decideChecks(ctx, checks, results)
	return ok, classify(err)
}

func (s *Store) decideChecks(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	if answered, ok, err := s.screen(ctx, checks); answered {
		return ok, err
	}
	var token string
	if needsToken(checks) {
		token = driver.NewLeaseID()
	}
	if s.sharded.Load() && !sameTag(s, checks) {
		return s.decideTwoPhase(ctx, checks, results, token)
	}
	keys, args := s.decideArgs(checks, true, token)
	reply, err := s.do(ctx, &s.decide, keys, args)
	return s.answer(ctx, reply, err, checks, results, token)
}

// screen answers a decision that needs no script call: a closed store, a
// done context, an invalid check, or no check at all.
func (s *Store) screen(ctx context.Context, checks []driver.Check) (answered, ok bool, err error) {
	if err := s.check(ctx); err != nil {
		return true, false, err
	}
	if err := validate(checks); err != nil {
		return true, false, err
	}
	return len(checks) == 0, len(checks) == 0, nil
}

// answer fills results from the reply of a decision's script call. A
// cross-slot error sends the decision the two-phase way instead: a
// Cluster behind a client that did not say so.
func (s *Store) answer(ctx context.Context, reply any, err error, checks []driver.Check, results []driver.Result, token string) (bool, error) {
	if isCrossSlot(err) && !sameTag(s, checks) {
		s.sharded.Store(true)
		return s.decideTwoPhase(ctx, checks, results, token)
	}
	if err != nil {
		return false, err
	}
	return parse(reply, checks, results, true, token)
}

// Peek implements driver.Store.
func (s *Store) Peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	return classify(s.peekChecks(ctx, checks, results))
}

func (s *Store) peekChecks(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := validate(checks); err != nil {
		return err
	}
	if len(checks) == 0 {
		return nil
	}
	if s.sharded.Load() && !sameTag(s, checks) {
		return s.peekGroups(ctx, checks, results)
	}
	err := s.peek(ctx, checks, results)
	if isCrossSlot(err) && !sameTag(s, checks) {
		s.sharded.Store(true)
		return s.peekGroups(ctx, checks, results)
	}
	return err
}

func (s *Store) peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	keys, args := s.decideArgs(checks, false, "")
	reply, err := s.do(ctx, &s.decide, keys, args)
	if err != nil {
		return err
	}
	_, err = parse(reply, checks, results, false, "")
	return err
}

// Release implements driver.Store. Releasing a lease that is not held
// (released before, or expired) does nothing.
func (s *Store) Release(ctx context.Context, key driver.Key, lease string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	_, err := s.release.run(ctx, s.c, []string{s.key(key, driver.Concurrency)}, []any{lease, s.channel, key.Encoded()})
	return classify(err)
}

// Extend implements driver.Extender.
func (s *Store) Extend(ctx context.Context, key driver.Key, lease string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if err := driver.ValidateLeaseTTL(ttl); err != nil {
		return false, driver.BadRequest(err)
	}
	sec, usec := s.clockArgs()
	v, err := s.extend.run(ctx, s.c, []string{s.key(key, driver.Concurrency)}, []any{lease, int64(ttl), sec, usec})
	if err != nil {
		return false, classify(err)
	}
	return toInt(v) == 1, nil
}

// Reset implements driver.Store: it deletes every policy's state of key.
func (s *Store) Reset(ctx context.Context, key driver.Key) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return classify(s.c.Unlink(ctx, s.key(key, driver.TokenBucket), s.key(key, driver.SlidingWindow), s.key(key, driver.Concurrency)).Err())
}

// ResetAll implements driver.Store: it deletes every key under the store's
// prefix, with SCAN on every primary (never KEYS), and nothing else.
func (s *Store) ResetAll(ctx context.Context) error {
	return classify(s.resetAll(ctx))
}

func (s *Store) resetAll(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return scanDeleteAll(ctx, s.c, globEscape(s.prefix)+":{*")
}

// Ping implements driver.Store: it checks the connection and loads the
// scripts.
func (s *Store) Ping(ctx context.Context) error {
	return classify(s.ping(ctx))
}

func (s *Store) ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.c.Ping(ctx).Err(); err != nil {
		return err
	}
	for _, sc := range []*script{&s.decide, &s.batch, &s.release, &s.extend, &s.undo} {
		if err := sc.load(ctx, s.c); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the store's goroutines; it closes the client only when the
// store opened it (from configuration). It returns within a second
// whatever the network does: a client the store opened is closed first,
// which ends the calls in flight at once; with a client of the caller's,
// a batch worker stuck on a silent connection ends on its own, at the
// client's read timeout. Close is safe to call more than once.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		s.lifeDone()
		if s.owned {
			if cl, ok := s.c.(interface{ Close() error }); ok {
				err = cl.Close()
			}
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		t := time.NewTimer(time.Second)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
		s.drainAsync() // a worker that still runs claims its calls first
		s.hub.Close()
	})
	return err
}

var (
	_ driver.Store           = (*Store)(nil)
	_ driver.Extender        = (*Store)(nil)
	_ driver.ReleaseNotifier = (*Store)(nil)
	_ driver.AsyncDecider    = (*Store)(nil)
)

// validate checks every check's policy and cost against the supported
// ranges (driver.Check.Validate): the scripts' arithmetic is exact only
// inside them.
func validate(checks []driver.Check) error {
	for i := range checks {
		if err := checks[i].Validate(); err != nil {
			return driver.BadRequest(err)
		}
	}
	return nil
}
