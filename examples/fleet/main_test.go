package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go/examples/internal/storeenv"
	"github.com/rate-sync/ratesync-go/examples/internal/storeenv/storeenvtest"
	"github.com/rate-sync/ratesync-go/internal/testenv"
)

// TestMain runs the instance processes too: run starts this test binary
// again (os.Executable) with serverEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(serverEnv) != "" {
		if err := serveUntilEOF(); err != nil {
			fmt.Fprintln(os.Stderr, "instance:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// In memory each instance counts alone: each stays within the limit, the
// fleet within three times it.
func TestFleetMemory(t *testing.T) {
	useStore(t, "", "")
	per, total, bound := runFleet(t)
	for i, n := range per {
		if float64(n) > bound {
			t.Errorf("instance %d admitted %d, over its own limit %.1f", i+1, n, bound)
		}
	}
	if float64(total) > servers*bound {
		t.Errorf("fleet admitted %d, over %d × %.1f", total, servers, bound)
	}
}

func TestFleetRedis(t *testing.T) {
	useStore(t, testenv.RedisURL(t), "")
	if _, total, bound := runFleet(t); float64(total) > bound {
		t.Errorf("fleet admitted %d, over the shared limit %.1f", total, bound)
	}
}

func TestFleetPostgres(t *testing.T) {
	useStore(t, "", testenv.PostgresURL(t))
	if _, total, bound := runFleet(t); float64(total) > bound {
		t.Errorf("fleet admitted %d, over the shared limit %.1f", total, bound)
	}
}

// useStore points the example (and its processes, which inherit the
// environment) at a Redis key prefix or a PostgreSQL schema of the test's
// own, removed when the test ends.
func useStore(t *testing.T, redisURL, pgURL string) {
	t.Helper()
	storeenvtest.Use(t, "cookbook_fleet_", redisURL, pgURL, config)
}

// runFleet runs the example and returns what each instance admitted, the
// total, and the one-limit bound 100/s × span + 1 (the span rounded up to
// the printed millisecond, and checked to lie within the run).
func runFleet(t *testing.T) (per []int, total int, bound float64) {
	t.Helper()
	var out bytes.Buffer
	start := time.Now()
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	elapsed := time.Since(start)
	got := out.String()
	t.Logf("\n%s", got)
	sum := 0
	for i := 1; i <= servers; i++ {
		m := regexp.MustCompile(`instance ` + strconv.Itoa(i) + `: +(\d+) admitted \(200\), +(\d+) denied \(429\)`).FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("no line for instance %d:\n%s", i, got)
		}
		n, _ := strconv.Atoi(m[1])
		per = append(per, n)
		sum += n
	}
	m := regexp.MustCompile(`fleet: (\d+) admitted in (\S+)s`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no fleet total:\n%s", got)
	}
	total, _ = strconv.Atoi(m[1])
	span, _ := strconv.ParseFloat(m[2], 64)
	if total != sum || total < 1 || span > elapsed.Seconds() {
		t.Errorf("fleet total %d in %vs; instances add up to %d, the run took %v", total, span, sum, elapsed)
	}
	if storeenv.Shared() != strings.Contains(got, "started 3 instances") {
		t.Errorf("instance processes on a shared store only:\n%s", got)
	}
	return per, total, 100*(span+0.001) + 1
}
