package storetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
)

const (
	reloadFor    = 10 * time.Second
	reloadEvery  = 200 * time.Millisecond
	reloadPeriod = int(reloadFor / reloadEvery)
	// reloadInvalid is the period whose file is invalid: every process must
	// reject it and keep the limits in force.
	reloadInvalid = reloadPeriod / 2
	reloadBurst   = 20
)

// reloadLimits returns the limits of period i: the window limit (its
// window outlasts the run, so the count only grows: it flaps down and up
// while rising), the bucket rate (per second) and max_concurrent, both
// switching between two values.
func reloadLimits(i int) (window int, rate float64, conc int) {
	window = 10*i + 100
	if i%2 == 1 {
		window -= 20
	}
	rate, conc = 100, 4
	if i%2 == 1 {
		rate, conc = 200, 6
	}
	return window, rate, conc
}

func reloadConfig(i int) string {
	if i == reloadInvalid {
		return "[limiters.window]\nstore = \"s\"\nlimit = 0 # invalid: rejected, nothing changes\n"
	}
	w, rate, conc := reloadLimits(i)
	return fmt.Sprintf(`# period %d
[limiters.window]
store = "s"
limit = %d
window_seconds = 600
on_store_error = "deny"

[limiters.bucket]
store = "s"
rate_per_second = %g
burst = %d
on_store_error = "deny"

[limiters.conc]
store = "s"
max_concurrent = %d
lease_seconds = 30
timeout = 0.1
on_store_error = "deny"
`, i, w, rate, reloadBurst, conc)
}

// ReloadUnderLoad runs 4 OS processes of 32 goroutines for 10 s on one key
// per policy while the configuration file they follow (WatchConfig) is
// rewritten every 200 ms between two limits, once with an invalid file,
// and checks that no count is lost or doubled across reloads:
//
//   - sliding window (a window longer than the run, a limit that flaps
//     down and up while rising): every admission's count is its own (the
//     counts after the admissions are exactly 1..N), within the limit that
//     admitted it, and N is the highest limit in force;
//   - token bucket (100/s and 200/s): never above the burst plus, period
//     by period, the higher of the rate in force and the one before it
//     (a process may apply a new file a little late);
//   - max_concurrent (4 and 6): never more holders than 6, and every lease
//     taken before a reload is released after it without error;
//   - the invalid file is rejected by every process, and no admission
//     reports a limit of it.
//
// The processes are those of MultiProcess: o.ChildTest calls
// MultiProcessChild.
func ReloadUnderLoad(t *testing.T, o MultiProcessOptions) {
	if os.Getenv("RATESYNC_HAMMER_CHILD") != "" {
		t.Skip("child process")
	}
	ns := o.Namespace(t)
	path := filepath.Join(t.TempDir(), "rate-sync.toml")
	write := func(i int) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(reloadConfig(i)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	start := time.Now().Add(time.Second) // all processes start together
	var wg sync.WaitGroup
	outs := make([]string, hammerProcs)
	errs := make([]error, hammerProcs)
	for p := range hammerProcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^"+o.ChildTest+"$", "-test.count=1")
			cmd.Env = append(os.Environ(),
				"RATESYNC_HAMMER_CHILD=reload",
				"RATESYNC_HAMMER_NS="+ns,
				"RATESYNC_HAMMER_CONFIG="+path,
				"RATESYNC_HAMMER_START="+strconv.FormatInt(start.UnixNano(), 10),
			)
			out, err := cmd.CombinedOutput()
			outs[p] = string(out)
			if err != nil {
				errs[p] = fmt.Errorf("%v\n%s", err, out)
			}
		}()
	}
	// The schedule: period i's file is written at start + i*reloadEvery.
	for i := 1; i < reloadPeriod; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * reloadEvery)))
		write(i)
	}
	wg.Wait()
	for p, err := range errs {
		if err != nil {
			t.Fatalf("process %d: %v", p, err)
		}
	}
	valid := map[int]bool{}
	maxWindow := 0
	bound := float64(reloadBurst)
	prevRate := 0.0
	for i := range reloadPeriod {
		if i == reloadInvalid {
			continue
		}
		w, rate, _ := reloadLimits(i)
		valid[w] = true
		maxWindow = max(maxWindow, w)
		bound += max(rate, prevRate) * reloadEvery.Seconds()
		prevRate = rate
	}
	bound += prevRate * 0.25 // the last decisions, sent just before the end
	seen := map[int]int{}
	bucket, conc, windowTotal, highest := 0, 0, 0, 0
	for p, out := range outs {
		sc := bufio.NewScanner(strings.NewReader(out))
		rejected := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "W":
				count, _ := strconv.Atoi(f[1])
				limit, _ := strconv.Atoi(f[2])
				if !valid[limit] {
					t.Errorf("process %d: an admission under window limit %d, which no valid file gave", p, limit)
				}
				if count < 1 || count > limit {
					t.Errorf("process %d: admission number %d under limit %d", p, count, limit)
				}
				seen[count]++
				windowTotal++
				highest = max(highest, limit)
			case len(f) == 2 && f[0] == "BUCKET":
				n, _ := strconv.Atoi(f[1])
				bucket += n
			case len(f) == 2 && f[0] == "CONC":
				n, _ := strconv.Atoi(f[1])
				conc += n
			case len(f) == 3 && f[0] == "RELOADS":
				failed, _ := strconv.Atoi(f[2])
				rejected = failed >= 1
				t.Logf("process %d: reloads applied %s, rejected %s", p, f[1], f[2])
			}
		}
		if !rejected {
			t.Errorf("process %d did not reject the invalid file", p)
		}
	}
	for n := 1; n <= windowTotal; n++ {
		if seen[n] != 1 {
			t.Errorf("window: admission number %d was reported %d times (want once: none lost, none doubled)", n, seen[n])
			break
		}
	}
	// Every raise is filled within milliseconds: the total is the highest
	// limit an admission reports, one of the last periods' at least.
	late, _, _ := reloadLimits(reloadPeriod - 4)
	t.Logf("window: %d admitted, highest limit in force %d (highest written %d)", windowTotal, highest, maxWindow)
	if windowTotal != highest || highest < late {
		t.Errorf("window: admitted %d, want exactly the highest limit in force, %d (at least %d)", windowTotal, highest, late)
	}
	t.Logf("bucket: %d admitted in %v, bound %.0f", bucket, reloadFor, bound)
	if float64(bucket) > bound {
		t.Errorf("bucket: admitted %d > bound %.0f", bucket, bound)
	}
	if min := 0.5 * 100 * reloadFor.Seconds(); float64(bucket) < min {
		t.Errorf("bucket: admitted only %d, want at least %.0f (the limiter must not starve)", bucket, min)
	}
	peak, err := o.Holders(t, ns).Peak(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("concurrency: %d acquisitions, peak holders %d (max 6)", conc, peak)
	if peak > 6 || peak < 2 || conc < o.MinAcquisitions {
		t.Errorf("concurrency: peak holders %d (want 2..6), %d acquisitions (want >= %d)", peak, conc, o.MinAcquisitions)
	}
}

