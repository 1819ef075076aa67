package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a log destination written by the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// served is a `ratesync serve` running in this process on loopback ports.
type served struct {
	http, grpc string
	log        *syncBuffer
	stop       func() int
}

func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{log: &syncBuffer{}}
	ready := make(chan struct{})
	code := make(chan int, 1)
	args = append([]string{"--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"}, args...)
	go func() {
		code <- serve(ctx, args, s.log, serveHooks{ready: func(h, g string) {
			s.http, s.grpc = h, g
			close(ready)
		}})
	}()
	select {
	case <-ready:
	case c := <-code:
		cancel()
		t.Fatalf("serve exited with %d:\n%s", c, s.log.String())
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("serve did not start in 20 s")
	}
	var once sync.Once
	result := 0
	s.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case result = <-code:
			case <-time.After(20 * time.Second):
				t.Errorf("serve did not return 20 s after its context ended")
				result = -1
			}
		})
		return result
	}
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *served) post(t *testing.T, path, body string) (int, map[string]any) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Post("http://"+s.http+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	data, _ := io.ReadAll(resp.Body)
	json.Unmarshal(data, &m)
	return resp.StatusCode, m
}

func TestServeExample(t *testing.T) {
	t.Setenv("RATE_SYNC_CONFIG", "")
	s := startServe(t, "--log-format", "json")
	code, m := s.post(t, "/json", `{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"203.0.113.5"}]}]}`)
	if code != 200 || m["overallCode"] != "OK" {
		t.Errorf("RLS /json on the example: %d %v", code, m)
	}
	code, m = s.post(t, "/v1/try", `{"limiter":"per_ip","id":"203.0.113.5"}`)
	if code != 200 || m["allowed"] != true || m["remaining"] != float64(8) {
		t.Errorf("try on the example: %d %v (want 8 remaining of 10 after 2)", code, m)
	}
	if got := s.stop(); got != 0 {
		t.Errorf("exit code %d after a graceful shutdown, want 0:\n%s", got, s.log.String())
	}
	if !strings.Contains(s.log.String(), `"msg":"no configuration file: serving the built-in example on the memory store"`) {
		t.Errorf("the JSON log lacks the start line:\n%s", s.log.String())
	}
}

func TestServeUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"a.toml", "b.toml"}, {"--log-level", "loud"}, {"--log-format", "xml"}} {
		var out syncBuffer
		if code := serve(context.Background(), args, &out, serveHooks{}); code != 2 {
			t.Errorf("serve %v: exit %d, want 2", args, code)
		}
	}
	var out syncBuffer
	if code := serve(context.Background(), []string{"--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "/no/such/file.toml"}, &out, serveHooks{}); code != 1 {
		t.Errorf("a missing file: exit %d, want 1", code)
	}
	if code := serve(context.Background(), []string{"--http", "256.0.0.1:1"}, &out, serveHooks{}); code != 1 {
		t.Errorf("a bad address: exit %d, want 1", code)
	}
}

const serveConfig = `
[stores.main]
engine = "memory"

[limiters.per_ip]
store = "main"
rate_per_second = 1.0
burst = 2

[[rls.edge]]
key = "remote_address"
limiter = "per_ip"
`

// TestServeSIGHUP: SIGHUP reloads the file and keeps the limiters' state.
func TestServeSIGHUP(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rate-sync.toml")
	os.WriteFile(file, []byte(serveConfig), 0o600)
	s := startServe(t, file)
	rls := func(domain, key string) string {
		_, m := s.post(t, "/json", fmt.Sprintf(`{"domain":%q,"descriptors":[{"entries":[{"key":%q,"value":"v"}]}]}`, domain, key))
		return fmt.Sprint(m["overallCode"])
	}
	rls("edge", "remote_address")
	rls("edge", "remote_address")
	os.WriteFile(file, []byte(serveConfig+"\n[limiters.per_user]\nstore = \"main\"\nrate_per_second = 1.0\n\n[[rls.users]]\nkey = \"user\"\nlimiter = \"per_user\"\n"), 0o600)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.log.String(), "configuration reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload 10 s after SIGHUP:\n%s", s.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := rls("users", "user"); got != "OK" {
		t.Errorf("the new domain after SIGHUP: %s", got)
	}
	if got := rls("edge", "remote_address"); got != "OVER_LIMIT" {
		t.Errorf("per_ip after SIGHUP: %s, want OVER_LIMIT (the state kept)", got)
	}
}

