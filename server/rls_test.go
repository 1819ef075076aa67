package server_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/server"
)

const rlsConfig = `
[stores.main]
engine = "memory"

[limiters.per_ip]
store = "main"
rate_per_second = 1.0
burst = 3

[limiters.per_key]
store = "main"
algorithm = "sliding_window"
limit = 1
window_seconds = 60

[limiters.marketing]
store = "main"
algorithm = "sliding_window"
limit = 2
window_seconds = 86400

[limiters.shadowed]
store = "main"
rate_per_second = 1.0
burst = 1
shadow = true

[[rls.edge]]
key = "remote_address"
limiter = "per_ip"

[[rls.edge]]
key = "remote_address"
value = "50.0.0.5"
deny = true

[[rls.edge]]
key = "api_key"
limiter = "per_key"

[[rls.edge]]
key = "internal"
unlimited = true

[[rls.edge]]
key = "shadow"
limiter = "shadowed"

[[rls.messaging]]
key = "message_type"
value = "marketing"
  [[rls.messaging.descriptors]]
  key = "to_number"
  limiter = "marketing"
`

func header(r *rlsv3.RateLimitResponse, name string) string {
	for _, h := range r.GetResponseHeadersToAdd() {
		if strings.EqualFold(h.GetKey(), name) {
			return h.GetValue()
		}
	}
	return ""
}

func TestRLSStatusesAndHeaders(t *testing.T) {
	e := start(t, rlsConfig, server.WithLegacyHeaders())
	for i := range 3 {
		r := e.mustShould("edge", desc("remote_address", "10.0.0.1"))
		st := r.GetStatuses()[0]
		if r.GetOverallCode() != rlsv3.RateLimitResponse_OK || st.GetCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("request %d: %v, want OK", i, r)
		}
		if got, want := st.GetLimitRemaining(), uint32(2-i); got != want {
			t.Errorf("request %d: limit_remaining %d, want %d", i, got, want)
		}
		// burst 3 at 1/s: 3 per 3 seconds.
		cl := st.GetCurrentLimit()
		if cl.GetName() != "per_ip" || cl.GetRequestsPerUnit() != 3 || cl.GetUnit() != rlsv3.RateLimitResponse_RateLimit_SECOND || cl.GetUnitMultiplier().GetValue() != 3 {
			t.Errorf("current_limit %v, want per_ip 3 per 3 SECOND", cl)
		}
		if got := header(r, "RateLimit-Policy"); got != `"per_ip";q=3;w=3` {
			t.Errorf("RateLimit-Policy %q", got)
		}
		if got, want := header(r, "X-RateLimit-Remaining"), []string{"2", "1", "0"}[i]; got != want {
			t.Errorf("X-RateLimit-Remaining %q, want %q", got, want)
		}
	}
	r := e.mustShould("edge", desc("remote_address", "10.0.0.1"))
	st := r.GetStatuses()[0]
	if r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || st.GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("4th request: %v, want OVER_LIMIT", r)
	}
	if d := st.GetDurationUntilReset().AsDuration(); d <= 0 || d > time.Second {
		t.Errorf("duration_until_reset %v, want (0, 1s]", d)
	}
	if got := header(r, "RateLimit"); got != `"per_ip";r=0;t=1` {
		t.Errorf("RateLimit %q, want \"per_ip\";r=0;t=1", got)
	}
	if got := header(r, "Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	// Another address has its own state; the blocked one is denied without a limiter.
	if r := e.mustShould("edge", desc("remote_address", "10.0.0.2")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("another address: %v", r)
	}
	if r := e.mustShould("edge", desc("remote_address", "50.0.0.5")); r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("denied address: %v", r)
	}
	// Unlimited, unknown key, unknown domain and too many entries: OK.
	r = e.mustShould("edge", desc("internal", "x"), desc("nothing", "x"), desc("remote_address", "10.0.0.9", "extra", "y"))
	if r.GetOverallCode() != rlsv3.RateLimitResponse_OK || r.GetStatuses()[0].GetLimitRemaining() != math.MaxUint32 || r.GetStatuses()[1].GetCurrentLimit() != nil {
		t.Errorf("unlimited and unmatched: %v", r)
	}
	if r := e.mustShould("no_such_domain", desc("remote_address", "10.0.0.1")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("unknown domain: %v", r)
	}
	// The identifier is the value: the state is visible under the limiter.
	l, _ := e.reg.For("per_ip", "10.0.0.1")
	if st, err := l.State(context.Background()); err != nil || st.Remaining != 0 {
		t.Errorf("state of per_ip 10.0.0.1: %+v %v, want 0 remaining", st, err)
	}
}

