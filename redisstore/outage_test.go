package redisstore_test

import (
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/redisstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

// startRedis starts a redis-server of the test's own on a free loopback
// port and returns its port and a function that kills it (SIGKILL).
func startRedis(t testing.TB, port int) func() {
	t.Helper()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		if testenv.Required() {
			t.Fatalf("redis-server: %v", err)
		}
		t.Skipf("redis-server: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("redis-server on %d did not start", port)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var once sync.Once
	kill := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGKILL) // the server this test started
			cmd.Wait()
		})
	}
	t.Cleanup(kill)
	return kill
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestOutage kills the Redis server under load, keeps the load going,
// restarts it, and records how each failure policy answered, how fast,
// and how long recovery took (storetest.Outage). Bounded: about 5 seconds.
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("outage test skipped in -short mode")
	}
	port := freePort(t)
	kill := startRedis(t, port)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	defer c.Close()
	s, err := redisstore.New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.Outage(t, storetest.OutageOptions{Store: s, Kill: kill, Restart: func() { startRedis(t, port) }})
}
