package server_test

import (
	"net/http"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/rate-sync/ratesync-go/server"
)

// headersConfig has the rules whose RateLimit fields the tests below pin:
// a rate rule with max_concurrent, a concurrency-only rule, and a window
// longer than a day.
const headersConfig = `
[stores.main]
engine = "memory"

[limiters.mixed]
store = "main"
rate_per_second = 1.0
burst = 2
max_concurrent = 5
lease_seconds = 30

[limiters.tight]
store = "main"
rate_per_second = 1.0
burst = 2
max_concurrent = 1
lease_seconds = 30

[limiters.jobs]
store = "main"
max_concurrent = 1
lease_seconds = 30

[limiters.weekly]
store = "main"
algorithm = "sliding_window"
limit = 1
window_seconds = 604800

[[rls.edge]]
key = "account"
limiter = "weekly"
`

// pinned are the headers a response must have; "" means absent.
type pinned map[string]string

func checkHeaders(t *testing.T, what string, h http.Header, want pinned) {
	t.Helper()
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %s %q, want %q", what, k, got, v)
		}
	}
}

// TestAPIHeadersMaxConcurrent: the HTTP API advertises the rate quota of a
// rule with max_concurrent (not its concurrency quota), and no RateLimit
// fields for a concurrency denial or a concurrency-only rule.
func TestAPIHeadersMaxConcurrent(t *testing.T) {
	e := start(t, headersConfig, server.WithLegacyHeaders())
	resp, m := e.do("POST", "/v1/try", map[string]any{"limiter": "mixed", "id": "a"})
	lease, _ := m["lease_id"].(string)
	if m["allowed"] != true || lease == "" {
		t.Fatalf("first try: %v", m)
	}
	// The rate binds (1 of 2 left, 4 of 5 slots): its quota alone is
	// advertised, and t is the decision's reset, the lease's 30 s.
	checkHeaders(t, "allowed", resp.Header, pinned{"RateLimit-Policy": `"mixed";q=2;w=2`, "RateLimit": `"mixed";r=1;t=30`,
		"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "30", "Retry-After": ""})
	resp, m = e.do("POST", "/v1/try", map[string]any{"limiter": "tight", "id": "a"})
	tight, _ := m["lease_id"].(string)
	if m["allowed"] != true || tight == "" || m["concurrency"] != true {
		t.Fatalf("tight, first try: %v", m)
	}
	checkHeaders(t, "concurrency binds", resp.Header, pinned{"RateLimit-Policy": "", "RateLimit": "", "X-RateLimit-Limit": "", "Retry-After": ""})
	resp, m = e.do("POST", "/v1/try", map[string]any{"limiter": "tight", "id": "a"})
	if m["allowed"] != false || m["concurrency"] != true {
		t.Fatalf("tight, second try, the slot held: %v", m)
	}
	checkHeaders(t, "concurrency denial", resp.Header, pinned{"RateLimit-Policy": "", "RateLimit": "", "X-RateLimit-Limit": "", "Retry-After": "30"})
	for _, id := range []string{lease, tight} {
		if resp, _ := e.do("POST", "/v1/release", map[string]any{"lease_id": id}); resp.StatusCode != http.StatusNoContent {
			t.Errorf("release: %d", resp.StatusCode)
		}
	}
	resp, m = e.do("POST", "/v1/try", map[string]any{"limiter": "jobs"})
	if m["allowed"] != true {
		t.Fatalf("jobs: %v", m)
	}
	checkHeaders(t, "concurrency-only rule", resp.Header, pinned{"RateLimit-Policy": "", "RateLimit": "", "X-RateLimit-Limit": ""})
}

// TestHeadersLongWindow: a retry longer than a day is reported as is, in
// the API's and the RLS's Retry-After and RateLimit t.
func TestHeadersLongWindow(t *testing.T) {
	e := start(t, headersConfig, server.WithLegacyHeaders())
	resp, m := e.do("POST", "/v1/try", map[string]any{"limiter": "weekly", "id": "a"})
	if m["allowed"] != true {
		t.Fatalf("first try: %v", m)
	}
	checkHeaders(t, "allowed", resp.Header, pinned{"RateLimit-Policy": `"weekly";q=1;w=604800`, "RateLimit": `"weekly";r=0;t=604800`, "X-RateLimit-Reset": "604800"})
	resp, m = e.do("POST", "/v1/try", map[string]any{"limiter": "weekly", "id": "a"})
	if m["allowed"] != false {
		t.Fatalf("second try: %v", m)
	}
	checkHeaders(t, "denied", resp.Header, pinned{"RateLimit": `"weekly";r=0;t=604800`, "Retry-After": "604800", "X-RateLimit-Reset": "604800"})

	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		r := e.mustShould("edge", desc("account", "b"))
		if r.GetOverallCode() != want {
			t.Fatalf("rls %d: %v, want %v", i, r, want)
		}
		cl := r.GetStatuses()[0].GetCurrentLimit()
		if cl.GetUnit() != rlsv3.RateLimitResponse_RateLimit_DAY || cl.GetUnitMultiplier().GetValue() != 7 || cl.GetRequestsPerUnit() != 1 {
			t.Errorf("rls %d: current_limit %v, want 1 per 7 DAY", i, cl)
		}
		for k, v := range map[string]string{"RateLimit-Policy": `"weekly";q=1;w=604800`, "RateLimit": `"weekly";r=0;t=604800`, "X-RateLimit-Reset": "604800"} {
			if got := header(r, k); got != v {
				t.Errorf("rls %d: %s %q, want %q", i, k, got, v)
			}
		}
		if got, w := header(r, "Retry-After"), map[bool]string{true: "604800", false: ""}[i == 1]; got != w {
			t.Errorf("rls %d: Retry-After %q, want %q", i, got, w)
		}
	}
}
