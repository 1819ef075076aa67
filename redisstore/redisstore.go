// Package redisstore is the Redis rate limit store: engine = "redis" in a
// configuration file, or New with a go-redis v9 client in code.
//
// Every decision, whatever its checks (token bucket, sliding window,
// concurrency lease, or all of them for several keys), is one EVALSHA of a
// script that applies all checks or none, on the Redis server's clock. The
// keys of one limiter key share a hash tag, so the scripts run on Redis
// Cluster; a decision whose keys fall in different Cluster slots (a
// composite of two limiter keys) takes the two-phase path described in
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
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/notify"
)

// Client is the part of a go-redis v9 client the store uses.
// *redis.Client (including the Sentinel failover client),
// *redis.ClusterClient, *redis.Ring and redis.UniversalClient satisfy it.
type Client interface {
	Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	Unlink(ctx context.Context, keys ...string) *redis.IntCmd
	Ping(ctx context.Context) *redis.StatusCmd
}

// DefaultKeyPrefix is the prefix of every key unless WithKeyPrefix says
// otherwise (rate-sync's default).
const DefaultKeyPrefix = "rate_limit"

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("ratesync/redisstore: store is closed")

var (
	//go:embed bucket.lua
	bucketSrc string
	//go:embed decide.lua
	decideBody string
	// decideSrc decides one decision: decide.lua, with bucket.lua's
	// function before it.
	decideSrc = bucketSrc + decideBody
	//go:embed release.lua
	releaseSrc string
	//go:embed extend.lua
	extendSrc string
	//go:embed undo.lua
	undoSrc string
)

// batchSrc runs several decisions in one script call. ARGV[1] is the
// number of decisions; KEYS holds every decision's keys in order. Each
// decision comes in one of two forms:
//
//   - 0, a, b, cost: one token-bucket check that consumes, on the server's
//     clock (the common case), decided by bucket directly;
//   - its number of keys, its number of arguments, and decide.lua's
//     arguments: decided by decide.lua's body, run as a function with that
//     decision's own KEYS and ARGV.
//
// The compact decisions share one reading of the clock, taken when the
// batch starts. Each decision is still all-or-nothing on its own; the
// batch only saves the per-call cost on the server, and the compact form
// most of the per-decision arguments. The
// reply is one string, "v,v,...;v,v,...", one group per decision: a single
// bulk reply is far cheaper to read than nested arrays.
var batchSrc = bucketSrc + `local function decide(KEYS, ARGV)
` + decideBody + `
end
local t = redis.call('TIME')
local now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000
local out = {}
local ki, ai = 1, 2
for d = 1, tonumber(ARGV[1]) do
  local nk = tonumber(ARGV[ai])
  if nk == 0 then
    out[d] = string.format('%d,%d,%d,%d,%d', bucket(KEYS[ki], true, now_s, now_ns, 1,
      tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2]), tonumber(ARGV[ai + 3])))
    ki, ai = ki + 1, ai + 4
  else
    local na = tonumber(ARGV[ai + 1])
    ai = ai + 2
    local keys, args = {}, {}
    for j = 1, nk do keys[j] = KEYS[ki + j - 1] end
    for j = 1, na do args[j] = ARGV[ai + j - 1] end
    local r = decide(keys, args)
    for j = 1, #r do r[j] = string.format('%d', r[j]) end
    out[d] = table.concat(r, ',')
    ki, ai = ki + nk, ai + na
  end
end
return table.concat(out, ';')
`

// Store is a [driver.Store] on Redis. It is safe for concurrent use.
type Store struct {
	c       Client
	owned   bool // opened from configuration: Close closes the client
	prefix  string
	channel string
	sharded bool // Cluster or Ring: keys with different hash tags may live apart

	decide, release, extend, undo script
	batch                         script // many decisions in one call: see batchSrc

	clock func() time.Time // tests only; nil reads TIME on the server

	workers   int
	maxBatch  int
	directMax int          // calls sent directly before batching starts
	direct    atomic.Int32 // calls being sent directly
	queue     chan *call
	stop      chan struct{}
	wg        sync.WaitGroup

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
	s.workers = max(4, 2*runtime.GOMAXPROCS(0))
	s.maxBatch = 256
	s.directMax = 2
	for _, o := range opts {
		o(s)
	}
	if s.prefix == "" {
		return nil, errors.New("ratesync/redisstore: key prefix must not be empty")
	}
	switch c.(type) {
	case *redis.ClusterClient, *redis.Ring:
		s.sharded = true
	}
	s.channel = s.prefix + ":released"
	s.hub = notify.New(s.listen)
	s.decide = newScript(decideSrc)
	s.batch = newScript(batchSrc)
	s.release = newScript(releaseSrc)
	s.extend = newScript(extendSrc)
	s.undo = newScript(undoSrc)
	s.queue = make(chan *call, 4*s.maxBatch)
	s.wg.Add(s.workers)
	for range s.workers {
		go s.worker()
	}
	return s, nil
}

