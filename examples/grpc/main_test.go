package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGRPCExample(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("RATE_SYNC_CONFIG", "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	got := out.String()
	// A burst of 3 at 2/s: three calls admitted, the fourth denied with
	// the policy's quota of 4 calls in 2 s and a retry under half a second.
	for _, want := range []string{
		`call 1: OK  ratelimit: "api";r=2;t=1`,
		`call 3: OK  ratelimit: "api";r=0;t=2`,
		"call 4: denied, as the client sees it:",
		"status:   ResourceExhausted: rate limit exceeded for api; retry after ",
		`google.rpc.QuotaFailure{subject: "api", description: "at most 4 calls in 2s", quota_id: "api", quota_value: 4}`,
		`metadata: ratelimit: "api";r=0;t=1`,
		`ratelimit-policy: "api";q=4;w=2`,
		"retry-after: 1\n",
		"  call 1: OK\n",
		"  call 2: OK\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	_, rest, ok := strings.Cut(got, "RetryInfo{retry_delay: ")
	text, _, _ := strings.Cut(rest, "}")
	delay, err := time.ParseDuration(text)
	if !ok || err != nil {
		t.Fatalf("no RetryInfo delay (%v) in:\n%s", err, got)
	}
	if delay <= 0 || delay > 500*time.Millisecond {
		t.Errorf("RetryInfo delay %v, want (0, 500ms] at 2/s", delay)
	}
	// Each call of the honouring client was admitted: 3 + 2 admissions, and
	// one denial per retry besides the printed one.
	var admitted, denied, retries int
	i := strings.Index(got, "limiter api: ")
	if i < 0 {
		t.Fatalf("no summary in:\n%s", got)
	}
	if _, err := fmt.Sscanf(got[i:], "limiter api: %d admitted, %d denied, %d retries", &admitted, &denied, &retries); err != nil {
		t.Fatal(err)
	}
	if admitted != 5 || retries < 1 || retries > 2 || denied != 1+retries || strings.Count(got, "as RetryInfo says") != retries {
		t.Fatalf("admitted %d, denied %d, retries %d:\n%s", admitted, denied, retries, got)
	}
}
