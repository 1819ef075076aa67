package rls

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The load: requests spread over spreadAddrs addresses, far below the
// limit each (every one should be admitted); or, for exactness, requests
// on hotAddrs addresses only, each far above the limit.
const (
	spreadAddrs = 10_000
	hotAddrs    = 2
)

var (
	spreadNames = func() []string {
		s := make([]string, spreadAddrs)
		for i := range s {
			s[i] = fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)
		}
		return s
	}()
	hotNames = []string{"198.18.0.1", "198.18.0.2"}
)

// workload is the requests of one service, built once: the generator
// sends the same messages again (gRPC only reads them).
type workload struct {
	spread, hot []*rlspb.RateLimitRequest
}

func newWorkload(domain string) *workload {
	w := &workload{}
	for _, a := range spreadNames {
		w.spread = append(w.spread, request(domain, a))
	}
	for _, a := range hotNames {
		w.hot = append(w.hot, request(domain, a))
	}
	return w
}

// loadSpec is one run: workers concurrent streams for duration, or count
// decisions in all when count > 0.
type loadSpec struct {
	workers  int
	conns    int
	duration time.Duration
	count    int64
	hot      bool // on the hot addresses only; the spread ones when false
}

// result is what one run measured.
type result struct {
	decisions    int64
	elapsed      time.Duration
	lat          []uint32 // ns, sorted
	errors       int64
	firstErr     error
	spreadOK     int64
	spreadDenied int64
	hotSent      [hotAddrs]int64
	hotOK        [hotAddrs][][2]int64 // each admission: when it was sent and when it was answered, ns after start, by sending time
	start        time.Time
	cpuSelf      time.Duration
	cpuServer    time.Duration
	cpuRedis     time.Duration
	machineBusy  float64 // fraction of all CPUs busy, every process of the machine
}

type workerState struct {
	lat          []uint32
	errors       int64
	firstErr     error
	spreadOK     int64
	spreadDenied int64
	hotSent      [hotAddrs]int64
	hotOK        [hotAddrs][][2]int64
}

// dial opens n connections to addr.
func dial(tb testing.TB, addr string, n int) []*grpc.ClientConn {
	tb.Helper()
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatal(err)
		}
		c.Connect()
		conns[i] = c
	}
	return conns
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		c.Close()
	}
}