// key returns the Redis key of a limiter key's state of one policy kind:
// prefix:{name:id}:tb|sw|cc. The braces make every kind of one limiter key
// share a Cluster slot. Colons and percent signs in the name are escaped,
// so the name ends at the first colon and keys cannot collide.
func (s *Store) key(k driver.Key, kind driver.Kind) string {
	var suffix string
	switch kind {
	case driver.TokenBucket:
		suffix = "}:tb"
	case driver.SlidingWindow:
		suffix = "}:sw"
	default:
		suffix = "}:cc"
	}
	return s.prefix + ":{" + k.Encoded() + suffix
}

// hashTag returns the part of key Redis Cluster hashes: the text between
// the first '{' and the next '}', when not empty; else the whole key.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return key
	}
	return key[i+1 : i+1+j]
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// clockArgs returns the clock arguments of a script call.
func (s *Store) clockArgs() (string, string) {
	if s.clock == nil {
		return "", ""
	}
	t := s.clock()
	return strconv.FormatInt(t.Unix(), 10), strconv.Itoa(t.Nanosecond() / 1000)
}

// call is one script call, queued for a worker.
type call struct {
	sc    *script
	keys  []string
	args  []any
	reply any
	err   error
	// state: queued, taken by a worker, or abandoned by its caller.
	state atomic.Int32
	done  chan struct{}
}

const (
	queued int32 = iota
	taken
	abandoned
)

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// do runs one script call through the batching workers. Once a worker has
// taken the call, do waits for its reply even if ctx ends, so that nothing
// the script admitted is lost.
func (s *Store) do(ctx context.Context, sc *script, keys []string, args []any) (any, error) {
	if s.direct.Add(1) <= int32(s.directMax) {
		// Few calls in flight: send this one from the caller's goroutine,
		// without a hand-off. The reply is awaited even if ctx ends.
		reply, err := sc.run(context.WithoutCancel(ctx), s.c, keys, args)
		s.direct.Add(-1)
		return reply, err
	}
	s.direct.Add(-1)
	c := callPool.Get().(*call)
	c.sc, c.keys, c.args, c.reply, c.err = sc, keys, args, nil, nil
	c.state.Store(queued)
	select {
	case s.queue <- c:
	case <-ctx.Done():
		callPool.Put(c)
		return nil, ctx.Err()
	case <-s.stop:
		callPool.Put(c)
		return nil, ErrClosed
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		if c.state.CompareAndSwap(queued, abandoned) {
			// A worker may still hold the pointer (and will drop the
			// call), so it does not go back to the pool.
			return nil, ctx.Err()
		}
		<-c.done
	case <-s.stop:
		if c.state.CompareAndSwap(queued, abandoned) {
			return nil, ErrClosed
		}
		<-c.done // a worker took it and finishes it before it stops
	}
	reply, err := c.reply, c.err
	c.sc, c.keys, c.args, c.reply = nil, nil, nil, nil
	callPool.Put(c)
	return reply, err
}

func (s *Store) worker() {
	defer s.wg.Done()
	batch := make([]*call, 0, s.maxBatch)
	cmds := make([]*redis.Cmd, 0, s.maxBatch)
	for {
		var c *call
		select {
		case c = <-s.queue:
		case <-s.stop:
			return
		}
		batch = append(batch[:0], c)
	drain:
		for len(batch) < s.maxBatch {
			select {
			case c = <-s.queue:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		live := batch[:0]
		for _, c := range batch {
			if c.state.CompareAndSwap(queued, taken) {
				live = append(live, c)
			}
		}
		cmds = s.exec(live, cmds[:0])
		for _, c := range live {
			c.done <- struct{}{}
		}
	}
}

// exec runs calls, in one pipeline when there are several, and stores each
// reply in its call.
func (s *Store) exec(calls []*call, cmds []*redis.Cmd) []*redis.Cmd {
	ctx := context.Background()
	switch len(calls) {
	case 0:
		return cmds
	case 1:
		c := calls[0]
		c.reply, c.err = c.sc.run(ctx, s.c, c.keys, c.args)
		return cmds
	}
	if !s.sharded && s.execBatch(ctx, calls) {
		return cmds
	}
	for _, c := range calls {
		if err := c.sc.load(ctx, s.c); err != nil {
			c.err = err
		}
	}
	_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			if c.err == nil {
				cmds = append(cmds, p.EvalSha(ctx, c.sc.sha, c.keys, c.args...))
			}
		}
		return nil
	})
	i := 0
	for _, c := range calls {
		if c.err != nil {
			continue
		}
		c.reply, c.err = cmds[i].Result()
		i++
		if isNoScript(c.err) { // the server lost its script cache
			c.reply, c.err = c.sc.run(ctx, s.c, c.keys, c.args)
		}
	}
	clear(cmds)
	return cmds[:0]
}

