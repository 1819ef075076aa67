package ratesyncotel_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go"
)

// TestMain checks for leaked goroutines once the tests ran, after closing
// the package functions' registry (TestDefaultRegistry loads it, and its
// memory store's sweeper runs until Close; closing it in the test would
// leave -count=2 a closed registry).
func TestMain(m *testing.M) {
	code := m.Run()
	if def, err := ratesync.Default(); err == nil {
		def.Close()
	}
	if code == 0 {
		// go-redis pools (the Redis tests' stores) reap idle connections in the background.
		if err := goleak.Find(goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
