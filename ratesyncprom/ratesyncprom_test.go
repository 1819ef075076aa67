package ratesyncprom_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/ratesyncprom"
)

var ctx = context.Background()

func setup(t *testing.T) (*prometheus.Registry, *ratesync.Registry) {
	t.Helper()
	pr := prometheus.NewRegistry()
	reg := ratesync.NewRegistry()
	t.Cleanup(func() { reg.Close() })
	if err := ratesyncprom.Register(pr, reg); err != nil {
		t.Fatal(err)
	}
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 2})
	reg.ConfigureLimiter("jobs", ratesync.Rule{Store: "mem", MaxConcurrent: 1, Timeout: 20 * time.Millisecond})
	return pr, reg
}

// remote is a memory store seen through the driver.Store interface only,
// so that the registry calls it as a network store (with per-call stats).
type remote struct{ driver.Store }

func TestMetrics(t *testing.T) {
	pr, reg := setup(t)
	mem := memstore.New()
	defer mem.Close()
	reg.AddStore("net", remote{mem})
	reg.ConfigureLimiter("remote", ratesync.Rule{Store: "net", MaxConcurrent: 2})
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
	rl, _ := reg.Get("remote")
	for range 3 {
		d, err := rl.Try(ctx)
		if err != nil || !d.Allowed && d.Remaining != 0 {
			t.Fatalf("remote: %+v %v", d, err)
		}
		d.Lease.Release(ctx)
	}
	expected := `
# HELP ratesync_acquisitions_total Requests admitted, by rule (as rate-sync's metric of the same name).
# TYPE ratesync_acquisitions_total counter
ratesync_acquisitions_total{engine="memory",group_id="api"} 200
ratesync_acquisitions_total{engine="memory",group_id="jobs"} 1
ratesync_acquisitions_total{engine="ratesyncprom_test.remote",group_id="remote"} 3
# HELP ratesync_decisions_total Requests by rule and result: allowed (admitted), denied (Try and composite checks this rule denied), timeout (Acquire gave up).
# TYPE ratesync_decisions_total counter
ratesync_decisions_total{group_id="api",result="allowed"} 200
ratesync_decisions_total{group_id="api",result="denied"} 100
ratesync_decisions_total{group_id="api",result="timeout"} 0
ratesync_decisions_total{group_id="jobs",result="allowed"} 1
ratesync_decisions_total{group_id="jobs",result="denied"} 0
ratesync_decisions_total{group_id="jobs",result="timeout"} 1
ratesync_decisions_total{group_id="remote",result="allowed"} 3
ratesync_decisions_total{group_id="remote",result="denied"} 0
ratesync_decisions_total{group_id="remote",result="timeout"} 0
# HELP ratesync_timeouts_total Acquire calls that gave up, by rule.
# TYPE ratesync_timeouts_total counter
ratesync_timeouts_total{engine="memory",group_id="api"} 0
ratesync_timeouts_total{engine="memory",group_id="jobs"} 1
ratesync_timeouts_total{engine="ratesyncprom_test.remote",group_id="remote"} 0
# HELP ratesync_leases_in_use Concurrency leases held by this process, by rule.
# TYPE ratesync_leases_in_use gauge
ratesync_leases_in_use{group_id="api"} 0
ratesync_leases_in_use{group_id="jobs"} 1
ratesync_leases_in_use{group_id="remote"} 0
# HELP ratesync_circuit_breaker_state Circuit breaker of each store: 0 closed, 1 half-open, 2 open (as rate-sync's metric of the same name).
# TYPE ratesync_circuit_breaker_state gauge
ratesync_circuit_breaker_state{store="mem"} 0
ratesync_circuit_breaker_state{store="net"} 0
`
	if err := testutil.GatherAndCompare(pr, strings.NewReader(expected),
		"ratesync_acquisitions_total", "ratesync_decisions_total", "ratesync_timeouts_total",
		"ratesync_leases_in_use", "ratesync_circuit_breaker_state"); err != nil {
		t.Fatal(err)
	}
	// Every admission is in the wait histogram: Try's as zero waits.
	mfs, err := pr.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "ratesync_acquisition_duration_seconds":
			for _, m := range mf.GetMetric() {
				counts[m.GetLabel()[1].GetValue()] = m.GetHistogram().GetSampleCount()
			}
		case "ratesync_store_call_duration_seconds":
			for _, m := range mf.GetMetric() {
				counts[m.GetLabel()[1].GetValue()+"/"+m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	for k, want := range map[string]uint64{"api": 200, "jobs": 1, "remote": 3, "net/decide": 3, "net/release": 3} {
		if counts[k] != want {
			t.Errorf("histogram %s: %d samples, want %d (all: %v)", k, counts[k], want, counts)
		}
	}
	if _, ok := counts["mem/decide"]; ok {
		t.Error("store call latency of an in-process store: it is never called over a network")
	}
	held.Release(ctx)
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

// The metrics cost the decisions nothing: Try keeps its in-process path,
// which allocates nothing.
func TestMetricsKeepTheFastPath(t *testing.T) {
	_, reg := setup(t)
	api, _ := reg.Get("api")
	if n := testing.AllocsPerRun(1000, func() { api.For("client").Try(ctx) }); n != 0 {
		t.Fatalf("Try with metrics registered: %v allocations, want 0", n)
	}
}

// With no registry, the package functions' registry is collected.
func TestDefaultRegistry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rate-sync.toml")
	os.WriteFile(path, []byte("[stores.main]\nengine = \"memory\"\n[limiters.api]\nstore = \"main\"\nrate_per_second = 1.0\n"), 0o600)
	if err := ratesync.LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	pr := prometheus.NewRegistry()
	if err := ratesyncprom.Register(pr); err != nil {
		t.Fatal(err)
	}
	ratesync.Try(ctx, "api")
	ratesync.Try(ctx, "api")
	expected := `
# HELP ratesync_decisions_total Requests by rule and result: allowed (admitted), denied (Try and composite checks this rule denied), timeout (Acquire gave up).
# TYPE ratesync_decisions_total counter
ratesync_decisions_total{group_id="api",result="allowed"} 1
ratesync_decisions_total{group_id="api",result="denied"} 1
ratesync_decisions_total{group_id="api",result="timeout"} 0
`
	if err := testutil.GatherAndCompare(pr, strings.NewReader(expected), "ratesync_decisions_total"); err != nil {
		t.Fatal(err)
	}
}

func TestNilRegisterer(t *testing.T) {
	if err := ratesyncprom.Register(nil); err == nil {
		t.Fatal("nil Registerer accepted")
	}
}

func TestShadowAndReloadMetrics(t *testing.T) {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	cfg, err := ratesync.ParseConfig("t.toml", []byte("[stores.m]\nengine = \"memory\"\n[limiters.audit]\nstore = \"m\"\nlimit = 1\nwindow_seconds = 60\nshadow = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	bad, _ := ratesync.ParseConfig("t.toml", []byte("[limiters.audit]\nstore = \"gone\"\nrate_per_second = 1\n"))
	if reg.Reload(bad) == nil {
		t.Fatal("a config naming an undefined store was accepted")
	}
	for range 3 {
		if d, err := reg.Try(context.Background(), "audit"); err != nil || !d.Allowed {
			t.Fatalf("shadow rule: %+v %v", d, err)
		}
	}
	pr := prometheus.NewRegistry()
	if err := ratesyncprom.Register(pr, reg); err != nil {
		t.Fatal(err)
	}
	expected := `
# HELP ratesync_config_reloads_total Configuration reloads (Registry.Reload, WatchConfig), by result: success, or failure (the file was rejected and nothing changed).
# TYPE ratesync_config_reloads_total counter
ratesync_config_reloads_total{result="failure"} 1
ratesync_config_reloads_total{result="success"} 1
# HELP ratesync_shadow_denials_total Requests a shadow rule (shadow = true) would have denied and admitted anyway; ratesync_decisions_total counts them as denied.
# TYPE ratesync_shadow_denials_total counter
ratesync_shadow_denials_total{group_id="audit"} 2
`
	if err := testutil.GatherAndCompare(pr, strings.NewReader(expected), "ratesync_config_reloads_total", "ratesync_shadow_denials_total"); err != nil {
		t.Fatal(err)
	}
}