// execBatch runs the decide calls among calls as one batch script call
// and reports whether it did; the other calls (releases, extends) are left
// for the pipeline. It runs only when at least two decisions are waiting.
func (s *Store) execBatch(ctx context.Context, calls []*call) bool {
	n, nk, na := 0, 0, 1
	for _, c := range calls {
		if c.sc == &s.decide {
			n++
			nk += len(c.keys)
			na += 2 + len(c.args)
		}
	}
	if n < 2 || n != len(calls) {
		return false
	}
	keys := make([]string, 0, nk)
	args := make([]any, 1, na)
	args[0] = n
	for _, c := range calls {
		keys = append(keys, c.keys...)
		if loneBucket(c) {
			args = append(args, 0, c.args[5], c.args[6], c.args[7])
			continue
		}
		args = append(args, len(c.keys), len(c.args))
		args = append(args, c.args...)
	}
	reply, err := s.batch.run(ctx, s.c, keys, args)
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return false // a script error: one call each, so only its own decision fails
	}
	if err != nil {
		for _, c := range calls {
			c.err = err
		}
		return true
	}
	str, _ := reply.(string)
	for _, c := range calls {
		var group string
		group, str, _ = strings.Cut(str, ";")
		vals, err := parseInts(group)
		c.reply, c.err = vals, err
	}
	return true
}

// loneBucket reports whether c decides one token-bucket check that
// consumes, on the server's clock: batchSrc's compact form (see decideArgs
// for the argument layout).
func loneBucket(c *call) bool {
	return len(c.keys) == 1 && len(c.args) == 8 && c.args[0] == "1" && c.args[2] == "" && c.args[4] == 1
}

