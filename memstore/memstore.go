// Package memstore is the in-process rate limit store: the embedded default
// behind engine = "memory".
//
// It keeps every key's state in a sharded hash index, runs the policies of
// internal/policy on the monotonic clock, and makes no allocation per
// decision in steady state (a concurrency lease allocates its identifier).
// Idle keys (bucket full, window empty, no live lease) are removed by one
// background goroutine that Close stops, so memory is bounded by the number
// of keys active within their policies' horizon. A key takes a 64-byte
// entry; a sliding window adds 16 bytes per admission in its window,
// whatever the admission's cost, in a ring that doubles as it fills (and
// keeps its size until the key is idle and swept); a lease adds its
// identifier and expiry. See docs/memory.md.
//
// Every check is validated (driver.Check.Validate): a policy or cost
// outside the supported ranges is an error marked driver.ErrBadRequest.
//
// A lone token bucket check, the commonest decision, takes no lock: it finds
// its key in its shard's index without locking and moves the bucket's state
// with one compare-and-swap. Every other decision holds the locks of the
// shards it touches and keeps the lone checks out of the buckets it decides
// on, so that a multi-check decision stays all or nothing.
//
// State is per process: use redisstore or pgstore to share limits across a
// fleet.
package memstore

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/policy"
)

const (
	shardBits = 6
	numShards = 1 << shardBits
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

// shard holds the keys whose hash falls in it, in an index keyed by the
// key's 64-bit hash: a decision hashes its key once (that hash also picks
// the shard). mu covers the index and the entries, except what lone token
// bucket checks do without it (see index and entry).
type shard struct {
	mu    sync.Mutex
	index atomic.Pointer[index]
	n     int      // keys held
	_     [40]byte // keep shards on separate cache lines
}

// The token bucket state entry.tat holds a time, or one of these.
const (
	// tatHeld: a decision holding the shard's lock works on the bucket, in
	// entry.held; lone checks wait for the lock.
	tatHeld = math.MinInt64
	// tatGone: the entry has left its shard; lone checks look the key up
	// again.
	tatGone = math.MinInt64 + 1
)

// entry is all the state of one key. Each policy kind has its own field, so
// a key can carry a bucket, a window and leases at once.
//
// An entry is 64 bytes, a size class whose objects fill one cache line
// each: a lone token bucket check, which reads the key and the bucket,
// touches one line, and a million keys of token buckets take 64 MB of
// entries. Windows and leases, in x, are allocated on first use.
type entry struct {
	key  driver.Key
	hash uint64 // of key
	// tat is the token bucket's theoretical arrival time (zero: full).
	// Lone token bucket checks change it by compare-and-swap without a
	// lock; holders of the shard's lock change it only through hold.
	tat atomic.Int64
	// held is the bucket's tat while tat is tatHeld; shard lock only.
	held int64
	x    *extra // shard lock only
}

// extra is the window and lease state of a key.
type extra struct {
	// idleAt is when the window and leases are equivalent to empty ones.
	idleAt int64
	log    policy.Log
	leases []policy.Lease
}

// ext returns e's window and lease state, creating it. Shard lock.
func (e *entry) ext() *extra {
	if e.x == nil {
		e.x = new(extra)
	}
	return e.x
}

func keyHash(key driver.Key) uint64 {
	return hashKey(hashString(key.Name), key.ID)
}

func (s *Store) shardOf(h uint64) *shard { return &s.shards[h>>(64-shardBits)] }

// Option configures a Store.
type Option func(*Store)

// WithClock makes the store read time from now instead of the monotonic
// clock. It is meant for tests; now must never go backwards.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.clock = now }
}

// WithSweepInterval sets how often idle keys are removed. The default is
// DefaultSweepInterval; zero keeps the default. An interval below
// driver.MinSweepInterval (1 s) is raised to it: a sweep visits every key,
// and sweeping more often only spends CPU. Configuration layers check
// their values with driver.ValidateSweepInterval to report them instead.
func WithSweepInterval(d time.Duration) Option {
	return func(s *Store) {
		if d != 0 {
			s.sweepEvery = max(d, driver.MinSweepInterval)
		}
	}
}

