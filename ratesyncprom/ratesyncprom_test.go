package ratesyncprom_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/ratesyncprom"
)

var ctx = context.Background()

func setup(t *testing.T) (*prometheus.Registry, *ratesyncprom.Metrics, *ratesync.Registry) {
	t.Helper()
	pr := prometheus.NewRegistry()
	m, err := ratesyncprom.New(pr)
	if err != nil {
		t.Fatal(err)
	}
	reg := ratesync.NewRegistry(m.Options()...)
	t.Cleanup(func() { reg.Close() })
	m.Watch(reg)
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 2})
	reg.ConfigureLimiter("jobs", ratesync.Rule{Store: "mem", MaxConcurrent: 1, Timeout: 20 * time.Millisecond})
	return pr, m, reg
}

func TestMetrics(t *testing.T) {
	pr, _, reg := setup(t)
	api, _ := reg.Get("api")
	// 100 clients: the labels must not grow with them.
	for i := range 100 {
		for range 3 {
			api.For("client-" + strconv.Itoa(i)).Try(ctx)
		}
	}
	jobs, _ := reg.Get("jobs")
	held, err := jobs.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.Acquire(ctx); !errors.Is(err, ratesync.ErrTimeout) {
		t.Fatalf("second acquire: %v", err)
	}
	expected := `
# HELP ratesync_acquisitions_total Requests admitted, by rule (as rate-sync's metric of the same name).
# TYPE ratesync_acquisitions_total counter
ratesync_acquisitions_total{engine="memory",group_id="api"} 200
ratesync_acquisitions_total{engine="memory",group_id="jobs"} 1
# HELP ratesync_decisions_total Decisions by rule and result: allowed, denied, error (the call failed), fallback (the store failed and the failure policy answered).
# TYPE ratesync_decisions_total counter
ratesync_decisions_total{group_id="api",result="allowed"} 200
ratesync_decisions_total{group_id="api",result="denied"} 100
ratesync_decisions_total{group_id="jobs",result="allowed"} 1
ratesync_decisions_total{group_id="jobs",result="denied"} 1
# HELP ratesync_timeouts_total Acquire calls that gave up, by rule.
# TYPE ratesync_timeouts_total counter
ratesync_timeouts_total{engine="memory",group_id="jobs"} 1
# HELP ratesync_leases_in_use Concurrency leases held by this process, by rule.
# TYPE ratesync_leases_in_use gauge
ratesync_leases_in_use{group_id="api"} 0
ratesync_leases_in_use{group_id="jobs"} 1
# HELP ratesync_circuit_breaker_state Circuit breaker of each store: 0 closed, 1 half-open, 2 open (as rate-sync's metric of the same name).
# TYPE ratesync_circuit_breaker_state gauge
ratesync_circuit_breaker_state{store="mem"} 0
`
	if err := testutil.GatherAndCompare(pr, strings.NewReader(expected),
		"ratesync_acquisitions_total", "ratesync_decisions_total", "ratesync_timeouts_total",
		"ratesync_leases_in_use", "ratesync_circuit_breaker_state"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(pr, "ratesync_acquisition_duration_seconds"); n != 1 {
		t.Fatalf("%d wait histograms, want 1 (jobs' Acquire)", n)
	}
	held.Release(ctx)
	if n := testutil.CollectAndCount(pr, "ratesync_store_call_duration_seconds"); n != 2 {
		t.Fatalf("%d store call series, want 2 (mem decide, mem release)", n)
	}
	problems, err := testutil.GatherAndLint(pr)
	if err != nil || len(problems) != 0 {
		t.Fatalf("promlint: %v %v", problems, err)
	}
	w := httptest.NewRecorder()
	ratesyncprom.Handler(pr).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(w.Body)
	if !strings.Contains(string(body), "ratesync_decisions_total") || strings.Contains(string(body), "client-") {
		t.Fatalf("/metrics: identifiers leaked or metrics missing:\n%s", body)
	}
}

func TestNilRegisterer(t *testing.T) {
	if _, err := ratesyncprom.New(nil); err == nil {
		t.Fatal("nil Registerer accepted")
	}
}
