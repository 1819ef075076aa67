// Package testenv gives tests the Redis and PostgreSQL servers named by
// RATESYNC_TEST_REDIS_URL and RATESYNC_TEST_POSTGRES_URL. When a variable is
// unset (or its server does not answer) the test is skipped with a message,
// unless RATESYNC_TEST_REQUIRE_SERVICES=1, when it fails instead: CI sets it
// so that a missing service can never pass as a skipped test.
package testenv

import (
	"bufio"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// Required reports whether missing services fail tests.
func Required() bool { return os.Getenv("RATESYNC_TEST_REQUIRE_SERVICES") == "1" }

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf(format+" (RATESYNC_TEST_REQUIRE_SERVICES=1)", args...)
	}
	t.Skipf(format, args...)
}

// RedisURL returns the test Redis URL after checking that the server
// answers PING.
func RedisURL(t testing.TB) string {
	t.Helper()
	raw, c := dial(t, "RATESYNC_TEST_REDIS_URL", "Redis", "6379")
	if c == nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Write([]byte("PING\r\n"))
	line := ""
	if err == nil {
		line, err = bufio.NewReader(c).ReadString('\n')
	}
	if err != nil || !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		unavailable(t, "Redis at %s answered %q, %v", c.RemoteAddr(), line, err)
		return ""
	}
	return raw
}

// PostgresURL returns the test PostgreSQL URL after checking that the
// server accepts TCP connections.
func PostgresURL(t testing.TB) string {
	t.Helper()
	raw, c := dial(t, "RATESYNC_TEST_POSTGRES_URL", "PostgreSQL", "5432")
	if c == nil {
		return ""
	}
	c.Close()
	return raw
}

// dial reads the URL in env and connects to its host; it returns a nil
// connection after skipping (or failing) the test.
func dial(t testing.TB, env, what, defPort string) (string, net.Conn) {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		unavailable(t, "%s is not set: skipping the %s tests", env, what)
		return "", nil
	}
	addr, err := hostPort(raw, defPort)
	if err != nil {
		t.Fatalf("%s=%q: %v", env, raw, err)
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		unavailable(t, "%s at %s: %v", what, addr, err)
		return "", nil
	}
	return raw, c
}

func hostPort(raw, defPort string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = defPort
	}
	return net.JoinHostPort(host, port), nil
}

// RedisClusterAddrs returns the node addresses of the test Redis Cluster
// named by RATESYNC_TEST_REDIS_CLUSTER (comma separated host:port), after
// checking that the first one answers. scripts/redis-cluster.sh starts one
// on loopback ports.
func RedisClusterAddrs(t testing.TB) []string {
	t.Helper()
	raw := os.Getenv("RATESYNC_TEST_REDIS_CLUSTER")
	if raw == "" {
		unavailable(t, "RATESYNC_TEST_REDIS_CLUSTER is not set: skipping the Redis Cluster tests (start one with scripts/redis-cluster.sh)")
		return nil
	}
	addrs := strings.Split(raw, ",")
	c, err := net.DialTimeout("tcp", addrs[0], 2*time.Second)
	if err != nil {
		unavailable(t, "Redis Cluster node %s: %v", addrs[0], err)
		return nil
	}
	c.Close()
	return addrs
}