// SweepInterval returns how often the store removes idle keys.
func (s *Store) SweepInterval() time.Duration { return s.sweepEvery }

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
		s.shards[i].index.Store(newIndex(0))
	}
	go s.sweeper(s.sweepEvery)
	return s
}

// now returns the store's time: ns since New on the monotonic clock (one
// vDSO read, not the wall clock too), or on WithClock's clock.
func (s *Store) now() int64 {
	if s.clock != nil {
		return int64(s.clock().Sub(s.base))
	}
	return int64(time.Since(s.base))
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// lockSet is what one locked decision holds: the locks of the shards it
// touches (sorted, so that decisions never deadlock), the hash of each
// check's key, and the buckets it holds (see hold).
type lockSet struct {
	hbuf [8]uint64
	bigH []uint64 // the hashes when there are more than 8 checks
	idx  [8]uint32
	n    int
	big  []uint32
	hb   [8]*entry
	nh   int
	bigB []*entry // the held buckets past 8
}

// hash returns the hash of check i's key.
func (ls *lockSet) hash(i int) uint64 {
	if ls.bigH != nil {
		return ls.bigH[i]
	}
	return ls.hbuf[i]
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

// hold takes e's bucket out of the reach of lone checks for the rest of
// the locked decision: its state moves to e.held, and unlock puts it back.
func (ls *lockSet) hold(e *entry) {
	if e.tat.Load() == tatHeld {
		return // held by this decision already: only lock holders hold
	}
	e.held = e.tat.Swap(tatHeld)
	if ls.nh < len(ls.hb) {
		ls.hb[ls.nh] = e
		ls.nh++
	} else {
		ls.bigB = append(ls.bigB, e)
	}
}

// lock takes the locks of the shards of the checks' keys, in order, and
// holds the buckets of those keys that exist.
func (s *Store) lock(ls *lockSet, checks []driver.Check) {
	if len(checks) > len(ls.hbuf) {
		ls.bigH = make([]uint64, len(checks))
	}
	for i := range checks {
		h := keyHash(checks[i].Key)
		if ls.bigH != nil {
			ls.bigH[i] = h
		} else {
			ls.hbuf[i] = h
		}
		ls.add(uint32(h >> (64 - shardBits)))
	}
	for _, i := range ls.list() {
		s.shards[i].mu.Lock()
	}
	// Hold the buckets that exist before the caller reads the clock, so
	// that no lone check moves one past that reading: a stale clock would
	// deny what the bucket admits. A bucket the decision creates starts
	// full, and apply holds it right after.
	for i := range checks {
		if checks[i].Policy.Kind == driver.TokenBucket {
			h := ls.hash(i)
			if e := s.shardOf(h).find(h, checks[i].Key.Name, checks[i].Key.ID); e != nil {
				ls.hold(e)
			}
		}
	}
}

func (s *Store) unlock(ls *lockSet) {
	for _, e := range ls.hb[:ls.nh] {
		e.tat.Store(e.held)
	}
	for _, e := range ls.bigB {
		e.tat.Store(e.held)
	}
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

// validate returns the error of the first check whose policy or cost is
// not valid, marked driver.ErrBadRequest.
func validate(checks []driver.Check) error {
	for i := range checks {
		if err := checks[i].Validate(); err != nil {
			return driver.BadRequest(err)
		}
	}
	return nil
}

// Decide implements driver.Store. A check whose policy or cost is not
// valid (driver.Check.Validate) makes it return an error marked
// driver.ErrBadRequest, having consumed nothing.
func (s *Store) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if len(checks) == 0 {
		return true, nil
	}
	if len(checks) == 1 {
		c := &checks[0]
		p := s.prepare(c.Key.Name, c.Policy)
		r, err := p.Decide(ctx, c.Key.ID, c.Cost)
		if err != nil {
			return false, err
		}
		results[0] = r
		return r.Allowed, nil
	}
	if err := validate(checks); err != nil {
		return false, err
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
		h := ls.hash(i)
		e := s.shardOf(h).get(h, c.Key)
		var u undo
		results[i] = apply(&ls, e, c, int64(c.Policy.Interval()), now, true, &u)
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
		h := ls.hash(i)
		e := s.shardOf(h).find(h, c.Key.Name, c.Key.ID)
		if e == nil {
			e = &entry{} // a key after the denied check: never stored
		}
		results[i] = apply(&ls, e, c, int64(c.Policy.Interval()), now, false, nil)
	}
	return false, nil
}

// Prepared is one policy on one key name, with the name's hash and the
// policy's constants worked out once, for Decide. It is immutable
// and safe for concurrent use.
type Prepared struct {
	s        *Store
	name     string
	nameHash uint64
	policy   driver.Policy
	interval int64 // emission interval of a token bucket, ns
	capacity int
	err      error // of validating policy, marked ErrBadRequest
}

// Prepare returns p prepared for deciding keys named name in s: it
// implements driver.Preparer, and the result is a *Prepared. A policy that
// is not valid (driver.Policy.Validate) is prepared too: Decide then
// returns its error, and Err reports it at once.
func (s *Store) Prepare(name string, p driver.Policy) driver.Prepared {
	pp := s.prepare(name, p)
	return &pp
}

// Err returns the error of validating the prepared policy, marked
// driver.ErrBadRequest, or nil.
func (p *Prepared) Err() error { return p.err }

// invalid returns the error of a check of p with cost that is not valid.
func (p *Prepared) invalid(cost int) error {
	if p.err != nil {
		return p.err
	}
	return driver.BadRequest(driver.ValidateCost(cost))
}

func (s *Store) prepare(name string, p driver.Policy) Prepared {
	return Prepared{
		s:        s,
		name:     name,
		nameHash: hashString(name),
		policy:   p,
		interval: int64(p.Interval()),
		capacity: p.Capacity(),
		err:      driver.BadRequest(p.Validate()),
	}
}

// Decide decides one check of cost on the key (p's name, id) and
// returns what Decide would return for that single check. It exists for
// callers that decide one policy per request, such as the ratesync
// package: it hashes the key once and allocates nothing (except the
// identifier of a concurrency lease). A policy that is not valid, or a
// cost outside [1, driver.MaxCount], is an error marked
// driver.ErrBadRequest.
//
// A token bucket check locks nothing on the key: it reads the clock, then
// the bucket, and stores the new state only if the bucket did not change
// in between (compare-and-swap), retrying on the new state otherwise.
//
// Its clock may be older than the state it reads, when other decisions
// moved the bucket after it read the clock, or when its goroutine stalled
// in between; that never admits too much. Every decision that consumes
// leaves the bucket's theoretical arrival time (tat) past its own clock,
// so a tat at or before this decision's clock was written on older clocks,
// and the decision is exactly the one a lock would have given; a later tat
// does not depend on the clock, which is then only the time the check
// compares against, and an earlier time can only deny what a later one
// would admit. So an admission stands, and a denial is decided again on a
// clock read after the bucket: it then holds at that time, since a
// bucket's tat only grows while the bucket stays in its shard.
//
// The one state not written by a decision is a new entry's (full) bucket:
// the clock is read after the entry is in hand, and again whenever the
// entry is replaced, so that an entry swept or reset meanwhile is never
// refilled as of a time before it was removed.
//
// Reading the clock before the bucket also keeps the window between the
// read and the swap short, which is what a hot key contended by several
// goroutines needs: a lost swap retries without reading the clock again.
func (p *Prepared) Decide(ctx context.Context, id string, cost int) (driver.Result, error) {
	s := p.s
	if err := s.check(ctx); err != nil {
		return driver.Result{}, err
	}
	if p.err != nil || uint64(cost-1) >= uint64(driver.MaxCount) {
		return driver.Result{}, p.invalid(cost)
	}
	h := hashKey(p.nameHash, id)
	if p.policy.Kind != driver.TokenBucket {
		return s.decideLocked(p, h, id, cost), nil
	}
	sh := s.shardOf(h)
	e := sh.index.Load().lookup(h, p.name, id)
	if e == nil {
		e = sh.add(h, p.name, id)
	}
	now := s.now()
	for {
		tat := e.tat.Load()
		if tat < 0 { // tatHeld or tatGone: times are never negative
			if tat == tatHeld {
				// A locked decision holds the bucket and the shard's lock:
				// wait for the lock.
				sh.mu.Lock()
				sh.mu.Unlock()
			} else {
				e = sh.add(h, p.name, id) // removed: find the key's new entry
			}
			now = s.now()
			continue
		}
		newTAT, o := policy.BucketTake(tat, now, p.interval, p.policy.Burst, cost, true)
		if !o.Allowed {
			// A denial must hold on a clock read after the bucket: the
			// reading above may be older than the state, by as long as
			// this goroutine stalled in between.
			now = s.now()
			newTAT, o = policy.BucketTake(tat, now, p.interval, p.policy.Burst, cost, true)
		}
		if !o.Allowed || e.tat.CompareAndSwap(tat, newTAT) {
			return driver.Result{
				Allowed:    o.Allowed,
				Limit:      p.capacity,
				Remaining:  o.Remaining,
				RetryAfter: time.Duration(o.RetryAfter),
				ResetAfter: time.Duration(o.ResetAfter),
			}, nil
		}
	}
}

// add returns the entry of the key (name, id), creating it when missing,
// for a lone check that did not find it without the lock.
func (sh *shard) add(h uint64, name, id string) *entry {
	sh.mu.Lock()
	e := sh.get(h, driver.Key{Name: name, ID: id})
	sh.mu.Unlock()
	return e
}

// decideLocked decides a lone window or concurrency check under the lock
// of its shard.
func (s *Store) decideLocked(p *Prepared, h uint64, id string, cost int) driver.Result {
	sh := s.shardOf(h)
	sh.mu.Lock()
	now := s.now()
	e := sh.get(h, driver.Key{Name: p.name, ID: id})
	c := driver.Check{Key: e.key, Policy: p.policy, Cost: cost}
	var u undo
	r := apply(nil, e, &c, 0, now, true, &u) // not a bucket: nothing to hold
	sh.mu.Unlock()
	return r
}

// Peek implements driver.Store. It validates checks as Decide does.
func (s *Store) Peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := validate(checks); err != nil {
		return err
	}
	var ls lockSet
	s.lock(&ls, checks)
	defer s.unlock(&ls)
	now := s.now()
	for i := range checks {
		c := &checks[i]
		h := ls.hash(i)
		e := s.shardOf(h).find(h, c.Key.Name, c.Key.ID)
		if e == nil {
			e = &entry{} // not stored: a peek creates nothing
		}
		results[i] = apply(&ls, e, c, int64(c.Policy.Interval()), now, false, nil)
	}
	return nil
}

// apply runs one check's policy on e, under the lock of e's shard,
// which ls records; interval is the policy's emission interval when it is
// a token bucket. With consume, a passing check is consumed and u records
// how to undo it.
func apply(ls *lockSet, e *entry, c *driver.Check, interval, now int64, consume bool, u *undo) driver.Result {
	p := &c.Policy
	var o policy.Outcome
	var lease string
	switch p.Kind {
	case driver.TokenBucket:
		ls.hold(e)
		old := e.held
		e.held, o = policy.BucketTake(e.held, now, interval, p.Burst, c.Cost, consume)
		if consume && o.Allowed {
			*u = undo{e: e, kind: driver.TokenBucket, tat: old}
		}
	case driver.SlidingWindow:
		x := e.ext()
		w := int64(p.Window)
		o = x.log.Take(now, w, p.Limit, c.Cost, consume)
		if consume && o.Allowed {
			*u = undo{e: e, kind: driver.SlidingWindow, cost: c.Cost}
			x.bump(now + w)
		}
	case driver.Concurrency:
		x := e.ext()
		x.leases = policy.ExpireLeases(x.leases, now)
		o = policy.LeaseCheck(x.leases, now, p.MaxConcurrent)
		if consume && o.Allowed {
			lease = driver.NewLeaseID()
			exp := now + int64(p.LeaseTTL)
			x.leases = append(x.leases, policy.Lease{ID: lease, Expiry: exp})
			o = policy.LeaseCheck(x.leases, now, p.MaxConcurrent)
			o.Allowed = true
			*u = undo{e: e, kind: driver.Concurrency, lease: lease}
			x.bump(exp)
		}
	}
	return result(o, p.Capacity(), lease)
}

func result(o policy.Outcome, limit int, lease string) driver.Result {
	return driver.Result{
		Allowed:    o.Allowed,
		Limit:      limit,
		Remaining:  o.Remaining,
		RetryAfter: time.Duration(o.RetryAfter),
		ResetAfter: time.Duration(o.ResetAfter),
		Lease:      lease,
	}
}

func (x *extra) bump(t int64) {
	if t > x.idleAt {
		x.idleAt = t
	}
}

func (u *undo) rollback() {
	switch u.kind {
	case driver.TokenBucket:
		u.e.held = u.tat
	case driver.SlidingWindow:
		u.e.x.log.Unappend(u.cost)
	case driver.Concurrency:
		u.e.x.leases, _ = policy.RemoveLease(u.e.x.leases, u.lease)
	}
}

// Release implements driver.Store.
func (s *Store) Release(ctx context.Context, key driver.Key, lease string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	h := keyHash(key)
	sh := s.shardOf(h)
	sh.mu.Lock()
	if e := sh.find(h, key.Name, key.ID); e != nil && e.x != nil {
		e.x.leases, _ = policy.RemoveLease(e.x.leases, lease)
	}
	sh.mu.Unlock()
	return nil
}

// Extend implements driver.Extender. A ttl outside the range of
// driver.ValidateLeaseTTL is an error marked driver.ErrBadRequest.
func (s *Store) Extend(ctx context.Context, key driver.Key, lease string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if err := driver.ValidateLeaseTTL(ttl); err != nil {
		return false, driver.BadRequest(err)
	}
	h := keyHash(key)
	sh := s.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.find(h, key.Name, key.ID)
	if e == nil || e.x == nil {
		return false, nil
	}
	x := e.x
	now := s.now()
	x.leases = policy.ExpireLeases(x.leases, now)
	for i := range x.leases {
		if x.leases[i].ID == lease {
			x.leases[i].Expiry = now + int64(ttl)
			x.bump(x.leases[i].Expiry)
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
	h := keyHash(key)
	sh := s.shardOf(h)
	sh.mu.Lock()
	if e := sh.find(h, key.Name, key.ID); e != nil {
		sh.remove(e)
	}
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
		sh.clear()
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
		n += sh.n
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
		sh.each(func(e *entry) {
			// A lone check may take from the bucket meanwhile: the swap
			// succeeds only on a bucket that is still full.
			if tat := e.tat.Load(); (e.x == nil || e.x.idleAt <= now) && tat <= now && e.tat.CompareAndSwap(tat, tatGone) {
				sh.remove(e)
			}
		})
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
			s.shards[i].clear()
			s.shards[i].mu.Unlock()
		}
	})
	return nil
}

var (
	_ driver.Store    = (*Store)(nil)
	_ driver.Extender = (*Store)(nil)
)
