package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTiers(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	// Each customer gets exactly its tier's quota, however its 8 goroutines
	// interleave, and has none left until the window (6 minutes) slides.
	for _, want := range []string{
		`alice  free       api_free           10 per 6m0s:    10 admitted, 10 denied in \S+; now remaining 0, next request in (5m5\ds|6m0s)`,
		`bob    free       api_free           10 per 6m0s:    10 admitted, 10 denied in \S+; now remaining 0, next request in (5m5\ds|6m0s)`,
		`carol  pro        api_pro           100 per 6m0s:   100 admitted, 10 denied in \S+; now remaining 0, next request in (5m5\ds|6m0s)`,
		`dave   enterprise api_enterprise   1000 per 6m0s:  1000 admitted, 10 denied in \S+; now remaining 0, next request in (5m5\ds|6m0s)`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