func TestRLSNested(t *testing.T) {
	e := start(t, rlsConfig)
	msg := func(num string) *ratelimitv3.RateLimitDescriptor {
		return desc("message_type", "marketing", "to_number", num)
	}
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		r := e.mustShould("messaging", msg("2061111111"))
		if r.GetOverallCode() != want {
			t.Fatalf("message %d: %v, want %v", i, r, want)
		}
		if cl := r.GetStatuses()[0].GetCurrentLimit(); cl.GetRequestsPerUnit() != 2 || cl.GetUnit() != rlsv3.RateLimitResponse_RateLimit_DAY {
			t.Errorf("current_limit %v, want 2 per DAY", cl)
		}
	}
	if r := e.mustShould("messaging", msg("2062222222")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Errorf("another number: %v", r)
	}
	// Another message type, or the number alone, matches nothing.
	if r := e.mustShould("messaging", desc("message_type", "transactional", "to_number", "2061111111"), desc("to_number", "2061111111")); r.GetOverallCode() != rlsv3.RateLimitResponse_OK || r.GetStatuses()[0].GetCurrentLimit() != nil {
		t.Errorf("unmatched: %v", r)
	}
}

// TestRLSAllOrNothing: a request whose descriptors match two limiters is
// denied as a whole when one denies, and the other consumes nothing.
func TestRLSAllOrNothing(t *testing.T) {
	e := start(t, rlsConfig)
	ip, key := desc("remote_address", "10.1.1.1"), desc("api_key", "k1")
	r := e.mustShould("edge", ip, key)
	if r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("first: %v", r)
	}
	for i := range 5 {
		r = e.mustShould("edge", ip, key)
		if r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("request %d: %v, want OVER_LIMIT", i, r)
		}
		if c := r.GetStatuses()[1].GetCode(); c != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Errorf("api_key status %v, want OVER_LIMIT", c)
		}
		if c := r.GetStatuses()[0].GetCode(); c != rlsv3.RateLimitResponse_OK {
			t.Errorf("remote_address status %v, want OK (it would pass; it was not consumed)", c)
		}
		if got := r.GetStatuses()[0].GetLimitRemaining(); got != 2 {
			t.Errorf("remote_address remaining %d, want 2", got)
		}
	}
	l, _ := e.reg.For("per_ip", "10.1.1.1")
	if st, err := l.State(context.Background()); err != nil || st.Remaining < 2 {
		t.Errorf("per_ip after 5 denied requests: %+v %v, want 2 remaining (nothing consumed)", st, err)
	}
	if got := header(r, "RateLimit-Policy"); got != `"per_ip";q=3;w=3, "per_key";q=1;w=60` {
		t.Errorf("RateLimit-Policy %q", got)
	}
	if got := header(r, "RateLimit"); !strings.HasPrefix(got, `"per_key";r=0;t=`) {
		t.Errorf("RateLimit %q: want the binding per_key", got)
	}
}

// hits_addend on a request that matches several limiters takes that cost
// from each, all or nothing.
func TestRLSCostAcrossLimiters(t *testing.T) {
	e := start(t, rlsConfig)
	ctx := context.Background()
	ip, key := desc("remote_address", "10.2.2.2"), desc("api_key", "k2")
	// per_key holds 1 unit: a cost of 2 can never pass, and takes nothing.
	r, err := e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 2, Descriptors: []*ratelimitv3.RateLimitDescriptor{ip, key}})
	if err != nil || r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("cost 2 with per_key's capacity 1: %v %v, want OVER_LIMIT", r, err)
	}
	ip2 := desc("remote_address", "10.2.2.3")
	start := time.Now()
	r, err = e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 2, Descriptors: []*ratelimitv3.RateLimitDescriptor{ip, ip2}})
	if err != nil || r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("cost 2 on two addresses: %v %v, want OK", r, err)
	}
	for _, a := range []string{"10.2.2.2", "10.2.2.3"} {
		l, _ := e.reg.For("per_ip", a)
		// 3 - 2, plus what refilled at 1/s since.
		if st, _ := l.State(ctx); st.Remaining < 1 || st.Remaining > 1+int(time.Since(start).Seconds()) {
			t.Errorf("per_ip %s has %d left, want 1 (3 - 2)", a, st.Remaining)
		}
	}
	// Different costs for two limiters cannot be decided together.
	d1, d2 := desc("remote_address", "10.2.2.4"), desc("remote_address", "10.2.2.5")
	d1.HitsAddend = wrapperspb.UInt64(1)
	d2.HitsAddend = wrapperspb.UInt64(2)
	if _, err := e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{d1, d2}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("two costs: %v, want InvalidArgument", err)
	}
}

