package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/redisstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis pools reap idle connections in the background.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
	)
}

var bg = context.Background()

// client returns a client on the test Redis, closed when the test ends.
func client(t testing.TB) *redis.Client {
	t.Helper()
	url := testenv.RedisURL(t)
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func clusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	addrs := testenv.RedisClusterAddrs(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { c.Close() })
	return c
}

func randomPrefix(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return "rstest-" + hex.EncodeToString(b[:])
}

// store returns a store on c under a random prefix (or the prefix that
// opts set); the store is closed and its keys are deleted when the test
// ends, even if the test (or storetest) closed it before.
func store(t testing.TB, c redisstore.Client, opts ...redisstore.Option) *redisstore.Store {
	t.Helper()
	prefix := randomPrefix(t)
	opts = append([]redisstore.Option{redisstore.WithKeyPrefix(prefix)}, opts...)
	opts = append(opts, redisstore.RecordPrefix(&prefix))
	s, err := redisstore.New(c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		cleanup, err := redisstore.New(c, redisstore.WithKeyPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		defer cleanup.Close()
		if err := cleanup.ResetAll(bg); err != nil {
			t.Errorf("ResetAll: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	c := client(t)
	storetest.Run(t, storetest.Options{
		New: func(t *testing.T) driver.Store { return store(t, c) },
		NewWithClock: func(t *testing.T, now func() time.Time) driver.Store {
			return store(t, c, redisstore.WithClock(now))
		},
		Resolution: time.Microsecond,
	})
}

func TestConformanceUnbatched(t *testing.T) {
	c := client(t)
	storetest.Run(t, storetest.Options{
		New: func(t *testing.T) driver.Store { return store(t, c, redisstore.WithBatching(1, 1)) },
	})
}

// TestConformanceGeneralPaths runs the suite with the single-bucket
// shortcuts turned off, so that the general script's bucket is held to the
// reference model too.
func TestConformanceGeneralPaths(t *testing.T) {
	c := client(t)
	storetest.Run(t, storetest.Options{
		New: func(t *testing.T) driver.Store { return store(t, c, redisstore.WithGeneralPaths()) },
		NewWithClock: func(t *testing.T, now func() time.Time) driver.Store {
			return store(t, c, redisstore.WithGeneralPaths(), redisstore.WithClock(now))
		},
		Resolution: time.Microsecond,
	})
}

func TestConformanceCluster(t *testing.T) {
	c := clusterClient(t)
	storetest.Run(t, storetest.Options{
		New: func(t *testing.T) driver.Store { return store(t, c) },
		NewWithClock: func(t *testing.T, now func() time.Time) driver.Store {
			return store(t, c, redisstore.WithClock(now))
		},
		Resolution: time.Microsecond,
	})
}
