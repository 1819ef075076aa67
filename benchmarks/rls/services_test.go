package rls

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The rule both services enforce: 1,000 requests per second per remote
// address. envoyproxy/ratelimit counts it in fixed windows aligned on the
// second; ratesync serves it twice, as a token bucket (rate 1,000/s, burst
// 1,000: the same long-run rate and the same 1,000 at once that a fresh
// fixed window grants) on domain "bench_tb", and as a sliding window (at
// most 1,000 in any second) on domain "bench_sw".
const (
	ruleLimit  = 1000
	descKey    = "remote_address"
	envoyDom   = "bench"
	ratesyncTB = "bench_tb"
	ratesyncSW = "bench_sw"
)

// service is one rate limit service under test: a process this package
// started, and the domain its rule is on.
type service struct {
	name   string // as reported
	domain string
	addr   string // gRPC, 127.0.0.1:port
	proc   *proc
}

// proc is a process this package started; stop ends it (its PID only).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string // its stderr and stdout
}

func startProc(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop sends SIGTERM to the process, and SIGKILL when it has not exited
// 15 s later.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func randomPrefix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "rlsbench" + hex.EncodeToString(b[:])
}

// redisEnv is the Redis server both services use, from
// RATESYNC_TEST_REDIS_URL (default redis://127.0.0.1:6379/0). Every key
// either service writes starts with prefix; the keys are deleted when the
// test ends, after the services stopped.
type redisEnv struct {
	url    string // for ratesync
	addr   string // host:port, for envoyproxy/ratelimit (database 0: it cannot select another)
	prefix string
	pid    int // the server's, from INFO, for its CPU time
}

func setupRedis(t testing.TB) *redisEnv {
	t.Helper()
	raw := os.Getenv("RATESYNC_TEST_REDIS_URL")
	if raw == "" {
		raw = "redis://127.0.0.1:6379/0"
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	if o.DB != 0 {
		// envoyproxy/ratelimit has no database setting: both services
		// share database 0, told apart by their key prefixes.
		u, _ := url.Parse(raw)
		u.Path = "/0"
		raw = u.String()
		o.DB = 0
	}
	c := redis.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		t.Skipf("no Redis at %s: %v", o.Addr, err)
	}
	env := &redisEnv{url: raw, addr: o.Addr, prefix: randomPrefix(t)}
	if info, err := c.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
				env.pid, _ = strconv.Atoi(v)
			}
		}
	}
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := deleteKeys(ctx, c, env.prefix+"*")
		if err != nil {
			t.Errorf("deleting the benchmark's keys (%s*): %v", env.prefix, err)
		} else if testing.Verbose() {
			t.Logf("deleted %d keys %s*", n, env.prefix)
		}
	})
	return env
}

func deleteKeys(ctx context.Context, c *redis.Client, match string) (int, error) {
	n := 0
	iter := c.Scan(ctx, 0, match, 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := c.Unlink(ctx, batch...).Err(); err != nil {
			return err
		}
		n += len(batch)
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return n, err
	}
	return n, flush()
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// ratesyncBinary builds cmd/ratesync from this repository once per test
// binary (RATESYNC_BENCH_RATESYNC_BIN names a built one instead).
func ratesyncBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("RATESYNC_BENCH_RATESYNC_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "rlsbench")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "ratesync")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", builtBin, "./cmd/ratesync")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ratesync: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// removeBuilt removes the binary ratesyncBinary built, if any.
func removeBuilt() {
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
}

const ratesyncConfig = `# The benchmark's rule, 1,000 per second per remote address, twice.
[stores.main]
engine = "redis"
url = %q
key_prefix = %q

# A token bucket: 1,000 per second, 1,000 at once.
[limiters.per_ip_tb]
store = "main"
rate_per_second = 1000.0
burst = 1000

# A sliding window: at most 1,000 in any second.
[limiters.per_ip_sw]
store = "main"
algorithm = "sliding_window"
limit = 1000
window_seconds = 1

[[rls.bench_tb]]
key = "remote_address"
limiter = "per_ip_tb"

[[rls.bench_sw]]
key = "remote_address"
limiter = "per_ip_sw"
`

// startRatesync starts `ratesync serve` on the Redis of env, with the two
// domains above; it returns the token-bucket and sliding-window services,
// one process.
func startRatesync(t testing.TB, env *redisEnv) (tb, sw *service) {
	t.Helper()
	bin := ratesyncBinary(t)
	cfg := filepath.Join(t.TempDir(), "rate-sync.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, ratesyncConfig, env.url, env.prefix+"rs"), 0o600); err != nil {
		t.Fatal(err)
	}
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "serve", "--http", httpAddr, "--grpc", grpcAddr, "--log-level", "warn", cfg)
	cmd.Env = append(os.Environ(), "RATESYNC_ADMIN_TOKEN=")
	p := startProc(t, "ratesync", cmd)
	tb = &service{name: "ratesync token bucket", domain: ratesyncTB, addr: grpcAddr, proc: p}
	sw = &service{name: "ratesync sliding window", domain: ratesyncSW, addr: grpcAddr, proc: p}
	waitReady(t, tb)
	waitReady(t, sw)
	return tb, sw
}