// reloadChild is one process of ReloadUnderLoad.
func reloadChild(t *testing.T, o MultiProcessOptions) {
	ns := os.Getenv("RATESYNC_HAMMER_NS")
	st := o.Open(t, ns)
	holders := o.Holders(t, ns)
	r := ratesync.NewRegistry()
	defer r.Close()
	if err := r.AddStore("s", st, ratesync.WithCallTimeout(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	startNs, _ := strconv.ParseInt(os.Getenv("RATESYNC_HAMMER_START"), 10, 64)
	start := time.Unix(0, startNs)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- r.WatchConfig(watchCtx, os.Getenv("RATESYNC_HAMMER_CONFIG")) }()
	for r.Reloads().Succeeded == 0 { // the first load
		select {
		case err := <-watched:
			t.Fatalf("WatchConfig: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	window, _ := r.Get("window")
	bucket, _ := r.Get("bucket")
	conc, _ := r.Get("conc")
	time.Sleep(time.Until(start)) // a start line shared by the processes
	runCtx, cancel := context.WithDeadline(context.Background(), start.Add(reloadFor))
	defer cancel()
	var mu sync.Mutex
	var lines []string
	var nBucket, nConc atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		if runCtx.Err() == nil {
			firstErr.CompareAndSwap(nil, err)
		}
	}
	var wg sync.WaitGroup
	for g := range hammerGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				switch g % 3 {
				case 0:
					d, err := window.Try(runCtx)
					if err != nil {
						fail(err)
						return
					}
					if d.Allowed {
						mu.Lock()
						lines = append(lines, fmt.Sprintf("W %d %d", d.Limit-d.Remaining, d.Limit))
						mu.Unlock()
					}
				case 1:
					d, err := bucket.Try(runCtx)
					if err != nil {
						fail(err)
						return
					}
					if d.Allowed {
						nBucket.Add(1)
					}
				case 2:
					lease, err := conc.Acquire(runCtx)
					if errors.Is(err, ratesync.ErrTimeout) || runCtx.Err() != nil {
						continue
					}
					if err != nil {
						fail(err)
						return
					}
					nConc.Add(1)
					if err := holders.Enter(ctx); err != nil {
						fail(err)
					}
					time.Sleep(5 * time.Millisecond) // work under the lease, across reloads
					if err := holders.Leave(ctx); err != nil {
						fail(err)
					}
					if err := lease.Release(ctx); err != nil {
						firstErr.CompareAndSwap(nil, fmt.Errorf("release after reloads: %w", err))
					}
				}
			}
		}()
	}
	wg.Wait()
	stopWatch()
	if err := <-watched; err != nil {
		t.Fatalf("WatchConfig: %v", err)
	}
	if err, _ := firstErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	rs := r.Reloads()
	for _, l := range lines {
		fmt.Println(l)
	}
	fmt.Printf("BUCKET %d\nCONC %d\nRELOADS %d %d\n", nBucket.Load(), nConc.Load(), rs.Succeeded, rs.Failed)
}
