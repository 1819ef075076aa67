package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a running server on loopback ports with a gRPC and an HTTP client.
type env struct {
	t      *testing.T
	reg    *ratesync.Registry
	srv    *server.Server
	rls    rlsv3.RateLimitServiceClient
	conn   *grpc.ClientConn
	base   string // http://127.0.0.1:PORT
	grpc   string // 127.0.0.1:PORT
	hc     *http.Client
	cancel context.CancelFunc
	done   chan error
	file   string
}

// start serves the configuration cfg (written to a file, for reloads).
func start(t *testing.T, cfg string, opts ...server.Option) *env {
	t.Helper()
	file := filepath.Join(t.TempDir(), "rate-sync.toml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := ratesync.NewRegistry()
	if err := reg.LoadConfig(file); err != nil {
		t.Fatal(err)
	}
	return startReg(t, reg, file, opts...)
}

func startReg(t *testing.T, reg *ratesync.Registry, file string, opts ...server.Option) *env {
	t.Helper()
	opts = append([]server.Option{server.WithLogger(quiet)}, opts...)
	if file != "" {
		opts = append([]server.Option{server.WithConfigFile(file)}, opts...)
	}
	srv, err := server.New(reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, reg: reg, srv: srv, base: "http://" + hl.Addr().String(), grpc: gl.Addr().String(),
		hc: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}, cancel: cancel, done: make(chan error, 1), file: file}
	go func() { e.done <- srv.Serve(ctx, hl, gl) }()
	e.conn, err = grpc.NewClient(e.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.rls = rlsv3.NewRateLimitServiceClient(e.conn)
	t.Cleanup(e.stop)
	return e
}

var stopOnce sync.Map

// quiet is the logger of the tests' servers: warnings and errors only.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// stop shuts the server down and checks that Serve returned nil.
func (e *env) stop() {
	if _, done := stopOnce.LoadOrStore(e, true); done {
		return
	}
	e.conn.Close()
	e.hc.CloseIdleConnections()
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		e.t.Errorf("Serve did not return 15 s after its context ended")
	}
	e.srv.Close()
	e.reg.Close()
}

func desc(kv ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for i := 0; i < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func (e *env) should(domain string, descs ...*ratelimitv3.RateLimitDescriptor) (*rlsv3.RateLimitResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: domain, Descriptors: descs})
}

func (e *env) mustShould(domain string, descs ...*ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	e.t.Helper()
	r, err := e.should(domain, descs...)
	if err != nil {
		e.t.Fatalf("ShouldRateLimit: %v", err)
	}
	return r
}

// do sends an HTTP request with a JSON body (nil: none) and decodes the
// JSON answer into a map.
func (e *env) do(method, path string, body any, hdr ...string) (*http.Response, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, e.base+path, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(data) > 0 && strings.Contains(resp.Header.Get("Content-Type"), "json") {
		if err := json.Unmarshal(data, &m); err != nil {
			e.t.Fatalf("%s %s: body %q: %v", method, path, data, err)
		}
	}
	return resp, m
}

// wantProblem checks an RFC 9457 answer with status code.
func wantProblem(t *testing.T, resp *http.Response, m map[string]any, code int) {
	t.Helper()
	if resp.StatusCode != code {
		t.Errorf("status %d %v, want %d", resp.StatusCode, m, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	if m["status"] != float64(code) || m["title"] == "" || m["type"] == nil {
		t.Errorf("problem %v: want status %d, a title and a type", m, code)
	}
}

// faultStore is a memory store whose calls can fail or block.
type faultStore struct {
	*memstore.Store
	mu      sync.Mutex
	fail    bool
	block   chan struct{} // non-nil: decisions wait for it to close (or ctx)
	entered chan struct{} // receives when a decision starts blocking
}

func newFaultStore() *faultStore {
	return &faultStore{Store: memstore.New(), entered: make(chan struct{}, 16)}
}

func (s *faultStore) set(fail bool, block chan struct{}) {
	s.mu.Lock()
	s.fail, s.block = fail, block
	s.mu.Unlock()
}

func (s *faultStore) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	s.mu.Lock()
	fail, block := s.fail, s.block
	s.mu.Unlock()
	if fail {
		return false, driver.Unavailable(errStoreDown)
	}
	if block != nil {
		s.entered <- struct{}{}
		select {
		case <-block:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return s.Store.Decide(ctx, checks, results)
}

func (s *faultStore) Peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return driver.Unavailable(errStoreDown)
	}
	return s.Store.Peek(ctx, checks, results)
}

type storeDown struct{}

func (storeDown) Error() string { return "store down (test)" }

var errStoreDown = storeDown{}