const envoyConfig = `domain: bench
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 1000
`

// startEnvoy starts envoyproxy/ratelimit's service (bin) on the Redis of
// env: its defaults, but for the addresses (loopback), statsd off, log
// level warn, the key prefix, and no expiry jitter (its keys expire a
// second after their window instead of up to 300 s later). extra adds
// environment settings (RATESYNC_BENCH_RLS_ENVOY_ENV, e.g.
// "REDIS_POOL_SIZE=64").
func startEnvoy(t testing.TB, bin string, env *redisEnv, extra []string) *service {
	t.Helper()
	root := t.TempDir()
	cfgDir := filepath.Join(root, "ratelimit", "config")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "bench.yaml"), []byte(envoyConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	grpcAddr := freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"USE_STATSD=false",
		"LOG_LEVEL=warn",
		"REDIS_SOCKET_TYPE=tcp",
		"REDIS_URL=" + env.addr,
		"RUNTIME_ROOT=" + root,
		"RUNTIME_SUBDIRECTORY=ratelimit",
		"RUNTIME_WATCH_ROOT=false",
		"HOST=127.0.0.1",
		"PORT=" + port(freeAddr(t)),
		"GRPC_HOST=127.0.0.1",
		"GRPC_PORT=" + port(grpcAddr),
		"DEBUG_HOST=127.0.0.1",
		"DEBUG_PORT=" + port(freeAddr(t)),
		"CACHE_KEY_PREFIX=" + env.prefix + "envoy_",
		"EXPIRATION_JITTER_MAX_SECONDS=0",
	}, extra...)
	s := &service{name: "envoyproxy/ratelimit", domain: envoyDom, addr: grpcAddr, proc: startProc(t, "envoy-ratelimit", cmd)}
	waitReady(t, s)
	return s
}

// waitReady asks s for a decision until it answers one with the rule's
// limit (its configuration is loaded), for at most 30 s.
func waitReady(t testing.TB, s *service) {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := rlspb.NewRateLimitServiceClient(conn)
	req := request(s.domain, "192.0.2.1")
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if s.proc.exited() {
			t.Fatalf("%s exited:\n%s", s.name, s.proc.tail())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := client.ShouldRateLimit(ctx, req, grpc.WaitForReady(true))
		cancel()
		if err == nil && len(resp.GetStatuses()) == 1 && resp.GetStatuses()[0].GetCurrentLimit().GetRequestsPerUnit() == ruleLimit {
			return
		}
		last = err
		if err == nil {
			last = fmt.Errorf("answer without the rule: %v", resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30 s: %v\n%s", s.name, last, s.proc.tail())
}

func request(domain, addr string) *rlspb.RateLimitRequest {
	return &rlspb.RateLimitRequest{
		Domain: domain,
		Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: descKey, Value: addr}},
		}},
	}
}

// cpuTime is the user and system time of process pid so far
// (/proc/PID/stat), or an error.
func cpuTime(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, errors.New("no pid")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return 0, err
	}
	// The command name, field 2, may hold spaces: count from its ')'.
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat")
	}
	fields := strings.Fields(line[i+1:])
	if len(fields) < 13 {
		return 0, errors.New("unexpected /proc stat")
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc stat")
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// machineCPU is the busy and total time of all the machine's CPUs so far
// (/proc/stat), in USER_HZ ticks.
func machineCPU() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
