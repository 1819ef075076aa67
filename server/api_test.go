package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/server"
)

const apiConfig = `
[stores.main]
engine = "memory"

[limiters.api]
store = "main"
rate_per_second = 1.0
burst = 2

[limiters.jobs]
store = "main"
max_concurrent = 1
lease_seconds = 30

[limiters.login_ip]
store = "main"
algorithm = "sliding_window"
limit = 5
window_seconds = 60

[limiters.login_account]
store = "main"
algorithm = "sliding_window"
limit = 1
window_seconds = 60
`

func TestAPITry(t *testing.T) {
	e := start(t, apiConfig)
	for i, want := range []bool{true, true, false} {
		resp, m := e.do("POST", "/v1/try", map[string]any{"limiter": "api", "id": "u1"})
		if resp.StatusCode != 200 || m["allowed"] != want {
			t.Fatalf("try %d: %d %v, want allowed %v", i, resp.StatusCode, m, want)
		}
		if got := resp.Header.Get("RateLimit-Policy"); got != `"api";q=2;w=2` {
			t.Errorf("RateLimit-Policy %q", got)
		}
		if !want && (resp.Header.Get("Retry-After") != "1" || m["retry_after_seconds"].(float64) <= 0) {
			t.Errorf("denied try: Retry-After %q, %v", resp.Header.Get("Retry-After"), m)
		}
	}
	if _, m := e.do("POST", "/v1/try", map[string]any{"limiter": "api", "ids": []string{"u", "1"}}); m["allowed"] != true || m["key"] != "api:u:1" {
		t.Errorf("a path of identifiers: %v", m)
	}
	resp, m := e.do("GET", "/v1/state?limiter=api&id=u1", nil)
	if resp.StatusCode != 200 || m["remaining"] != float64(0) || m["allowed"] != false {
		t.Errorf("state: %d %v", resp.StatusCode, m)
	}
	if _, m := e.do("POST", "/v1/try", map[string]any{"limiter": "api", "id": "u2", "cost": 2}); m["allowed"] != true || m["remaining"] != float64(0) {
		t.Errorf("cost 2: %v", m)
	}
}