// run sends the load of spec to the service behind conns and measures it.
// serverPID and redisPID are read for their CPU time.
func run(w *workload, conns []*grpc.ClientConn, spec loadSpec, serverPID, redisPID int) *result {
	clients := make([]rlspb.RateLimitServiceClient, len(conns))
	for i, c := range conns {
		clients[i] = rlspb.NewRateLimitServiceClient(c)
	}
	states := make([]workerState, spec.workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	seed := rand.Uint64()

	srv0, _ := cpuTime(serverPID)
	red0, _ := cpuTime(redisPID)
	self0 := selfCPU()
	busy0, total0 := machineCPU()
	start := time.Now()
	deadline := start.Add(spec.duration)
	for i := range spec.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &states[i]
			client := clients[i%len(clients)]
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			ctx := context.Background()
			if spec.count > 0 {
				st.lat = make([]uint32, 0, spec.count/int64(spec.workers)+1)
			} else {
				st.lat = make([]uint32, 0, 1<<14)
			}
			for {
				if spec.count > 0 && next.Add(1) > spec.count {
					return
				}
				hot := -1
				var req *rlspb.RateLimitRequest
				if spec.hot {
					hot = rng.IntN(hotAddrs)
					req = w.hot[hot]
				} else {
					req = w.spread[rng.IntN(spreadAddrs)]
				}
				t0 := time.Now()
				resp, err := client.ShouldRateLimit(ctx, req)
				t1 := time.Now()
				d := t1.Sub(t0)
				if d > 1<<32-1 {
					d = 1<<32 - 1
				}
				st.lat = append(st.lat, uint32(d))
				switch {
				case err != nil:
					st.errors++
					if st.firstErr == nil {
						st.firstErr = err
					}
				case hot >= 0:
					st.hotSent[hot]++
					if resp.GetOverallCode() == rlspb.RateLimitResponse_OK {
						st.hotOK[hot] = append(st.hotOK[hot], [2]int64{int64(t0.Sub(start)), int64(t1.Sub(start))})
					}
				case resp.GetOverallCode() == rlspb.RateLimitResponse_OK:
					st.spreadOK++
				default:
					st.spreadDenied++
				}
				if spec.count == 0 && t1.After(deadline) {
					return
				}
			}
		}()
	}
	wg.Wait()
	r := &result{elapsed: time.Since(start), start: start}
	r.cpuSelf = selfCPU() - self0
	if busy1, total1 := machineCPU(); total1 > total0 {
		r.machineBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	if c, err := cpuTime(serverPID); err == nil {
		r.cpuServer = c - srv0
	}
	if c, err := cpuTime(redisPID); err == nil {
		r.cpuRedis = c - red0
	}
	n := 0
	for i := range states {
		n += len(states[i].lat)
	}
	r.lat = make([]uint32, 0, n)
	for i := range states {
		st := &states[i]
		r.lat = append(r.lat, st.lat...)
		r.errors += st.errors
		if r.firstErr == nil {
			r.firstErr = st.firstErr
		}
		r.spreadOK += st.spreadOK
		r.spreadDenied += st.spreadDenied
		for h := range hotAddrs {
			r.hotSent[h] += st.hotSent[h]
			r.hotOK[h] = append(r.hotOK[h], st.hotOK[h]...)
		}
	}
	for h := range hotAddrs {
		slices.SortFunc(r.hotOK[h], func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	}
	slices.Sort(r.lat)
	r.decisions = int64(len(r.lat))
	return r
}

func (r *result) rate() float64 { return float64(r.decisions) / r.elapsed.Seconds() }

// quantile of the latencies, in µs.
func (r *result) quantile(q float64) float64 {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(q * float64(len(r.lat)))
	if i >= len(r.lat) {
		i = len(r.lat) - 1
	}
	return float64(r.lat[i]) / 1e3
}

// exactness of the admissions of one hot address. An admission was
// decided between the moment its request was sent and the moment its
// answer arrived: the counts are of admissions certainly decided within
// the interval (sent and answered in it), so they never exceed what the
// service admitted in it; the arrival count takes the answers' arrival
// times alone (latency jitter can put more in one second than were
// decided in it).
type exactness struct {
	offered    float64 // requests per second sent to it
	worstClock int     // most admissions in one second of the clock (whole seconds inside the run)
	worstAny   int     // most admissions in any 1 s interval
	arrivalAny int     // most answers admitting it that arrived in any 1 s interval
	steady     float64 // admissions per second after the first 2 s (by arrival)
}

func (r *result) hotExactness(h int) exactness {
	adm := r.hotOK[h] // by sending time
	e := exactness{offered: float64(r.hotSent[h]) / r.elapsed.Seconds()}
	sec := int64(time.Second)
	// Intervals [a, a+1s) starting at a sending time.
	j := 0
	for i := range adm {
		a := adm[i][0]
		for j < len(adm) && adm[j][0] < a+sec {
			j++
		}
		n := 0
		for _, x := range adm[i:j] {
			if x[1] < a+sec {
				n++
			}
		}
		e.worstAny = max(e.worstAny, n)
	}
	// Seconds of the clock wholly inside the run.
	base := r.start.UnixNano()
	counts := map[int64]int{}
	for _, x := range adm {
		s0, s1 := (base+x[0])/sec, (base+x[1])/sec
		if s0 == s1 && s0 > base/sec && s1 < (base+int64(r.elapsed))/sec {
			counts[s0]++
		}
	}
	for _, c := range counts {
		e.worstClock = max(e.worstClock, c)
	}
	// By arrival.
	arr := make([]int64, len(adm))
	for i, x := range adm {
		arr[i] = x[1]
	}
	slices.Sort(arr)
	j = 0
	for i := range arr {
		for j < len(arr) && arr[j] < arr[i]+sec {
			j++
		}
		e.arrivalAny = max(e.arrivalAny, j-i)
	}
	if span := r.elapsed - 2*time.Second; span > 0 {
		i, _ := slices.BinarySearch(arr, 2*sec)
		e.steady = float64(len(arr)-i) / span.Seconds()
	}
	return e
}