func TestRLSHostileInput(t *testing.T) {
	e := start(t, rlsConfig)
	many := make([]*ratelimitv3.RateLimitDescriptor, server.DefaultLimits.MaxDescriptors+1)
	for i := range many {
		many[i] = desc("remote_address", "10.0.0.1")
	}
	deep := &ratelimitv3.RateLimitDescriptor{}
	for range server.DefaultLimits.MaxEntries + 1 {
		deep.Entries = append(deep.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: "k", Value: "v"})
	}
	long := strings.Repeat("x", server.DefaultLimits.MaxKeyBytes+1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cases := []struct {
		name string
		req  *rlsv3.RateLimitRequest
	}{
		{"no domain", &rlsv3.RateLimitRequest{Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("a", "b")}}},
		{"no descriptors", &rlsv3.RateLimitRequest{Domain: "edge"}},
		{"too many descriptors", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: many}},
		{"too many entries", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{deep}}},
		{"empty descriptor", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{}}}},
		{"long value", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("remote_address", long)}}},
		{"long key", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(long, "v")}}},
		{"long domain", &rlsv3.RateLimitRequest{Domain: long, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("a", "b")}}},
		{"hits_addend 2^32-1", &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: math.MaxUint32, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("remote_address", "10.0.0.1")}}},
		{"descriptor hits_addend 2^64-1", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: desc("remote_address", "10.0.0.1").Entries, HitsAddend: wrapperspb.UInt64(math.MaxUint64)}}}},
		{"negative hits", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: desc("remote_address", "10.0.0.1").Entries, IsNegativeHits: true}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.rls.ShouldRateLimit(ctx, c.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("error %v, want InvalidArgument", err)
			}
		})
	}
	// Nothing was consumed by the refused requests.
	l, _ := e.reg.For("per_ip", "10.0.0.1")
	if st, _ := l.State(ctx); st.Remaining != 3 {
		t.Errorf("per_ip 10.0.0.1 remaining %d after refused requests, want 3", st.Remaining)
	}

	// A cost within the server's bound but beyond the limiter's capacity
	// is over the limit, and consumes nothing.
	r, err := e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 4, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("remote_address", "10.0.0.1")}})
	if err != nil || r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("hits_addend 4 on a burst of 3: %v %v, want OVER_LIMIT", r, err)
	}
	// hits_addend 3 takes the whole burst at once; 0 means 1.
	r, err = e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 3, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("remote_address", "10.0.0.1")}})
	if err != nil || r.GetOverallCode() != rlsv3.RateLimitResponse_OK || r.GetStatuses()[0].GetLimitRemaining() != 0 {
		t.Errorf("hits_addend 3 on a burst of 3: %v %v, want OK with 0 remaining", r, err)
	}
	// NUL bytes and separators are identifiers like any other: apart.
	for _, v := range []string{"a\x00b", "a", "a:b", "a%3Ab"} {
		if r := e.mustShould("edge", desc("api_key", v)); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Errorf("first request for %q: %v (shares state with another value?)", v, r)
		}
	}
	if r := e.mustShould("edge", desc("api_key", "a\x00b")); r.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("second request for a NUL value: %v, want OVER_LIMIT", r)
	}
	// Invalid UTF-8 never reaches the service (gRPC refuses it).
	_, err = e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("api_key", "\xff\xfe")}})
	if err == nil {
		t.Errorf("invalid UTF-8: no error")
	}
}

func TestRLSShadow(t *testing.T) {
	e := start(t, rlsConfig)
	for i := range 3 {
		r := e.mustShould("edge", desc("shadow", "10.0.0.1"))
		if r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			t.Fatalf("request %d to a shadow rule: %v, want OK", i, r)
		}
	}
	l, _ := e.reg.Get("shadowed")
	if m := l.Metrics(); m.ShadowDenials != 2 {
		t.Errorf("ShadowDenials %d, want 2 (burst 1, 3 requests)", m.ShadowDenials)
	}
}

