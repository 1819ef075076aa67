package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"))
}

// The traffic's numbers, as the in-memory reader collects them: 2 clients
// × 5 tries on 3 + 0.001/s (6 admitted, 4 denied), a job held and a
// second one that times out, and 4 requests on a shadow rule of 2 (2
// admitted only because it is in shadow mode).
const wantMemory = `instruments:
  ratesync.acquisition.duration (s, histogram)
    {ratesync.engine=memory,ratesync.limiter=api} count=6
    {ratesync.engine=memory,ratesync.limiter=beta} count=2
    {ratesync.engine=memory,ratesync.limiter=jobs} count=1
  ratesync.acquisitions ({request}, counter)
    {ratesync.engine=memory,ratesync.limiter=api} 6
    {ratesync.engine=memory,ratesync.limiter=beta} 2
    {ratesync.engine=memory,ratesync.limiter=jobs} 1
  ratesync.config.reloads ({reload}, counter)
    {ratesync.result=failure} 0
    {ratesync.result=success} 0
  ratesync.decisions ({decision}, counter)
    {ratesync.limiter=api,ratesync.result=allowed} 6
    {ratesync.limiter=api,ratesync.result=denied} 4
    {ratesync.limiter=api,ratesync.result=timeout} 0
    {ratesync.limiter=beta,ratesync.result=allowed} 2
    {ratesync.limiter=beta,ratesync.result=denied} 2
    {ratesync.limiter=beta,ratesync.result=timeout} 0
    {ratesync.limiter=jobs,ratesync.result=allowed} 1
    {ratesync.limiter=jobs,ratesync.result=denied} 0
    {ratesync.limiter=jobs,ratesync.result=timeout} 1
  ratesync.fallback_decisions ({decision}, counter)
    {ratesync.limiter=api} 0
    {ratesync.limiter=beta} 0
    {ratesync.limiter=jobs} 0
  ratesync.leases_in_use ({lease}, up-down counter)
    {ratesync.limiter=api} 0
    {ratesync.limiter=beta} 0
    {ratesync.limiter=jobs} 1
  ratesync.rule_store_errors ({decision}, counter)
    {ratesync.limiter=api} 0
    {ratesync.limiter=beta} 0
    {ratesync.limiter=jobs} 0
  ratesync.shadow_denials ({decision}, counter)
    {ratesync.limiter=api} 0
    {ratesync.limiter=beta} 2
    {ratesync.limiter=jobs} 0
  ratesync.store.circuit_breaker.state (1, gauge)
    {ratesync.circuit_breaker.state=closed,ratesync.store=main} 1
    {ratesync.circuit_breaker.state=half_open,ratesync.store=main} 0
    {ratesync.circuit_breaker.state=open,ratesync.store=main} 0
  ratesync.store.fallback_active (1, gauge)
    {ratesync.store=main} 0
  ratesync.timeouts ({call}, counter)
    {ratesync.engine=memory,ratesync.limiter=api} 0
    {ratesync.engine=memory,ratesync.limiter=beta} 0
    {ratesync.engine=memory,ratesync.limiter=jobs} 1
  ratesync.waiting ({call}, up-down counter)
    {ratesync.limiter=api} 0
    {ratesync.limiter=beta} 0
    {ratesync.limiter=jobs} 0
spans:
  GET /items (internal, parent none) {} status=Unset
  (the memory store decides in process: no store calls, so no store-call spans; set REDIS_URL)
`

func TestMemory(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out, ""); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != wantMemory {
		t.Fatalf("output:\n%s\nwant:\n%s", got, wantMemory)
	}
}

// On Redis the numbers are the same, and every store call has its span,
// under the handler's: as many decide spans as the histogram counts.
func TestRedis(t *testing.T) {
	url := testenv.RedisURL(t)
	var out bytes.Buffer
	if err := run(context.Background(), &out, url); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"{ratesync.engine=redis,ratesync.limiter=api} 6\n",
		"{ratesync.limiter=api,ratesync.result=denied} 4\n",
		"{ratesync.limiter=beta} 2\n", // shadow denials
		"{ratesync.limiter=jobs,ratesync.result=timeout} 1\n",
		"ratesync.store.call.duration (s, histogram)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	m := regexp.MustCompile(`\{ratesync.operation=decide,ratesync.store=main\} count=(\d+)`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no store-call histogram of decide:\n%s", got)
	}
	decides, _ := strconv.Atoi(m[1])
	spans := strings.Count(got, "  ratesync.decide (client, parent GET /items) {ratesync.store=main,ratesync.engine=redis,db.operation.name=decide,db.system.name=redis")
	if decides < 15 || spans != decides { // 10 api, 4 beta, at least 1 per job
		t.Errorf("%d decide spans under the handler, %d decide calls counted:\n%s", spans, decides, got)
	}
	if strings.Contains(got, "alice") || strings.Contains(got, "bob") {
		t.Errorf("a client identifier in the output:\n%s", got)
	}
}
