package grpclimit_test

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/grpclimit"
	"github.com/rate-sync/ratesync-go/internal/faultproxy"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

// TestRedisBlackHole puts a black hole between a real Redis and the
// limiter: a fail-closed rule answers Unavailable within its call timeout,
// a local rule keeps admitting within its limit, and after the heal the
// store decides again.
func TestRedisBlackHole(t *testing.T) {
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
	r := ratesync.NewRegistry()
	defer r.Close()
	if err := r.ConfigureStore("redis", "redis", map[string]any{
		"url":                      "redis://" + px.Addr() + "/0",
		"key_prefix":               "grpclimit-" + hex.EncodeToString(b[:]),
		"call_timeout_seconds":     0.2,
		"breaker_cooldown_seconds": 0.2,
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		px.Heal()
		if err := r.ResetStore(t.Context(), "redis"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}()
	r.ConfigureLimiter("closed", ratesync.Rule{Store: "redis", RatePerSecond: 100, Burst: 100, OnStoreError: ratesync.Deny})
	r.ConfigureLimiter("local", ratesync.Rule{Store: "redis", RatePerSecond: 0.01, Burst: 2})
	const svc = "/grpc.testing.TestService/"
	c := serve(t, nil, grpc.UnaryInterceptor(grpclimit.Methods{
		svc + "EmptyCall": limiter(t, r, "closed"),
		svc + "UnaryCall": limiter(t, r, "local"),
	}.UnaryServerInterceptor(everyone)))
	ctx := callCtx(t)
	if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatalf("before the fault: %v", err)
	}
	px.BlackHole()
	start := time.Now()
	_, err = c.EmptyCall(ctx, &testgrpc.Empty{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("fail closed in a black hole: %v, want Unavailable", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("answered after %v: the call timeout is 200ms", el)
	}
	for i, want := range []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted} {
		if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); status.Code(err) != want {
			t.Fatalf("local fallback, call %d: %v, want %v", i+1, err, want)
		}
	}
	px.Heal()
	eventually(t, "the store to decide again", func() bool {
		_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
		return err == nil
	})
}
