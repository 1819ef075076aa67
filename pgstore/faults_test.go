package pgstore_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/rate-sync/ratesync-go/internal/faultproxy"
	"github.com/rate-sync/ratesync-go/storetest"
)

// faultOptions starts a PostgreSQL server of the test's own and a fault
// proxy in front of it, and returns the suite's options for stores opened
// from configuration with the default timeouts. The server and its
// schemas go with its data directory.
func faultOptions(t *testing.T) storetest.FaultOptions {
	t.Helper()
	inst := newPGInstance(t)
	server := fmt.Sprintf("127.0.0.1:%d", inst.port)
	px, err := faultproxy.New(server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	return storetest.FaultOptions{
		Engine: "postgres",
		Options: func(addr string) map[string]any {
			var b [5]byte
			rand.Read(b[:])
			return map[string]any{
				"url":           "postgres://postgres@" + addr + "/postgres?sslmode=disable",
				"schema_name":   "faults_" + hex.EncodeToString(b[:]),
				"pool_max_size": int64(4),
			}
		},
		Proxy:       px,
		Server:      server,
		Kill:        inst.kill,
		Restart:     inst.start,
		LeakOptions: append(faultproxy.LeakOptions(), leakOptions...),
	}
}

// TestFaults runs the fault suite (storetest.Faults) on a PostgreSQL
// server of the test's own, through a fault proxy (black hole, +200 ms
// latency, refused connections, connections reset mid-reply) and killed
// and restarted. Bounded: about 20 s.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite skipped in -short mode")
	}
	storetest.Faults(t, faultOptions(t))
}

// TestFaultsStrict is TestFaults with the known bugs failing the test.
func TestFaultsStrict(t *testing.T) {
	o := faultOptions(t)
	o.Strict = true
	storetest.Faults(t, o)
}