// TestServeWatch: a change of the file reloads it, without a signal.
func TestServeWatch(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rate-sync.toml")
	os.WriteFile(file, []byte(serveConfig), 0o600)
	s := startServe(t, file)
	os.WriteFile(file, []byte(serveConfig+"\n[limiters.per_user]\nstore = \"main\"\nrate_per_second = 1.0\n\n[[rls.users]]\nkey = \"user\"\nlimiter = \"per_user\"\n"), 0o600)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, m := s.post(t, "/json", `{"domain":"users","descriptors":[{"entries":[{"key":"user","value":"ann"}]}]}`)
		if st, _ := m["statuses"].([]any); len(st) == 1 && strings.Contains(fmt.Sprint(st[0]), "per_user") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new domain is not served 10 s after the file changed:\n%s", s.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The dashboard is mounted at /.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + s.http + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %d %s, want the dashboard's page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// realClient returns the path of a real client binary named by env (set by
// .ci/run), skipping the test without it (failing under
// RATESYNC_TEST_REQUIRE_SERVICES=1).
func realClient(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		if testenv.Required() {
			t.Fatalf("%s is not set (RATESYNC_TEST_REQUIRE_SERVICES=1): .ci/run installs it", env)
		}
		t.Skipf("%s is not set: .ci/run installs the client", env)
	}
	return p
}

func runClient(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	t.Logf("$ %s %s\n%s", filepath.Base(name), strings.Join(args, " "), out)
	return string(out)
}

// TestServeGrpcurl: grpcurl lists the services by reflection, checks the
// health and calls ShouldRateLimit on the built-in example.
func TestServeGrpcurl(t *testing.T) {
	grpcurl := realClient(t, "RATESYNC_TEST_GRPCURL")
	t.Setenv("RATE_SYNC_CONFIG", "")
	s := startServe(t)
	out := runClient(t, grpcurl, "-plaintext", s.grpc, "list")
	for _, svc := range []string{"envoy.service.ratelimit.v3.RateLimitService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(out, svc) {
			t.Errorf("grpcurl list lacks %s", svc)
		}
	}
	if out := runClient(t, grpcurl, "-plaintext", s.grpc, "grpc.health.v1.Health/Check"); !strings.Contains(out, `"SERVING"`) {
		t.Errorf("health: %s", out)
	}
	req := `{"domain":"messaging","descriptors":[{"entries":[{"key":"message_type","value":"marketing"},{"key":"to_number","value":"2061111111"}]}]}`
	var last string
	for range 6 {
		last = runClient(t, grpcurl, "-plaintext", "-d", req, s.grpc, "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
	}
	if !strings.Contains(last, `"overallCode": "OVER_LIMIT"`) || !strings.Contains(last, `"unit": "DAY"`) {
		t.Errorf("the 6th marketing message (5 a day): %s", last)
	}
}

// TestServeRatelimitClient: envoyproxy/ratelimit's own client command
// against the built-in example.
func TestServeRatelimitClient(t *testing.T) {
	client := realClient(t, "RATESYNC_TEST_RLS_CLIENT")
	t.Setenv("RATE_SYNC_CONFIG", "")
	s := startServe(t)
	out := runClient(t, client, "-dial_string", s.grpc, "-domain", "edge", "-descriptors", "remote_address=203.0.113.5")
	if !strings.Contains(out, "overall_code:OK") || !strings.Contains(out, `name:"per_ip"`) {
		t.Errorf("per address: %s", out)
	}
	// Nested descriptors, 5 a day: the 6th is over the limit.
	for range 6 {
		out = runClient(t, client, "-dial_string", s.grpc, "-domain", "messaging", "-descriptors", "message_type=marketing,to_number=2061111111")
	}
	if !strings.Contains(out, "overall_code:OVER_LIMIT") || !strings.Contains(out, "unit:DAY") {
		t.Errorf("the 6th marketing message (5 a day): %s", out)
	}
}