// parseInts parses "v,v,..." into integers.
func parseInts(s string) ([]int64, error) {
	if s == "" {
		return nil, errors.New("ratesync/redisstore: batch script returned too few replies")
	}
	out := make([]int64, 0, strings.Count(s, ",")+1)
	for s != "" {
		var f string
		f, s, _ = strings.Cut(s, ",")
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("ratesync/redisstore: batch script reply %q: %w", f, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// script is a Lua script run with EVALSHA, loaded once and reloaded with
// EVAL when the server answers NOSCRIPT.
type script struct {
	src    string
	sha    string
	loaded atomic.Bool
	mu     sync.Mutex
}

func newScript(src string) script {
	return script{src: src, sha: redis.NewScript(src).Hash()}
}

func (sc *script) load(ctx context.Context, c Client) error {
	if sc.loaded.Load() {
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.loaded.Load() {
		return nil
	}
	if err := c.ScriptLoad(ctx, sc.src).Err(); err != nil {
		return err
	}
	sc.loaded.Store(true)
	return nil
}

func (sc *script) run(ctx context.Context, c Client, keys []string, args []any) (any, error) {
	if err := sc.load(ctx, c); err != nil {
		return nil, err
	}
	v, err := c.EvalSha(ctx, sc.sha, keys, args...).Result()
	if isNoScript(err) {
		v, err = c.Eval(ctx, sc.src, keys, args...).Result()
	}
	return v, err
}

func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

func kindCode(k driver.Kind) int {
	switch k {
	case driver.TokenBucket:
		return 1
	case driver.SlidingWindow:
		return 2
	}
	return 3
}

// decideArgs builds the keys and arguments of decide.lua for checks.
func (s *Store) decideArgs(checks []driver.Check, consume bool, token string) ([]string, []any) {
	keys := make([]string, len(checks))
	args := make([]any, 4, 4+4*len(checks))
	mode := "0"
	if consume {
		mode = "1"
	}
	sec, usec := s.clockArgs()
	args[0], args[1], args[2], args[3] = mode, token, sec, usec
	for i := range checks {
		c := &checks[i]
		p := &c.Policy
		keys[i] = s.key(c.Key, p.Kind)
		var a int64
		var b int
		switch p.Kind {
		case driver.TokenBucket:
			a, b = int64(p.Interval()), p.Burst
		case driver.SlidingWindow:
			a, b = int64(p.Window), p.Limit
		default:
			a, b = int64(p.LeaseTTL), p.MaxConcurrent
		}
		args = append(args, kindCode(p.Kind), a, b, max(c.Cost, 1))
	}
	return keys, args
}

// needsToken reports whether a decision on checks writes members that need
// a unique name (window entries, leases).
func needsToken(checks []driver.Check) bool {
	for i := range checks {
		if checks[i].Policy.Kind != driver.TokenBucket {
			return true
		}
	}
	return false
}

// parse stores the reply of decide.lua in results and returns whether every
// check passed.
func parse(reply any, checks []driver.Check, results []driver.Result, consume bool, token string) (bool, error) {
	var buf [17]int64
	var vals []int64
	switch r := reply.(type) {
	case []int64: // from the batch script
		vals = r
	case []any:
		vals = buf[:0]
		for _, v := range r {
			vals = append(vals, toInt(v))
		}
	}
	if len(vals) < 1 {
		return false, fmt.Errorf("ratesync/redisstore: unexpected script reply %T", reply)
	}
	all := vals[0] == 1
	for i := range checks {
		base := 1 + 4*i
		if base+3 >= len(vals) {
			return false, fmt.Errorf("ratesync/redisstore: script reply has %d values for %d checks", len(vals), len(checks))
		}
		r := driver.Result{
			Allowed:    vals[base] == 1,
			Limit:      checks[i].Policy.Capacity(),
			Remaining:  int(vals[base+1]),
			ResetAfter: time.Duration(vals[base+3]),
		}
		if retry := vals[base+2]; retry < 0 {
			r.RetryAfter = time.Duration(1<<63 - 1)
		} else {
			r.RetryAfter = time.Duration(retry)
		}
		if consume && all && checks[i].Policy.Kind == driver.Concurrency {
			r.Lease = token
		}
		results[i] = r
	}
	return all, nil
}

func toInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

// Decide implements driver.Store.
func (s *Store) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if len(checks) == 0 {
		return true, nil
	}
	var token string
	if needsToken(checks) {
		token = driver.NewLeaseID()
	}
	if s.sharded && !sameTag(s, checks) {
		return s.decideTwoPhase(ctx, checks, results, token)
	}
	keys, args := s.decideArgs(checks, true, token)
	reply, err := s.do(ctx, &s.decide, keys, args)
	if err != nil {
		return false, err
	}
	return parse(reply, checks, results, true, token)
}

func sameTag(s *Store, checks []driver.Check) bool {
	tag := hashTag(s.key(checks[0].Key, driver.TokenBucket))
	for i := 1; i < len(checks); i++ {
		if hashTag(s.key(checks[i].Key, driver.TokenBucket)) != tag {
			return false
		}
	}
	return true
}

// groups splits checks by hash tag, in order of first appearance.
func (s *Store) groups(checks []driver.Check) [][]int {
	var out [][]int
	tags := map[string]int{}
	for i := range checks {
		tag := hashTag(s.key(checks[i].Key, driver.TokenBucket))
		g, ok := tags[tag]
		if !ok {
			g = len(out)
			tags[tag] = g
			out = append(out, nil)
		}
		out[g] = append(out[g], i)
	}
	return out
}

// decideTwoPhase decides checks whose keys live in different Cluster slots:
// one decide call per slot, in order; when one denies, the calls that
// passed are undone and every group is answered as a peek. The outcome is
// all-or-nothing, but between the calls another client can see the units a
// passing group took.
func (s *Store) decideTwoPhase(ctx context.Context, checks []driver.Check, results []driver.Result, token string) (bool, error) {
	groups := s.groups(checks)
	sub := func(g []int) []driver.Check {
		cs := make([]driver.Check, len(g))
		for j, i := range g {
			cs[j] = checks[i]
		}
		return cs
	}
	var passed [][]int
	fail := func(err error) (bool, error) {
		for _, g := range passed {
			keys, args := s.decideArgs(sub(g), true, token)
			if _, uerr := s.undo.run(context.WithoutCancel(ctx), s.c, keys, args); uerr != nil {
				err = errors.Join(err, fmt.Errorf("ratesync/redisstore: undo after a failed two-phase decision: %w", uerr))
			}
		}
		return false, err
	}
	denied := -1
	for gi, g := range groups {
		cs := sub(g)
		keys, args := s.decideArgs(cs, true, token)
		reply, err := s.do(ctx, &s.decide, keys, args)
		if err != nil {
			return fail(err)
		}
		rs := make([]driver.Result, len(cs))
		ok, err := parse(reply, cs, rs, true, token)
		if err != nil {
			return fail(err)
		}
		for j, i := range g {
			results[i] = rs[j]
		}
		if !ok {
			denied = gi
			break
		}
		passed = append(passed, g)
	}
	if denied < 0 {
		return true, nil
	}
	if _, err := fail(nil); err != nil {
		return false, err
	}
	for gi, g := range groups {
		if gi == denied {
			continue
		}
		cs := sub(g)
		rs := make([]driver.Result, len(cs))
		if err := s.peek(ctx, cs, rs); err != nil {
			return false, err
		}
		for j, i := range g {
			results[i] = rs[j]
		}
	}
	return false, nil
}

// Peek implements driver.Store.
func (s *Store) Peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(checks) == 0 {
		return nil
	}
	if s.sharded && !sameTag(s, checks) {
		for _, g := range s.groups(checks) {
			cs := make([]driver.Check, len(g))
			for j, i := range g {
				cs[j] = checks[i]
			}
			rs := make([]driver.Result, len(cs))
			if err := s.peek(ctx, cs, rs); err != nil {
				return err
			}
			for j, i := range g {
				results[i] = rs[j]
			}
		}
		return nil
	}
	return s.peek(ctx, checks, results)
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
	return err
}

// Extend implements driver.Extender.
func (s *Store) Extend(ctx context.Context, key driver.Key, lease string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	sec, usec := s.clockArgs()
	v, err := s.extend.run(ctx, s.c, []string{s.key(key, driver.Concurrency)}, []any{lease, int64(ttl), sec, usec})
	if err != nil {
		return false, err
	}
	return toInt(v) == 1, nil
}

// Reset implements driver.Store: it deletes every policy's state of key.
func (s *Store) Reset(ctx context.Context, key driver.Key) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.c.Unlink(ctx, s.key(key, driver.TokenBucket), s.key(key, driver.SlidingWindow), s.key(key, driver.Concurrency)).Err()
}

// ResetAll implements driver.Store: it deletes every key under the store's
// prefix, with SCAN on every primary (never KEYS), and nothing else.
func (s *Store) ResetAll(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	match := globEscape(s.prefix) + ":{*"
	switch c := s.c.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			return scanDelete(ctx, n, match)
		})
	case *redis.Ring:
		return c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			return scanDelete(ctx, n, match)
		})
	}
	return scanDelete(ctx, s.c, match)
}

