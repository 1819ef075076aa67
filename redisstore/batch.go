package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go/driver"
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
// most of the per-decision arguments. Each decision runs under pcall: one
// that raises an error (a key of another type) fails alone, and the batch
// goes on, so no decision is ever sent twice. The reply is one string,
// "v,v,...;v,v,...", one group per decision ("!message" for one that
// failed): a single bulk reply is far cheaper to read than nested arrays.
var batchSrc = bucketSrc + `local function decide(KEYS, ARGV)
` + decideBody + `
end
local t = redis.call('TIME')
local now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000
-- failed returns the reply group of a decision that raised err.
local function failed(err)
  if type(err) == 'table' then err = err.err end
  return '!' .. string.gsub(tostring(err), ';', ',')
end
local out = {}
local ki, ai = 1, 2
for d = 1, tonumber(ARGV[1]) do
  local nk = tonumber(ARGV[ai])
  if nk == 0 then
    local ok, r1, r2, r3, r4, r5 = pcall(bucket, KEYS[ki], true, now_s, now_ns, 1,
      tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2]), tonumber(ARGV[ai + 3]))
    if ok then
      out[d] = string.format('%d,%d,%d,%d,%d', r1, r2, r3, r4, r5)
    else
      out[d] = failed(r1)
    end
    ki, ai = ki + 1, ai + 4
  else
    local na = tonumber(ARGV[ai + 1])
    ai = ai + 2
    local keys, args = {}, {}
    for j = 1, nk do keys[j] = KEYS[ki + j - 1] end
    for j = 1, na do args[j] = ARGV[ai + j - 1] end
    local ok, r = pcall(decide, keys, args)
    if ok then
      for j = 1, #r do r[j] = string.format('%d', r[j]) end
      out[d] = table.concat(r, ',')
    else
      out[d] = failed(r)
    end
    ki, ai = ki + nk, ai + na
  end
end
return table.concat(out, ';')
`

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
	// An asynchronous decision (DecideAsync) is finished by the worker,
	// which reports it to cb, instead of signalling done.
	cb      driver.DecideDone
	ctx     context.Context
	checks  []driver.Check
	results []driver.Result
	token   string
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
	cmds := make([]redis.Cmder, 0, s.maxBatch)
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
			if c.cb != nil {
				s.finishAsync(c, c.reply, c.err)
				continue
			}
			c.done <- struct{}{}
		}
	}
}

// exec runs calls, in one pipeline when there are several, and stores each
// reply in its call.
func (s *Store) exec(calls []*call, cmds []redis.Cmder) []redis.Cmder {
	ctx := s.life
	switch len(calls) {
	case 0:
		return cmds
	case 1:
		c := calls[0]
		c.reply, c.err = c.sc.run(ctx, s.c, c.keys, c.args)
		return cmds
	}
	if !s.sharded.Load() && s.execBatch(ctx, calls) {
		return cmds
	}
	return s.pipeline(ctx, calls, cmds)
}