// TestRLSStoreFault: a store that cannot decide answers by each rule's
// failure policy: deny is Unavailable, local decides in process.
func TestRLSStoreFault(t *testing.T) {
	for _, c := range []struct {
		policy ratesync.FailurePolicy
		want   codes.Code
	}{{ratesync.Deny, codes.Unavailable}, {ratesync.Local, codes.OK}, {ratesync.Allow, codes.OK}} {
		t.Run(string(c.policy), func(t *testing.T) {
			reg := ratesync.NewRegistry()
			fs := newFaultStore()
			defer fs.Close()
			if err := reg.AddStore("flaky", fs, ratesync.WithCallTimeout(time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := reg.ConfigureLimiter("per_ip", ratesync.Rule{Store: "flaky", RatePerSecond: 1, Burst: 2, OnStoreError: c.policy}); err != nil {
				t.Fatal(err)
			}
			cfg, err := ratesync.ParseConfig("rls.toml", []byte("[[rls.edge]]\nkey = \"remote_address\"\nlimiter = \"per_ip\"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if err := reg.ApplyConfig(cfg); err != nil {
				t.Fatal(err)
			}
			e := startReg(t, reg, "")
			fs.set(true, nil)
			r, err := e.should("edge", desc("remote_address", "10.0.0.1"))
			if status.Code(err) != c.want {
				t.Fatalf("store down, on_store_error %s: %v %v, want %v", c.policy, r, err, c.want)
			}
			if c.want == codes.OK && r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
				t.Errorf("store down, on_store_error %s: %v, want OK", c.policy, r)
			}
			resp, m := e.do("GET", "/readyz", nil)
			if resp.StatusCode != 503 || m["ready"] != false {
				t.Errorf("/readyz with the store down: %d %v, want 503", resp.StatusCode, m)
			}
			fs.set(false, nil)
			if resp, m := e.do("GET", "/readyz", nil); resp.StatusCode != 200 {
				t.Errorf("/readyz with the store back: %d %v", resp.StatusCode, m)
			}
		})
	}
}

// TestRLSCancellingClient: a caller that leaves while the store decides
// gets Canceled, and the server's call ends with it.
func TestRLSCancellingClient(t *testing.T) {
	reg := ratesync.NewRegistry()
	fs := newFaultStore()
	defer fs.Close()
	if err := reg.AddStore("slow", fs, ratesync.WithCallTimeout(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := reg.ConfigureLimiter("per_ip", ratesync.Rule{Store: "slow", RatePerSecond: 1, Burst: 2, OnStoreError: ratesync.Deny}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := ratesync.ParseConfig("rls.toml", []byte("[[rls.edge]]\nkey = \"remote_address\"\nlimiter = \"per_ip\"\n"))
	if err := reg.ApplyConfig(cfg); err != nil {
		t.Fatal(err)
	}
	e := startReg(t, reg, "")
	block := make(chan struct{})
	defer close(block)
	fs.set(false, block)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("remote_address", "10.0.0.1")}})
		errc <- err
	}()
	<-fs.entered
	cancel()
	select {
	case err := <-errc:
		if status.Code(err) != codes.Canceled {
			t.Errorf("cancelled call: %v, want Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled call did not return")
	}
}

func TestGRPCHealth(t *testing.T) {
	e := start(t, rlsConfig)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, svc := range []string{"", "envoy.service.ratelimit.v3.RateLimitService"} {
		r, err := healthpb.NewHealthClient(e.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v, want SERVING", svc, r, err)
		}
	}
}

func TestRLSConfigErrors(t *testing.T) {
	base := "[stores.main]\nengine = \"memory\"\n[stores.other]\nengine = \"memory\"\n" +
		"[limiters.a]\nstore = \"main\"\nrate_per_second = 1.0\n" +
		"[limiters.b]\nstore = \"other\"\nrate_per_second = 1.0\n" +
		"[limiters.c]\nstore = \"main\"\nmax_concurrent = 2\n"
	cases := []struct{ name, rls, want string }{
		{"unknown limiter", "[[rls.d]]\nkey = \"k\"\nlimiter = \"nope\"\n", `limiter "nope" is not configured`},
		{"two stores", "[[rls.d]]\nkey = \"k\"\nlimiter = \"a\"\n[[rls.d]]\nkey = \"j\"\nlimiter = \"b\"\n", "must share one store"},
		{"concurrency", "[[rls.d]]\nkey = \"k\"\nlimiter = \"c\"\n", "max_concurrent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg := ratesync.NewRegistry()
			defer reg.Close()
			cfg, err := ratesync.ParseConfig("x.toml", []byte(base+c.rls))
			if err != nil {
				t.Fatal(err)
			}
			if err := reg.ApplyConfig(cfg); err != nil {
				t.Fatal(err)
			}
			_, err = server.New(reg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v, want an error with %q", err, c.want)
			}
		})
	}
	parseCases := []struct{ name, rls, want string }{
		{"no key", "[[rls.d]]\nlimiter = \"a\"\n", "key is required"},
		{"rate_limit", "[[rls.d]]\nkey = \"k\"\n[rls.d.rate_limit]\nunit = \"second\"\n", "name a limiter instead"},
		{"unknown key", "[[rls.d]]\nkey = \"k\"\nlimitr = \"a\"\n", `unknown key "limitr"`},
		{"twice", "[[rls.d]]\nkey = \"k\"\n[[rls.d]]\nkey = \"k\"\n", "appears twice"},
		{"both", "[[rls.d]]\nkey = \"k\"\nlimiter = \"a\"\nunlimited = true\n", "exclude each other"},
		{"not a list", "[rls]\nd = 3\n", "must be a list"},
	}
	for _, c := range parseCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ratesync.ParseConfig("x.toml", []byte(base+c.rls))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ParseConfig: %v, want an error with %q", err, c.want)
			}
		})
	}
}
