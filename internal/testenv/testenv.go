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
	raw := os.Getenv("RATESYNC_TEST_REDIS_URL")
	if raw == "" {
		unavailable(t, "RATESYNC_TEST_REDIS_URL is not set: skipping the Redis tests")
		return ""
	}
	addr, err := hostPort(raw, "6379")
	if err != nil {
		t.Fatalf("RATESYNC_TEST_REDIS_URL=%q: %v", raw, err)
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		unavailable(t, "Redis at %s: %v", addr, err)
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		unavailable(t, "Redis at %s: %v", addr, err)
		return ""
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		unavailable(t, "Redis at %s answered %q, %v", addr, line, err)
		return ""
	}
	return raw
}

// PostgresURL returns the test PostgreSQL URL after checking that the
// server accepts TCP connections.
func PostgresURL(t testing.TB) string {
	t.Helper()
	raw := os.Getenv("RATESYNC_TEST_POSTGRES_URL")
	if raw == "" {
		unavailable(t, "RATESYNC_TEST_POSTGRES_URL is not set: skipping the PostgreSQL tests")
		return ""
	}
	addr, err := hostPort(raw, "5432")
	if err != nil {
		t.Fatalf("RATESYNC_TEST_POSTGRES_URL=%q: %v", raw, err)
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		unavailable(t, "PostgreSQL at %s: %v", addr, err)
		return ""
	}
	c.Close()
	return raw
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
