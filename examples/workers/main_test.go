package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go/examples/internal/storeenv/storeenvtest"
	"github.com/rate-sync/ratesync-go/internal/testenv"
)

// TestMain runs the worker processes too: run starts this test binary
// again (os.Executable) with childEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(child())
	}
	goleak.VerifyTestMain(m)
}

func TestWorkersMemory(t *testing.T) {
	useStore(t, "", "")
	out := runWorkers(t)
	if !strings.Contains(out, "the 4 workers run as goroutines of this process") {
		t.Errorf("the memory run does not say its workers are goroutines:\n%s", out)
	}
}

func TestWorkersRedis(t *testing.T) {
	useStore(t, testenv.RedisURL(t), "")
	out := runWorkers(t)
	if !strings.Contains(out, "started 4 worker processes") {
		t.Errorf("no worker processes:\n%s", out)
	}
}

func TestWorkersPostgres(t *testing.T) {
	useStore(t, "", testenv.PostgresURL(t))
	out := runWorkers(t)
	if !strings.Contains(out, "started 4 worker processes") {
		t.Errorf("no worker processes:\n%s", out)
	}
}

// useStore points the example (and its processes, which inherit the
// environment) at a Redis key prefix or a PostgreSQL schema of the test's
// own, removed when the test ends.
func useStore(t *testing.T, redisURL, pgURL string) {
	t.Helper()
	storeenvtest.Use(t, "cookbook_workers_", redisURL, pgURL, config)
}

// runWorkers runs the example and checks its numbers: the calls of all
// workers together within rate × time + burst, never more than
// max_concurrent in flight, every worker's calls counted.
func runWorkers(t *testing.T) string {
	t.Helper()
	var out bytes.Buffer
	start := time.Now()
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	elapsed := time.Since(start)
	got := out.String()
	sum := 0
	for id := 1; id <= workers; id++ {
		m := regexp.MustCompile(`worker ` + strconv.Itoa(id) + `: (\d+) calls`).FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("no line for worker %d:\n%s", id, got)
		}
		n, _ := strconv.Atoi(m[1])
		if n < 1 {
			t.Errorf("worker %d made no call", id)
		}
		sum += n
	}
	m := regexp.MustCompile(`total: (\d+) calls in (\S+)s`).FindStringSubmatch(got)
	p := regexp.MustCompile(`peak in flight across workers: (\d+) \(max_concurrent 10\)`).FindStringSubmatch(got)
	if m == nil || p == nil {
		t.Fatalf("no total or peak:\n%s", got)
	}
	total, _ := strconv.Atoi(m[1])
	span, _ := strconv.ParseFloat(m[2], 64)
	peak, _ := strconv.Atoi(p[1])
	if total != sum {
		t.Errorf("total %d, but the workers' lines add up to %d", total, sum)
	}
	// 90/s × span + 1, span rounded up to the printed millisecond; and the
	// span is within the run.
	if float64(total) > 90*(span+0.001)+1 || span > elapsed.Seconds() {
		t.Errorf("%d calls in %vs (the run took %v): over 90/s + 1", total, span, elapsed)
	}
	if peak < 1 || peak > 10 {
		t.Errorf("peak in flight %d, want 1 to 10", peak)
	}
	t.Logf("\n%s", got)
	return got
}