type scanner interface {
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	Unlink(ctx context.Context, keys ...string) *redis.IntCmd
}

func scanDelete(ctx context.Context, c scanner, match string) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return err
		}
		// On Cluster, one UNLINK per key: keys of one batch may hash to
		// different slots.
		for _, k := range keys {
			if err := c.Unlink(ctx, k).Err(); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Ping implements driver.Store: it checks the connection and loads the
// scripts.
func (s *Store) Ping(ctx context.Context) error {
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

// SubscribeReleases implements driver.ReleaseNotifier. All subscribers of
// a store share one Redis subscription to the store's release channel,
// opened in the background: subscribing does no I/O on the caller's
// goroutine.
func (s *Store) SubscribeReleases(fn func(driver.Key)) func() { return s.hub.Subscribe(fn) }

// listen holds the store's subscription until ctx is done; go-redis
// resubscribes after reconnects.
func (s *Store) listen(ctx context.Context, deliver func(string)) {
	ps := s.c.Subscribe(ctx, s.channel)
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			deliver(m.Payload)
		}
	}
}

// Close stops the store's goroutines; it closes the client only when the
// store opened it (from configuration). Close is safe to call more than
// once.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		s.wg.Wait()
		s.hub.Close()
		if s.owned {
			if cl, ok := s.c.(interface{ Close() error }); ok {
				err = cl.Close()
			}
		}
	})
	return err
}

var (
	_ driver.Store           = (*Store)(nil)
	_ driver.Extender        = (*Store)(nil)
	_ driver.ReleaseNotifier = (*Store)(nil)
)
