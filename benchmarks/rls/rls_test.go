package rls

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := func() int {
		defer removeBuilt()
		// goleak.VerifyTestMain exits: run it last, after the binary is removed.
		return m.Run()
	}()
	if code != 0 {
		os.Exit(code)
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
		os.Exit(1)
	}
}

// services starts every service under test: ratesync serve (token bucket
// and sliding window, one process), and envoyproxy/ratelimit when
// RATESYNC_BENCH_RLS_ENVOY names its service binary.
func services(tb testing.TB, env *redisEnv) []*service {
	tbs, sws := startRatesync(tb, env)
	list := []*service{tbs, sws}
	if bin := os.Getenv("RATESYNC_BENCH_RLS_ENVOY"); bin != "" {
		list = append([]*service{startEnvoy(tb, bin, env, strings.Fields(os.Getenv("RATESYNC_BENCH_RLS_ENVOY_ENV")))}, list...)
	} else if testing.Verbose() {
		tb.Log("RATESYNC_BENCH_RLS_ENVOY not set: envoyproxy/ratelimit left out")
	}
	return list
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkRLS sends b.N decisions to each service at 32 and 256
// concurrent streams (spread over 10k addresses, no hot ones), and
// reports decisions/s and the p50 and p99 latency. envoyproxy/ratelimit is
// measured when RATESYNC_BENCH_RLS_ENVOY names its service binary.
// TestSideBySide is the comparison the README reports.
func BenchmarkRLS(b *testing.B) {
	env := setupRedis(b)
	list := services(b, env)
	for _, s := range list {
		w := newWorkload(s.domain)
		for _, c := range []int{32, 256} {
			b.Run(fmt.Sprintf("%s/c=%d", strings.ReplaceAll(s.name, " ", "_"), c), func(b *testing.B) {
				conns := dial(b, s.addr, envInt("RATESYNC_BENCH_RLS_CONNS", 4))
				defer closeAll(conns)
				b.ResetTimer()
				r := run(w, conns, loadSpec{workers: c, count: int64(b.N)}, s.proc.cmd.Process.Pid, env.pid)
				b.StopTimer()
				if r.errors > 0 {
					b.Fatalf("%d errors, the first: %v", r.errors, r.firstErr)
				}
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(r.rate(), "decisions/s")
				b.ReportMetric(r.quantile(0.5), "p50-µs")
				b.ReportMetric(r.quantile(0.99), "p99-µs")
			})
		}
	}
}

// TestSideBySide runs the comparison: rounds of fixed-duration runs of
// every service at every concurrency, interleaved, on the same Redis, and
// prints each run and the medians. Each run is a throughput run over the
// 10k addresses (every request under the limit: each denial is an
// under-admission) and an exactness run on the hot addresses only (each
// far above the limit: admissions per second against 1,000). It runs only
// with RATESYNC_BENCH_RLS=1 (run.sh sets it and builds
// envoyproxy/ratelimit).
//
// Settings: RATESYNC_BENCH_RLS_DURATION (default 10s per throughput run),
// RATESYNC_BENCH_RLS_HOT_DURATION (6s per exactness run),
// RATESYNC_BENCH_RLS_ROUNDS (3), RATESYNC_BENCH_RLS_CONCURRENCY ("32,256"),
// RATESYNC_BENCH_RLS_CONNS (4 gRPC connections per service).
func TestSideBySide(t *testing.T) {
	if os.Getenv("RATESYNC_BENCH_RLS") != "1" {
		t.Skip("set RATESYNC_BENCH_RLS=1 (or run benchmarks/rls/run.sh)")
	}
	dur := envDuration("RATESYNC_BENCH_RLS_DURATION", 10*time.Second)
	hotDur := envDuration("RATESYNC_BENCH_RLS_HOT_DURATION", 6*time.Second)
	rounds := envInt("RATESYNC_BENCH_RLS_ROUNDS", 3)
	nconns := envInt("RATESYNC_BENCH_RLS_CONNS", 4)
	concs := []int{32, 256}
	if v := os.Getenv("RATESYNC_BENCH_RLS_CONCURRENCY"); v != "" {
		concs = nil
		for _, f := range strings.Split(v, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || c <= 0 {
				t.Fatalf("RATESYNC_BENCH_RLS_CONCURRENCY: %q", v)
			}
			concs = append(concs, c)
		}
	}
	env := setupRedis(t)
	list := services(t, env)
	type key struct {
		svc string
		c   int
	}
	type pair struct{ load, hot *result }
	all := map[key][]pair{}
	fmt.Printf("%d round(s); per run: 1 s warm-up, %v over %d addresses, %v on %d hot addresses; %d gRPC connections per service; %d CPUs\n",
		rounds, dur, spreadAddrs, hotDur, hotAddrs, nconns, runtime.NumCPU())
	fmt.Printf("%-24s %4s %9s %8s %8s %6s %6s %7s %22s %28s %s\n",
		"service", "c", "dec/s", "p50 µs", "p99 µs", "errors", "denied", "hot/s", "cpu% gen/srv/redis/all", "hot: clock s/any 1 s/arrival(after 2 s)", "load avg")
	for round := range rounds {
		for _, c := range concs {
			order := slices.Clone(list)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, s := range order {
				w := newWorkload(s.domain)
				conns := dial(t, s.addr, nconns)
				pid := s.proc.cmd.Process.Pid
				loadavg, _ := os.ReadFile("/proc/loadavg")
				// Warm up: connections, the addresses' keys.
				run(w, conns, loadSpec{workers: c, duration: time.Second}, pid, env.pid)
				r := run(w, conns, loadSpec{workers: c, duration: dur}, pid, env.pid)
				h := run(w, conns, loadSpec{workers: c, duration: hotDur, hot: true}, pid, env.pid)
				closeAll(conns)
				if s.proc.exited() {
					t.Fatalf("%s exited:\n%s", s.name, s.proc.tail())
				}
				all[key{s.name, c}] = append(all[key{s.name, c}], pair{r, h})
				var hot []string
				var hotRate float64
				for i := range hotAddrs {
					e := h.hotExactness(i)
					hotRate += e.offered
					hot = append(hot, fmt.Sprintf("%d/%d/%d(%.0f)", e.worstClock, e.worstAny, e.arrivalAny, e.steady))
				}
				fmt.Printf("%-24s %4d %9.0f %8.0f %8.0f %6d %6d %7.0f %22s %28s %s\n", s.name, c, r.rate(), r.quantile(0.5), r.quantile(0.99),
					r.errors+h.errors, r.spreadDenied, hotRate/hotAddrs,
					fmt.Sprintf("%.0f/%.0f/%.0f/%.0f", pct(r.cpuSelf, r.elapsed), pct(r.cpuServer, r.elapsed), pct(r.cpuRedis, r.elapsed), r.machineBusy*float64(runtime.NumCPU())*100),
					strings.Join(hot, " "), strings.Join(strings.Fields(string(loadavg))[:3], " "))
			}
		}
	}
	fmt.Printf("\nmedians of %d round(s) (exactness: the worst of all rounds):\n\n", rounds)
	fmt.Printf("| service | c | decisions/s | p50 µs | p99 µs | decisions per CPU-second of the service | spread: denied | hot: offered/s per address | hot: most admitted in a clock second / in any 1 s (certainly decided in it) | hot: admitted/s after the first 2 s | CPU %% of one core: generator / service / Redis / machine |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range concs {
		for _, s := range list {
			ps := all[key{s.name, c}]
			med := func(f func(pair) float64) float64 {
				v := make([]float64, len(ps))
				for i, p := range ps {
					v[i] = f(p)
				}
				slices.Sort(v)
				return v[len(v)/2]
			}
			worstAlign, worstAny := 0, 0
			steadyLo, steadyHi := 1e18, 0.0
			offered := 1e18
			var denied int64
			for _, p := range ps {
				denied += p.load.spreadDenied
				for h := range hotAddrs {
					e := p.hot.hotExactness(h)
					worstAlign, worstAny = max(worstAlign, e.worstClock), max(worstAny, e.worstAny)
					steadyLo, steadyHi = min(steadyLo, e.steady), max(steadyHi, e.steady)
					offered = min(offered, e.offered)
				}
			}
			fmt.Printf("| %s | %d | %.0f | %.0f | %.0f | %.0f | %d | ≥ %.0f | %d / %d | %.0f–%.0f | %.0f / %.0f / %.0f / %.0f |\n", s.name, c,
				med(func(p pair) float64 { return p.load.rate() }),
				med(func(p pair) float64 { return p.load.quantile(0.5) }),
				med(func(p pair) float64 { return p.load.quantile(0.99) }),
				med(func(p pair) float64 { return float64(p.load.decisions) / p.load.cpuServer.Seconds() }),
				denied, offered, worstAlign, worstAny, steadyLo, steadyHi,
				med(func(p pair) float64 { return pct(p.load.cpuSelf, p.load.elapsed) }),
				med(func(p pair) float64 { return pct(p.load.cpuServer, p.load.elapsed) }),
				med(func(p pair) float64 { return pct(p.load.cpuRedis, p.load.elapsed) }),
				med(func(p pair) float64 { return p.load.machineBusy * float64(runtime.NumCPU()) * 100 }))
		}
	}
	for _, ps := range all {
		for _, p := range ps {
			for _, r := range []*result{p.load, p.hot} {
				if r.errors > 0 {
					t.Errorf("%d errors, the first: %v", r.errors, r.firstErr)
				}
			}
		}
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func pct(d, of time.Duration) float64 { return 100 * d.Seconds() / of.Seconds() }
