package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestQuickStart(t *testing.T) {
	t.Chdir(t.TempDir()) // no rate-sync.toml here: the example's own is used
	t.Setenv("RATE_SYNC_CONFIG", "")
	var out bytes.Buffer
	start := time.Now()
	if err := run(context.Background(), &out, 4); err != nil {
		t.Fatal(err)
	}
	// Four acquires, a denied Try, then Do: pacing at 10/s means at least
	// four 100ms gaps after the first admission.
	if el := time.Since(start); el < 390*time.Millisecond {
		t.Fatalf("ran in %v; at 10/s it cannot take under 400ms", el)
	}
	for _, want := range []string{"request 1 admitted", "request 4 admitted", "allowed=false", "ratesync.Do ran its function"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
