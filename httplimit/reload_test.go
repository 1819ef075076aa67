package httplimit_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

func reloadTo(t *testing.T, reg *ratesync.Registry, toml string) {
	t.Helper()
	cfg, err := ratesync.ParseConfig("t.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Reload(cfg); err != nil {
		t.Fatal(err)
	}
}

const apiTOML = `
[stores.main]
engine = "memory"
[limiters.api]
store = "main"
limit = LIMIT
window_seconds = 60
SHADOW
[limiters.api.overrides]
"vip" = { limit = 10 }
`

func apiConfig(limit, shadow string) string {
	return strings.NewReplacer("LIMIT", limit, "SHADOW", shadow).Replace(apiTOML)
}

func TestMiddlewareFollowsReloadsOverridesAndShadow(t *testing.T) {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reloadTo(t, reg, apiConfig("2", ""))
	api, err := reg.Get("api")
	if err != nil {
		t.Fatal(err)
	}
	h := httplimit.New(api, httplimit.Header("X-Key"))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	do := func(key string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Key", key)
		h.ServeHTTP(rec, req)
		return rec
	}
	if got := do("a").Header().Get("RateLimit-Policy"); got != `"api";q=2;w=60` {
		t.Fatalf("policy %q", got)
	}
	if got := do("vip").Header().Get("RateLimit-Policy"); got != `"api";q=10;w=60` {
		t.Fatalf("policy of an overridden key %q", got)
	}
	reloadTo(t, reg, apiConfig("3", ""))
	rec := do("a") // the second of 3
	if got := rec.Header().Get("RateLimit-Policy"); got != `"api";q=3;w=60` || rec.Code != 200 {
		t.Fatalf("after the reload: %d, policy %q", rec.Code, got)
	}
	do("a")
	if rec := do("a"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("fourth request under limit 3: %d", rec.Code)
	}
	// Shadow: the same exhausted key passes, and the client is told of no
	// limit.
	reloadTo(t, reg, apiConfig("3", "shadow = true"))
	for range 3 {
		rec := do("a")
		if rec.Code != 200 {
			t.Fatalf("shadow rule answered %d", rec.Code)
		}
		for _, f := range []string{"RateLimit", "RateLimit-Policy", "Retry-After"} {
			if v := rec.Header().Get(f); v != "" {
				t.Fatalf("shadow rule sent %s: %q", f, v)
			}
		}
	}
	if m := api.Metrics(); m.ShadowDenials != 3 {
		t.Fatalf("shadow denials %d, want 3", m.ShadowDenials)
	}
}
