// Package memstore is the in-process rate limit store: the embedded default
// behind engine = "memory".
//
// It keeps every key's state in a sharded map guarded by one mutex per
// shard, runs the policies of internal/policy on the monotonic clock, and
// makes no allocation per decision in steady state (a concurrency lease
// allocates its identifier). Idle keys (bucket full, window empty, no live
// lease) are removed by one background goroutine that Close stops, so memory
// is bounded by the number of keys active within their policies' horizon.
//
// State is per process: use redisstore or pgstore to share limits across a
// fleet.
package memstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/policy"
)

const (
	numShards = 64
	// DefaultSweepInterval is how often idle keys are removed unless
	// WithSweepInterval says otherwise.
	DefaultSweepInterval = 30 * time.Second
)

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("ratesync/memstore: store is closed")

// Store is an in-memory [driver.Store]. Its zero value is not usable; call
// New. A Store is safe for concurrent use.
type Store struct {
	shards [numShards]shard
	base   time.Time
	clock  func() time.Time

	sweepEvery time.Duration
	stop       chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
	closed     atomic.Bool
}

type shard struct {
	mu sync.Mutex
	m  map[driver.Key]*entry
	_  [40]byte // keep shards on separate cache lines
}

// entry is all the state of one key. Each policy kind has its own field, so
// a key can carry a bucket, a window and leases at once.
type entry struct {
	tat    int64
	log    policy.Log
	leases []policy.Lease
	// idleAt is when every state above is equivalent to an empty one.
	idleAt int64
}

// Option configures a Store.
type Option func(*Store)

// WithClock makes the store read time from now instead of the monotonic
// clock. It is meant for tests; now must never go backwards.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.clock = now }
}

// WithSweepInterval sets how often idle keys are removed. The default is
// DefaultSweepInterval; zero keeps the default.
func WithSweepInterval(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.sweepEvery = d
		}
	}
}

// New returns a Store and starts its sweeper goroutine; Close stops it.
func New(opts ...Option) *Store {
	s := &Store{stop: make(chan struct{}), done: make(chan struct{})}
	s.sweepEvery = DefaultSweepInterval
	for _, o := range opts {
		o(s)
	}
	if s.clock != nil {
		s.base = s.clock()
	} else {
		s.base = time.Now()
	}
	for i := range s.shards {
		s.shards[i].m = make(map[driver.Key]*entry)
	}
	go s.sweeper(s.sweepEvery)
	return s
}

func (s *Store) now() int64 {
	if s.clock != nil {
		return int64(s.clock().Sub(s.base))
	}
	return int64(time.Since(s.base))
}

func shardOf(key driver.Key) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(key.Name); i++ {
		h ^= uint32(key.Name[i])
		h *= 16777619
	}
	h ^= ':'
	h *= 16777619
	for i := 0; i < len(key.ID); i++ {
		h ^= uint32(key.ID[i])
		h *= 16777619
	}
	return h & (numShards - 1)
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// lockSet is the sorted set of shards one decision touches.
type lockSet struct {
	idx [8]uint32
	n   int
	big []uint32
}

func (ls *lockSet) add(i uint32) {
	list := ls.idx[:ls.n]
	if ls.big != nil {
		list = ls.big
	}
	pos := 0
	for pos < len(list) && list[pos] < i {
		pos++
	}
	if pos < len(list) && list[pos] == i {
		return
	}
	if ls.big == nil && ls.n < len(ls.idx) {
		copy(ls.idx[pos+1:ls.n+1], ls.idx[pos:ls.n])
		ls.idx[pos] = i
		ls.n++
		return
	}
	if ls.big == nil {
		ls.big = append([]uint32(nil), ls.idx[:ls.n]...)
	}
	ls.big = append(ls.big, 0)
	copy(ls.big[pos+1:], ls.big[pos:])
	ls.big[pos] = i
}

func (ls *lockSet) list() []uint32 {
	if ls.big != nil {
		return ls.big
	}
	return ls.idx[:ls.n]
}

func (s *Store) lock(ls *lockSet, checks []driver.Check) {
	for i := range checks {
		ls.add(shardOf(checks[i].Key))
	}
	for _, i := range ls.list() {
		s.shards[i].mu.Lock()
	}
}

func (s *Store) unlock(ls *lockSet) {
	l := ls.list()
	for i := len(l) - 1; i >= 0; i-- {
		s.shards[l[i]].mu.Unlock()
	}
}

// undo records how to roll back one consumed check.
type undo struct {
	e     *entry
	kind  driver.Kind
	tat   int64
	cost  int
	lease string
}

// Decide implements driver.Store.
func (s *Store) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if len(checks) == 0 {
		return true, nil
	}
	if len(checks) == 1 {
		results[0] = s.one(&checks[0])
		return results[0].Allowed, nil
	}
	var ls lockSet
	s.lock(&ls, checks)
	defer s.unlock(&ls)
	now := s.now()
	var undoBuf [8]undo
	undos := undoBuf[:0]
	allowed := true
	for i := range checks {
		c := &checks[i]
		sh := &s.shards[shardOf(c.Key)]
		e := sh.m[c.Key]
		if e == nil {
			e = &entry{}
			sh.m[c.Key] = e
		}
		var u undo
		results[i] = apply(e, c, now, true, &u)
		if !results[i].Allowed {
			allowed = false
			break
		}
		undos = append(undos, u)
	}
	if allowed {
		return true, nil
	}
	for i := len(undos) - 1; i >= 0; i-- {
		undos[i].rollback()
	}
	for i := range checks {
		c := &checks[i]
		e := s.shards[shardOf(c.Key)].m[c.Key]
		if e == nil {
			e = &entry{} // a key after the denied check: never stored
		}
		results[i] = apply(e, c, now, false, nil)
	}
	return false, nil
}