func TestAPILeases(t *testing.T) {
	e := start(t, apiConfig)
	resp, m := e.do("POST", "/v1/acquire", map[string]any{"limiter": "jobs", "timeout_seconds": 1})
	id, _ := m["lease_id"].(string)
	if resp.StatusCode != 200 || id == "" || m["lease_expires_at"] == nil {
		t.Fatalf("acquire: %d %v", resp.StatusCode, m)
	}
	// The slot is held: a try is denied, an acquire with a short budget times out.
	if _, m := e.do("POST", "/v1/try", map[string]any{"limiter": "jobs"}); m["allowed"] != false {
		t.Errorf("try while held: %v", m)
	}
	resp, m = e.do("POST", "/v1/acquire", map[string]any{"limiter": "jobs", "timeout_seconds": 0.05})
	wantProblem(t, resp, m, 429)
	resp, m = e.do("POST", "/v1/extend", map[string]any{"lease_id": id, "ttl_seconds": 60})
	if resp.StatusCode != 200 || m["lease_expires_at"] == nil {
		t.Errorf("extend: %d %v", resp.StatusCode, m)
	}
	// An acquire waiting for the slot gets it when the lease is released.
	got := make(chan map[string]any, 1)
	go func() {
		_, m := e.do("POST", "/v1/acquire", map[string]any{"limiter": "jobs", "timeout_seconds": 10})
		got <- m
	}()
	waitFor(t, func() bool { l, _ := e.reg.Get("jobs"); return l.Metrics().Waiting == 1 })
	if resp, _ := e.do("POST", "/v1/release", map[string]any{"lease_id": id}); resp.StatusCode != 204 {
		t.Errorf("release: %d", resp.StatusCode)
	}
	select {
	case m := <-got:
		if m["allowed"] != true || m["lease_id"] == "" {
			t.Errorf("waiting acquire: %v", m)
		}
		if resp, _ := e.do("POST", "/v1/release", map[string]any{"lease_id": m["lease_id"]}); resp.StatusCode != 204 {
			t.Errorf("release of the second lease: %d", resp.StatusCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting acquire did not get the released slot")
	}
	resp, m = e.do("POST", "/v1/release", map[string]any{"lease_id": id})
	wantProblem(t, resp, m, 404)
	resp, m = e.do("POST", "/v1/extend", map[string]any{"lease_id": "nope"})
	wantProblem(t, resp, m, 404)
}

// TestAPIAcquireCancelled: a client that leaves while waiting takes no
// slot.
func TestAPIAcquireCancelled(t *testing.T) {
	e := start(t, apiConfig)
	_, m := e.do("POST", "/v1/acquire", map[string]any{"limiter": "jobs"})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.base+"/v1/acquire", strings.NewReader(`{"limiter":"jobs","timeout_seconds":30}`))
	done := make(chan error, 1)
	go func() {
		resp, err := e.hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	l, _ := e.reg.Get("jobs")
	waitFor(t, func() bool { return l.Metrics().Waiting == 1 })
	cancel()
	<-done
	waitFor(t, func() bool { return l.Metrics().Waiting == 0 })
	e.do("POST", "/v1/release", map[string]any{"lease_id": m["lease_id"]})
	if _, m := e.do("POST", "/v1/try", map[string]any{"limiter": "jobs"}); m["allowed"] != true {
		t.Errorf("try after the waiter left and the holder released: %v (the waiter took the slot?)", m)
	} else {
		e.do("POST", "/v1/release", map[string]any{"lease_id": m["lease_id"]})
	}
}

func TestAPIComposite(t *testing.T) {
	e := start(t, apiConfig)
	body := map[string]any{"limiters": map[string]string{"ip": "login_ip", "account": "login_account"}, "ids": map[string]string{"ip": "1.2.3.4", "account": "bob"}}
	if _, m := e.do("POST", "/v1/composite", body); m["allowed"] != true {
		t.Fatalf("first login: %v", m)
	}
	resp, m := e.do("POST", "/v1/composite", body)
	if resp.StatusCode != 200 || m["allowed"] != false || m["triggered_by"] != "account" {
		t.Fatalf("second login: %d %v, want denied by account", resp.StatusCode, m)
	}
	// The denial consumed nothing of the IP's quota: 5 - 1.
	if _, m := e.do("GET", "/v1/state?limiter=login_ip&id=1.2.3.4", nil); m["remaining"] != float64(4) {
		t.Errorf("login_ip remaining %v, want 4", m["remaining"])
	}
	resp, m = e.do("POST", "/v1/composite", map[string]any{"limiters": map[string]string{"ip": "login_ip"}, "ids": map[string]string{"other": "x"}})
	wantProblem(t, resp, m, 400)
}

func TestAPIErrors(t *testing.T) {
	e := start(t, apiConfig, server.WithLimits(server.Limits{MaxBodyBytes: 1024, MaxKeyBytes: 64}))
	cases := []struct {
		name, method, path string
		body               any
		code               int
	}{
		{"unknown limiter", "POST", "/v1/try", map[string]any{"limiter": "nope"}, 404},
		{"no limiter", "POST", "/v1/try", map[string]any{"id": "x"}, 400},
		{"id and ids", "POST", "/v1/try", `{"limiter":"api","id":"a","ids":["b"]}`, 400},
		{"unknown field", "POST", "/v1/try", `{"limiter":"api","cots":2}`, 400},
		{"not JSON", "POST", "/v1/try", `limiter=api`, 400},
		{"two values", "POST", "/v1/try", `{"limiter":"api"}{"limiter":"api"}`, 400},
		{"body too large", "POST", "/v1/try", `{"limiter":"api","id":"` + strings.Repeat("x", 2000) + `"}`, 413},
		{"long identifier", "POST", "/v1/try", map[string]any{"limiter": "api", "id": strings.Repeat("x", 65)}, 400},
		{"too many identifiers", "POST", "/v1/try", map[string]any{"limiter": "api", "ids": make([]string, 17)}, 400},
		{"negative cost", "POST", "/v1/try", map[string]any{"limiter": "api", "cost": -1}, 400},
		{"huge cost", "POST", "/v1/try", map[string]any{"limiter": "api", "cost": 1 << 40}, 400},
		{"cost over capacity", "POST", "/v1/try", map[string]any{"limiter": "api", "cost": 3}, 400},
		{"negative timeout", "POST", "/v1/acquire", map[string]any{"limiter": "api", "timeout_seconds": -1}, 400},
		{"timeout too long", "POST", "/v1/acquire", map[string]any{"limiter": "api", "timeout_seconds": 1e9}, 400},
		{"state of nothing", "GET", "/v1/state", nil, 400},
		{"unknown call", "GET", "/v1/nothing", nil, 404},
		{"wrong method", "GET", "/v1/try", nil, 405},
		{"admin off", "POST", "/v1/admin/reset", map[string]any{"limiter": "api"}, 404},
		{"RLS JSON, bad", "POST", "/json", `{"domain": 3}`, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, m := e.do(c.method, c.path, c.body)
			wantProblem(t, resp, m, c.code)
		})
	}
}

func TestAPIAdmin(t *testing.T) {
	e := start(t, apiConfig, server.WithAdminToken("s3cret"))
	e.do("POST", "/v1/try", map[string]any{"limiter": "api", "id": "u1"})
	e.do("POST", "/v1/try", map[string]any{"limiter": "api", "id": "u1"})
	for _, auth := range []string{"", "Bearer wrong", "Basic s3cret", "Bearer s3cret2", "bearer s3cret"} {
		resp, m := e.do("POST", "/v1/admin/reset", map[string]any{"limiter": "api", "id": "u1"}, "Authorization", auth)
		wantProblem(t, resp, m, 401)
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	}
	if _, m := e.do("GET", "/v1/state?limiter=api&id=u1", nil); m["remaining"] != float64(0) {
		t.Fatalf("a refused reset reset: %v", m)
	}
	if resp, _ := e.do("POST", "/v1/admin/reset", map[string]any{"limiter": "api", "id": "u1"}, "Authorization", "Bearer s3cret"); resp.StatusCode != 204 {
		t.Errorf("reset: %d", resp.StatusCode)
	}
	if _, m := e.do("GET", "/v1/state?limiter=api&id=u1", nil); m["remaining"] != float64(2) {
		t.Errorf("after reset: %v, want 2 remaining", m)
	}
}

// TestReload: a reload keeps the state of unchanged limiters, adds the new
// [rls] domains, and a bad file changes nothing.
func TestReload(t *testing.T) {
	e := start(t, rlsConfig, server.WithAdminToken("tok"))
	for range 3 {
		e.mustShould("edge", desc("remote_address", "10.0.0.1"))
	}
	next := rlsConfig + "\n[limiters.per_user]\nstore = \"main\"\nrate_per_second = 1.0\n\n[[rls.users]]\nkey = \"user\"\nlimiter = \"per_user\"\n"
	if err := os.WriteFile(e.file, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, m := e.do("POST", "/v1/admin/reload", nil, "Authorization", "Bearer tok")
	if resp.StatusCode != 200 {
		t.Fatalf("reload: %d %v", resp.StatusCode, m)
	}
	if r := e.mustShould("edge", desc("remote_address", "10.0.0.1")); r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("after reload: %v, want OVER_LIMIT (the state kept)", r)
	}
	if r := e.mustShould("users", desc("user", "ann")); r.GetStatuses()[0].GetCurrentLimit().GetName() != "per_user" {
		t.Errorf("the new domain: %v", r)
	}
	// A bad [rls] table is refused before anything is applied.
	bad := next + "\n[limiters.later]\nstore = \"main\"\nrate_per_second = 5.0\n\n[[rls.broken]]\nkey = \"k\"\nlimiter = \"missing\"\n"
	os.WriteFile(e.file, []byte(bad), 0o600)
	resp, m = e.do("POST", "/v1/admin/reload", nil, "Authorization", "Bearer tok")
	wantProblem(t, resp, m, 422)
	if _, err := e.reg.Get("later"); err == nil {
		t.Errorf("a refused reload applied its limiters")
	}
	// A reload that bypasses the server (Registry.LoadConfig, WatchConfig)
	// with a bad [rls] table keeps the table in use.
	if err := e.reg.LoadConfig(e.file); err != nil {
		t.Fatal(err)
	}
	if r := e.mustShould("users", desc("user", "bob")); r.GetStatuses()[0].GetCurrentLimit().GetName() != "per_user" {
		t.Errorf("after a bad [rls] applied directly: %v, want the previous table", r)
	}
	if err := e.srv.Reload(); err == nil {
		t.Errorf("Reload of a bad file: no error")
	}
}

// TestGracefulShutdown: requests in flight when Serve's context ends are
// answered before Serve returns; new ones are refused.
func TestGracefulShutdown(t *testing.T) {
	reg := ratesync.NewRegistry()
	fs := newFaultStore()
	defer fs.Close()
	if err := reg.AddStore("slow", fs, ratesync.WithCallTimeout(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	reg.ConfigureLimiter("per_ip", ratesync.Rule{Store: "slow", RatePerSecond: 1, Burst: 5})
	cfg, _ := ratesync.ParseConfig("rls.toml", []byte("[[rls.edge]]\nkey = \"remote_address\"\nlimiter = \"per_ip\"\n"))
	if err := reg.ApplyConfig(cfg); err != nil {
		t.Fatal(err)
	}
	e := startReg(t, reg, "")
	block := make(chan struct{})
	fs.set(false, block)
	type answer struct {
		code int
		err  error
	}
	httpDone := make(chan answer, 1)
	go func() {
		resp, err := e.hc.Post(e.base+"/v1/try", "application/json", strings.NewReader(`{"limiter":"per_ip","id":"a"}`))
		if err != nil {
			httpDone <- answer{0, err}
			return
		}
		resp.Body.Close()
		httpDone <- answer{resp.StatusCode, nil}
	}()
	grpcDone := make(chan error, 1)
	go func() {
		r, err := e.should("edge", desc("remote_address", "b"))
		if err == nil && r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			err = errFromResp(r)
		}
		grpcDone <- err
	}()
	<-fs.entered
	<-fs.entered
	e.cancel()
	select {
	case err := <-e.done:
		t.Fatalf("Serve returned (%v) with requests in flight", err)
	case <-time.After(200 * time.Millisecond): // a bounded look for an early return, not synchronisation
	}
	close(block)
	if a := <-httpDone; a.err != nil || a.code != 200 {
		t.Errorf("HTTP request in flight: %d %v, want 200", a.code, a.err)
	}
	if err := <-grpcDone; err != nil {
		t.Errorf("gRPC request in flight: %v", err)
	}
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		e.done <- nil // for stop
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the requests in flight finished")
	}
	if _, err := http.Get(e.base + "/healthz"); err == nil {
		t.Errorf("a new request after shutdown was served")
	}
}

type respError struct{ r *rlsv3.RateLimitResponse }

func (e respError) Error() string { return "answer " + e.r.String() }

func errFromResp(r *rlsv3.RateLimitResponse) error { return respError{r} }

func TestOperations(t *testing.T) {
	e := start(t, rlsConfig)
	e.mustShould("edge", desc("remote_address", "10.0.0.1"))
	resp, _ := e.do("GET", "/metrics", nil)
	if resp.StatusCode != 200 {
		t.Errorf("/metrics: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", e.base+"/metrics", nil)
	r, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 1<<16)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	r.Body.Close()
	if !strings.Contains(b.String(), `ratesync_acquisitions_total{engine="memory",group_id="per_ip"} 1`) {
		t.Errorf("/metrics lacks per_ip's admission:\n%.2000s", b.String())
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if resp, m := e.do("GET", p, nil); resp.StatusCode != 200 {
			t.Errorf("%s: %d %v", p, resp.StatusCode, m)
		}
	}
	resp, m := e.do("GET", "/openapi.json", nil)
	if resp.StatusCode != 200 || m["openapi"] != "3.1.0" {
		t.Errorf("/openapi.json: %d %v", resp.StatusCode, m["openapi"])
	}
	paths, _ := m["paths"].(map[string]any)
	for _, p := range []string{"/v1/try", "/v1/acquire", "/v1/release", "/v1/extend", "/v1/state", "/v1/composite", "/v1/admin/reset", "/v1/admin/reload"} {
		if paths[p] == nil {
			t.Errorf("/openapi.json has no %s", p)
		}
	}
	// envoyproxy/ratelimit's /json.
	body, _ := json.Marshal(map[string]any{"domain": "edge", "descriptors": []any{map[string]any{"entries": []any{map[string]string{"key": "remote_address", "value": "10.9.9.9"}}}}})
	resp, m = e.do("POST", "/json", body)
	if resp.StatusCode != 200 || m["overallCode"] != "OK" {
		t.Errorf("/json: %d %v", resp.StatusCode, m)
	}
}

func TestExampleConfig(t *testing.T) {
	cfg, err := ratesync.ParseConfig("example.toml", server.ExampleConfig())
	if err != nil {
		t.Fatal(err)
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := reg.ApplyConfig(cfg); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r, err := srv.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("remote_address", "1.2.3.4")}})
	if err != nil || r.GetStatuses()[0].GetCurrentLimit().GetName() != "per_ip" {
		t.Errorf("example edge: %v %v", r, err)
	}
}

// waitFor polls cond (a state another goroutine reaches) for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
