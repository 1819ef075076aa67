package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go/internal/faultproxy"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

const redisFaultConfig = `
[stores.redis]
engine = "redis"
url = "redis://PROXY/0"
key_prefix = "PREFIX"
call_timeout_seconds = 0.2
breaker_cooldown_seconds = 0.2

[limiters.closed]
store = "redis"
rate_per_second = 100.0
burst = 100
on_store_error = "deny"

[limiters.local]
store = "redis"
rate_per_second = 0.01
burst = 2

[[rls.edge]]
key = "api_key"
limiter = "closed"

[[rls.edge]]
key = "remote_address"
limiter = "local"
`

// TestRLSRedisBlackHole puts a black hole between ratesync serve and a
// real Redis: a fail-closed rule answers UNAVAILABLE (for Envoy's
// failure_mode_deny) within its call timeout, a local rule keeps being
// enforced in process, a request on both is decided by the strictest, and
// after the heal the store decides again.
func TestRLSRedisBlackHole(t *testing.T) {
	u, err := url.Parse(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	px, err := faultproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	var b [6]byte
	rand.Read(b[:])
	cfg := strings.NewReplacer("PROXY", px.Addr(), "PREFIX", "serve-"+hex.EncodeToString(b[:])).Replace(redisFaultConfig)
	e := start(t, cfg)
	defer func() {
		px.Heal()
		if err := e.reg.ResetStore(context.Background(), "redis"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}()
	key, ip := desc("api_key", "k1"), desc("remote_address", "10.9.9.9")
	if r := e.mustShould("edge", key); r.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("before the fault: %v", r)
	}
	px.BlackHole()
	start := time.Now()
	if _, err := e.should("edge", key); status.Code(err) != codes.Unavailable {
		t.Fatalf("fail-closed rule in a black hole: %v, want UNAVAILABLE", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("answered after %v; the call timeout is 200 ms", el)
	}
	if _, err := e.should("edge", key, ip); status.Code(err) != codes.Unavailable {
		t.Fatalf("a request on both rules: %v, want UNAVAILABLE (the strictest policy)", err)
	}
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		r, err := e.should("edge", ip)
		if err != nil || r.GetOverallCode() != want {
			t.Fatalf("local rule in a black hole, request %d: %v %v, want %v (burst 2 enforced in process)", i+1, r, err, want)
		}
	}
	px.Heal()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := e.should("edge", key)
		if err == nil && r.GetOverallCode() == rlsv3.RateLimitResponse_OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not decide again within 10 s of the heal: %v %v", r, err)
		}
		time.Sleep(20 * time.Millisecond) // the next request, a little later
	}
}
