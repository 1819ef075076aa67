package grpclimit_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/grpclimit"
)

func reloadTo(t *testing.T, reg *ratesync.Registry, limit, shadow string) {
	t.Helper()
	toml := strings.NewReplacer("LIMIT", limit, "SHADOW", shadow).Replace(`
[stores.main]
engine = "memory"
[limiters.api]
store = "main"
limit = LIMIT
window_seconds = 60
SHADOW
[limiters.api.overrides]
"vip" = { limit = 10 }
`)
	cfg, err := ratesync.ParseConfig("t.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Reload(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestInterceptorFollowsReloadsOverridesAndShadow: the metadata describes
// the rule in force for the call's key, after a reload too, and a rule
// turned to shadow mode admits and tells the client nothing.
func TestInterceptorFollowsReloadsOverridesAndShadow(t *testing.T) {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reloadTo(t, reg, "2", "")
	api := limiter(t, reg, "api")
	c := serve(t, nil, grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(api, grpclimit.Metadata("x-key"))))
	ctx := callCtx(t)
	do := func(key string) (metadata.MD, error) {
		var md metadata.MD
		_, err := c.EmptyCall(metadata.AppendToOutgoingContext(ctx, "x-key", key), &testgrpc.Empty{}, grpc.Header(&md))
		return md, err
	}
	if md, _ := do("a"); first(md, "ratelimit-policy") != `"api";q=2;w=60` {
		t.Fatalf("policy %q", md.Get("ratelimit-policy"))
	}
	if md, _ := do("vip"); first(md, "ratelimit-policy") != `"api";q=10;w=60` {
		t.Fatalf("policy of an overridden key %q", md.Get("ratelimit-policy"))
	}
	reloadTo(t, reg, "3", "")
	if md, err := do("a"); err != nil || first(md, "ratelimit-policy") != `"api";q=3;w=60` {
		t.Fatalf("after the reload: %v, policy %q", err, md.Get("ratelimit-policy"))
	}
	do("a")
	_, err := do("a")
	if d := denialOf(t, err); d.code != codes.ResourceExhausted || d.quota != 3 {
		t.Fatalf("fourth call under limit 3: %v", d)
	}
	reloadTo(t, reg, "3", "shadow = true")
	for range 3 {
		md, err := do("a")
		if status.Code(err) != codes.OK {
			t.Fatalf("shadow rule answered %v", err)
		}
		for _, k := range []string{"ratelimit", "ratelimit-policy", "retry-after"} {
			if v := md.Get(k); v != nil {
				t.Fatalf("shadow rule sent %s: %q", k, v)
			}
		}
	}
	if m := api.Metrics(); m.ShadowDenials != 3 {
		t.Fatalf("shadow denials %d, want 3", m.ShadowDenials)
	}
}