// pipeline runs calls as one pipeline, one script call each (on Cluster,
// each goes to its key's node), and stores each reply in its call.
func (s *Store) pipeline(ctx context.Context, calls []*call, cmds []redis.Cmder) []redis.Cmder {
	for _, c := range calls {
		if err := c.sc.load(ctx, s.c); err != nil {
			c.err = err
		}
	}
	_, _ = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			if c.err == nil {
				cmd := c.sc.cmd(ctx, false, c.keys, c.args)
				_ = p.Process(ctx, cmd)
				cmds = append(cmds, cmd)
			}
		}
		return nil
	})
	i := 0
	for _, c := range calls {
		if c.err != nil {
			continue
		}
		c.reply, c.err = result(cmds[i])
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
		if !s.general && loneBucket(c) {
			args = append(args, 0, c.args[5], c.args[6], c.args[7])
			continue
		}
		args = append(args, len(c.keys), len(c.args))
		args = append(args, c.args...)
	}
	reply, err := s.batch.run(ctx, s.c, keys, args)
	if isCrossSlot(err) {
		// A Cluster behind a client that did not say so; the batch did not
		// run, so its calls go again one by one.
		s.sharded.Store(true)
		return false
	}
	if err != nil {
		// The batch may have run, in part or whole (a reply lost on the
		// way back): sending its decisions again could apply them twice.
		for _, c := range calls {
			c.err = err
		}
		return true
	}
	str, _ := reply.(string)
	for _, c := range calls {
		var group string
		group, str, _ = strings.Cut(str, ";")
		if msg, failed := strings.CutPrefix(group, "!"); failed {
			c.reply, c.err = nil, replyError(msg)
			continue
		}
		c.reply, c.err = parseInts(group)
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

// DecideAsync implements driver.AsyncDecider: the decision is queued for
// the batch workers, which report it to done; or, while few calls are in
// flight, made on the caller's goroutine, as Decide does, when the
// deadline allows it and the client honours context deadlines.
func (s *Store) DecideAsync(ctx context.Context, deadline time.Time, checks []driver.Check, results []driver.Result, done driver.DecideDone) {
	if answered, ok, err := s.screen(ctx, checks); answered {
		done.DecideDone(ok, classify(err))
		return
	}
	var token string
	if needsToken(checks) {
		token = driver.NewLeaseID()
	}
	if s.sharded.Load() && !sameTag(s, checks) {
		// A two-phase decision makes several calls, one after the other.
		go func() {
			ok, err := s.decideTwoPhase(ctx, checks, results, token)
			done.DecideDone(ok, classify(err))
		}()
		return
	}
	keys, args := s.decideArgs(checks, true, token)
	if !deadline.IsZero() && token == "" && s.deadlines {
		if s.direct.Add(1) <= int32(s.directMax) {
			reply, err := s.decide.run(deadlineCtx{ctx, deadline}, s.c, keys, args)
			s.direct.Add(-1)
			s.report(reply, err, ctx, checks, results, token, done)
			return
		}
		s.direct.Add(-1)
	}
	c := callPool.Get().(*call)
	c.sc, c.keys, c.args, c.reply, c.err = &s.decide, keys, args, nil, nil
	c.cb, c.ctx, c.checks, c.results, c.token = done, ctx, checks, results, token
	c.state.Store(queued)
	select {
	case s.queue <- c:
		s.closedSince()
		return
	default:
	}
	// The queue is full: wait for room on a goroutine of its own.
	go func() {
		select {
		case s.queue <- c:
			s.closedSince()
		case <-ctx.Done():
			s.finishAsync(c, nil, ctx.Err())
		case <-s.stop:
			s.finishAsync(c, nil, ErrClosed)
		}
	}()
}

// finishAsync reports the reply of a queued asynchronous decision to its
// caller, and puts the call back in the pool.
func (s *Store) finishAsync(c *call, reply any, err error) {
	cb, ctx, checks, results, token := c.cb, c.ctx, c.checks, c.results, c.token
	c.sc, c.keys, c.args, c.reply, c.err = nil, nil, nil, nil, nil
	c.cb, c.ctx, c.checks, c.results, c.token = nil, nil, nil, nil, ""
	callPool.Put(c)
	s.report(reply, err, ctx, checks, results, token, cb)
}

// report fills results from the reply of an asynchronous decision, and
// reports it.
func (s *Store) report(reply any, err error, ctx context.Context, checks []driver.Check, results []driver.Result, token string, cb driver.DecideDone) {
	if isCrossSlot(err) && !sameTag(s, checks) {
		// answer goes the two-phase way: several calls, one after the
		// other, not on this goroutine (the caller's, or a batch worker).
		go func() {
			ok, err := s.answer(ctx, reply, err, checks, results, token)
			cb.DecideDone(ok, classify(err))
		}()
		return
	}
	ok, err := s.answer(ctx, reply, err, checks, results, token)
	cb.DecideDone(ok, classify(err))
}

// closedSince finishes the asynchronous decisions of a queue that Close
// may have drained already, when the store was closed as one was queued.
func (s *Store) closedSince() {
	if s.closed.Load() {
		s.drainAsync()
	}
}

// drainAsync finishes, with ErrClosed, the asynchronous decisions left in
// the queue once the workers have stopped.
func (s *Store) drainAsync() {
	for {
		select {
		case c := <-s.queue:
			if c.cb != nil && c.state.CompareAndSwap(queued, taken) {
				s.finishAsync(c, nil, ErrClosed)
			}
		default:
			return
		}
	}
}

// deadlineCtx is ctx with deadline d, for go-redis, which sets a call's
// socket deadlines from its context's Deadline when ContextTimeoutEnabled
// is set: the call ends by d, without the timer and channel of
// context.WithDeadline (which cost a tenth of a decision at low load). Its
// Done is ctx's: the call is cut by its socket deadline, not by Done.
type deadlineCtx struct {
	context.Context
	d time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.d, true }