// DecideOne decides a lone check, as Decide would, with the check and its
// result passed by value so that nothing goes to the heap. The ratesync
// package calls it for single-policy rules on a *Store.
func (s *Store) DecideOne(ctx context.Context, c driver.Check) (driver.Result, error) {
	if err := s.check(ctx); err != nil {
		return driver.Result{}, err
	}
	return s.one(&c), nil
}

// one decides a lone check.
func (s *Store) one(c *driver.Check) driver.Result {
	sh := &s.shards[shardOf(c.Key)]
	sh.mu.Lock()
	now := s.now()
	e := sh.m[c.Key]
	if e == nil {
		e = &entry{}
		sh.m[c.Key] = e
	}
	var u undo
	r := apply(e, c, now, true, &u)
	sh.mu.Unlock()
	return r
}

// Peek implements driver.Store.
func (s *Store) Peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	var ls lockSet
	s.lock(&ls, checks)
	defer s.unlock(&ls)
	now := s.now()
	for i := range checks {
		c := &checks[i]
		e := s.shards[shardOf(c.Key)].m[c.Key]
		if e == nil {
			e = &entry{} // not stored: a peek creates nothing
		}
		results[i] = apply(e, c, now, false, nil)
	}
	return nil
}

// apply runs one check's policy on e. With consume, a passing check is
// consumed and u records how to undo it.
func apply(e *entry, c *driver.Check, now int64, consume bool, u *undo) driver.Result {
	p := &c.Policy
	var o policy.Outcome
	var lease string
	switch p.Kind {
	case driver.TokenBucket:
		old := e.tat
		e.tat, o = policy.BucketTake(e.tat, now, int64(p.Interval()), p.Burst, c.Cost, consume)
		if consume && o.Allowed {
			*u = undo{e: e, kind: driver.TokenBucket, tat: old}
			e.bump(e.tat)
		}
	case driver.SlidingWindow:
		w := int64(p.Window)
		o = e.log.Take(now, w, p.Limit, c.Cost, consume)
		if consume && o.Allowed {
			*u = undo{e: e, kind: driver.SlidingWindow, cost: c.Cost}
			e.bump(now + w)
		}
	case driver.Concurrency:
		e.leases = policy.ExpireLeases(e.leases, now)
		o = policy.LeaseCheck(e.leases, now, p.MaxConcurrent)
		if consume && o.Allowed {
			lease = driver.NewLeaseID()
			exp := now + int64(p.LeaseTTL)
			e.leases = append(e.leases, policy.Lease{ID: lease, Expiry: exp})
			o = policy.LeaseCheck(e.leases, now, p.MaxConcurrent)
			o.Allowed = true
			*u = undo{e: e, kind: driver.Concurrency, lease: lease}
			e.bump(exp)
		}
	}
	return driver.Result{
		Allowed:    o.Allowed,
		Limit:      p.Capacity(),
		Remaining:  o.Remaining,
		RetryAfter: time.Duration(o.RetryAfter),
		ResetAfter: time.Duration(o.ResetAfter),
		Lease:      lease,
	}
}

func (e *entry) bump(t int64) {
	if t > e.idleAt {
		e.idleAt = t
	}
}

func (u *undo) rollback() {
	switch u.kind {
	case driver.TokenBucket:
		u.e.tat = u.tat
	case driver.SlidingWindow:
		u.e.log.Unappend(u.cost)
	case driver.Concurrency:
		u.e.leases, _ = policy.RemoveLease(u.e.leases, u.lease)
	}
}

// Release implements driver.Store.
func (s *Store) Release(ctx context.Context, key driver.Key, lease string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	sh := &s.shards[shardOf(key)]
	sh.mu.Lock()
	if e := sh.m[key]; e != nil {
		e.leases, _ = policy.RemoveLease(e.leases, lease)
	}
	sh.mu.Unlock()
	return nil
}

// Extend implements driver.Extender.
func (s *Store) Extend(ctx context.Context, key driver.Key, lease string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	sh := &s.shards[shardOf(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil {
		return false, nil
	}
	now := s.now()
	e.leases = policy.ExpireLeases(e.leases, now)
	for i := range e.leases {
		if e.leases[i].ID == lease {
			e.leases[i].Expiry = now + int64(ttl)
			e.bump(e.leases[i].Expiry)
			return true, nil
		}
	}
	return false, nil
}

// Reset implements driver.Store.
func (s *Store) Reset(ctx context.Context, key driver.Key) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	sh := &s.shards[shardOf(key)]
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
	return nil
}

// ResetAll implements driver.Store.
func (s *Store) ResetAll(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		sh.mu.Unlock()
	}
	return nil
}

// Ping implements driver.Store; it fails only after Close.
func (s *Store) Ping(ctx context.Context) error { return s.check(ctx) }

// Len returns the number of keys the store holds state for.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Sweep removes the keys whose state is idle now. The background sweeper
// calls it every sweep interval; tests with an injected clock call it
// directly.
func (s *Store) Sweep() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		now := s.now()
		for k, e := range sh.m {
			if e.idleAt <= now {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

func (s *Store) sweeper(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Close stops the sweeper and drops all state. Later calls return ErrClosed.
// Close is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		for i := range s.shards {
			s.shards[i].mu.Lock()
			clear(s.shards[i].m)
			s.shards[i].mu.Unlock()
		}
	})
	return nil
}

var (
	_ driver.Store    = (*Store)(nil)
	_ driver.Extender = (*Store)(nil)
)
