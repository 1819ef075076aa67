package ratesyncotel_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/faultproxy"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/ratesyncotel"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

func randomPrefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "rsotel-" + hex.EncodeToString(b[:])
}

// redisRegistry returns a registry with ratesyncotel's observers and
// instruments and a Redis store "redis" under a random key prefix, whose
// keys are deleted when the test ends.
func redisRegistry(t *testing.T, o ratesyncotel.Options) (*ratesync.Registry, string) {
	t.Helper()
	raw := testenv.RedisURL(t)
	reg := newRegistry(t, o)
	prefix := randomPrefix()
	if err := reg.ConfigureStore("redis", "redis", map[string]any{"url": raw, "key_prefix": prefix}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := reg.ResetStore(context.Background(), "redis"); err != nil {
			t.Errorf("ResetStore: %v", err)
		}
	})
	return reg, prefix
}

func attrsOf(s sdktrace.ReadOnlySpan) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}

// Redis: a span per store call with the database conventions, under the
// caller's span; the store-call histogram and counters as Registry.Stores
// counts them.
func TestRedis(t *testing.T) {
	mp, reader := metricsProvider(t)
	tp, sr := tracesProvider(t)
	reg, _ := redisRegistry(t, ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp})
	if err := reg.ConfigureLimiter("api", ratesync.Rule{Store: "redis", RatePerSecond: 0.001, Burst: 2, MaxConcurrent: 5}); err != nil {
		t.Fatal(err)
	}
	pctx, parent := tp.Tracer("test").Start(ctx, "handler")
	for i := range 3 {
		d, err := reg.Try(pctx, "api")
		if err != nil || d.Allowed != (i < 2) {
			t.Fatalf("Try %d: %+v %v", i, d, err)
		}
		if err := d.Lease.Release(pctx); err != nil {
			t.Fatal(err)
		}
	}
	parent.End()
	spans := sr.Ended()
	ops := map[string]int{}
	for _, s := range spans[:len(spans)-1] {
		a := attrsOf(s)
		op := a["db.operation.name"]
		ops[op]++
		if s.Name() != "ratesync."+op || a["db.system.name"] != "redis" || a["ratesync.store"] != "redis" || a["ratesync.engine"] != "redis" {
			t.Errorf("span %s: attributes %v", s.Name(), a)
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.Status().Code != codes.Unset {
			t.Errorf("span %s: parent %v status %v", s.Name(), s.Parent().SpanID(), s.Status())
		}
		if d := s.EndTime().Sub(s.StartTime()); d <= 0 || d > 5*time.Second {
			t.Errorf("span %s lasts %v", s.Name(), d)
		}
	}
	if ops["decide"] != 3 || ops["release"] != 2 || len(ops) != 2 {
		t.Errorf("spans by operation %v, want 3 decide and 2 release", ops)
	}
	got := collect(t, reader)
	for op, want := range map[string]uint64{"decide": 3, "release": 2} {
		if c := got["ratesync.store.call.duration"].Points["ratesync.operation="+op+",ratesync.store=redis"].Count; c != want {
			t.Errorf("store.call.duration{%s}: count %d, want %d", op, c, want)
		}
	}
	checkAgainstSnapshots(t, got, reg)
}

// A black-holed Redis: the call times out at the store's call timeout,
// the span says so, and the rule's local policy answered; a caller whose
// deadline comes first gives up at its deadline, and its span says that.
func TestRedisBlackHole(t *testing.T) {
	mp, reader := metricsProvider(t)
	tp, sr := tracesProvider(t)
	reg, prefix := redisRegistry(t, ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp})
	u, err := url.Parse(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	px, err := faultproxy.New(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	defer px.Heal() // closes the silenced connections before the registry closes
	// The same key prefix as the store "redis", whose cleanup deletes the keys.
	err = reg.ConfigureStore("hole", "redis", map[string]any{"url": "redis://" + px.Addr() + "/0", "key_prefix": prefix,
		"call_timeout_seconds": 0.1, "socket_timeout": 2.0})
	if err != nil {
		t.Fatal(err)
	}
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "hole", RatePerSecond: 100})
	if d, err := reg.Try(ctx, "api"); err != nil || !d.Allowed || d.Fallback {
		t.Fatalf("healthy: %+v %v", d, err)
	}
	px.BlackHole()
	pctx, parent := tp.Tracer("test").Start(ctx, "handler")
	d, err := reg.Try(pctx, "api")
	if err != nil || !d.Fallback {
		t.Fatalf("black hole, local policy: %+v %v", d, err)
	}
	dctx, cancel := context.WithTimeout(pctx, 20*time.Millisecond)
	defer cancel()
	// A call timeout longer than the caller's deadline: the caller leaves first.
	if err := reg.ConfigureStore("hole2", "redis", map[string]any{"url": "redis://" + px.Addr() + "/0", "key_prefix": prefix,
		"call_timeout_seconds": 5.0, "socket_timeout": 2.0}); err != nil {
		t.Fatal(err)
	}
	reg.ConfigureLimiter("patient", ratesync.Rule{Store: "hole2", RatePerSecond: 100, OnStoreError: ratesync.Deny})
	start := time.Now()
	if _, err := reg.Try(dctx, "patient"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller with a 20 ms deadline: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("caller with a 20 ms deadline returned after %v", el)
	}
	parent.End()

	spans := sr.Ended()
	if len(spans) != 4 { // healthy decide, timed out decide, abandoned decide, handler
		t.Fatalf("%d spans, want 4", len(spans))
	}
	for i, want := range []struct {
		errType, or string
		min         time.Duration
	}{
		{"", "", 0},
		// The registry's call timeout, or go-redis's read deadline, which
		// it sets from the call's deadline: whichever fires first.
		{"call_timeout", "unavailable", 90 * time.Millisecond},
		{"deadline_exceeded", "", 0},
	} {
		s, a := spans[i], attrsOf(spans[i])
		et := a["error.type"]
		if et != want.errType && (want.or == "" || et != want.or) || (want.errType != "") != (s.Status().Code == codes.Error) {
			t.Errorf("span %d: error.type %q status %v, want %q", i, et, s.Status(), want.errType)
		}
		if d := s.EndTime().Sub(s.StartTime()); d < want.min || d > 2*time.Second {
			t.Errorf("span %d (%s) lasts %v, want at least %v", i, want.errType, d, want.min)
		}
		if i > 0 && s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %d: not under the caller's span", i)
		}
	}
	got := collect(t, reader)
	wantValue(t, got, "ratesync.fallback_decisions", "ratesync.limiter=api", 1)
	wantValue(t, got, "ratesync.store.errors", "ratesync.operation=decide,ratesync.store=hole", 1)
	checkAgainstSnapshots(t, got, reg)
}
