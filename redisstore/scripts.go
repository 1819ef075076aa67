package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/redis/go-redis/v9"
)

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

// clockArgs returns the clock arguments of a script call.
func (s *Store) clockArgs() (string, string) {
	if s.clock == nil {
		return "", ""
	}
	t := s.clock()
	return strconv.FormatInt(t.Unix(), 10), strconv.Itoa(t.Nanosecond() / 1000)
}

// script is a Lua script run with EVALSHA, loaded once and reloaded with
// EVAL when the server answers NOSCRIPT.
type script struct {
	src    string
	sha    string
	once   bool // never resent by go-redis: see scriptCmd
	loaded atomic.Bool
	mu     sync.Mutex
}

func newScript(src string, once bool) script {
	return script{src: src, sha: redis.NewScript(src).Hash(), once: once}
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
	cmd := sc.cmd(ctx, false, keys, args)
	_ = c.Process(ctx, cmd)
	v, err := result(cmd)
	if isNoScript(err) {
		cmd = sc.cmd(ctx, true, keys, args)
		_ = c.Process(ctx, cmd)
		v, err = result(cmd)
	}
	return v, err
}

// cmd returns the EVALSHA (or, with source, EVAL) command of a call.
func (sc *script) cmd(ctx context.Context, source bool, keys []string, args []any) redis.Cmder {
	a := make([]any, 3, 3+len(keys)+len(args))
	a[0], a[1], a[2] = "evalsha", sc.sha, len(keys)
	if source {
		a[0], a[1] = "eval", sc.src
	}
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(ctx, a...)
	if sc.once {
		return onceCmd{cmd}
	}
	return cmd
}

// onceCmd is a command that go-redis must not send again: it retries a
// command whose reply came late (a read timeout) or was lost, which would
// run a decision twice. Only a command that never reached the server is
// sent again.
type onceCmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to retry the command.
func (onceCmd) NoRetry() bool { return true }

// result returns the reply and error of a command made by script.cmd.
func result(cmd redis.Cmder) (any, error) {
	switch c := cmd.(type) {
	case onceCmd:
		return c.Result()
	case *redis.Cmd:
		return c.Result()
	}
	return nil, cmd.Err()
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

// fastPath is the condition of decide.lua's one-bucket fast path.
const fastPath = "if #KEYS == 1 and ARGV[5] == '1' and not report then"

// withoutFastPath returns src with decide.lua's fast path turned off
// (tests only: the benchmark of the compact paths).
func withoutFastPath(src string) string {
	if !strings.Contains(src, fastPath) {
		panic("redisstore: decide.lua's fast path not found")
	}
	return strings.Replace(src, fastPath, "if false then", 1)
}
