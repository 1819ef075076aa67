package pgstore_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
)

// pgInstance is a PostgreSQL server of the test's own: a temporary data
// directory, a free loopback port, run as the postgres user.
type pgInstance struct {
	t       *testing.T
	bin     string
	dir     string
	port    int
	cred    *syscall.Credential
	cmd     *exec.Cmd
	stopped bool
}

func newPGInstance(t *testing.T) *pgInstance {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	u, err := user.Lookup("postgres")
	if len(bins) == 0 || err != nil {
		if testenv.Required() {
			t.Fatalf("PostgreSQL binaries or user missing: %v", err)
		}
		t.Skip("no PostgreSQL binaries to start a server of the test's own")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "ratesync-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chown(dir, uid, gid)
	p := &pgInstance{t: t, bin: filepath.Dir(bins[len(bins)-1]), dir: dir, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if os.Getuid() != 0 {
		p.cred = nil // already an unprivileged user
	}
	initdb := exec.Command(filepath.Join(p.bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	p.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *pgInstance) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

func (p *pgInstance) start() {
	p.t.Helper()
	p.cmd = exec.Command(filepath.Join(p.bin, "postgres"), "-D", filepath.Join(p.dir, "data"), "-p", strconv.Itoa(p.port),
		"-k", p.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.stopped = false
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.kill()
			p.t.Fatal("postgres did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL to the postmaster this test started; its backends
// exit when they see it gone.
func (p *pgInstance) kill() {
	if p.stopped || p.cmd == nil {
		return
	}
	p.stopped = true
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	// Backends notice the postmaster's death within moments; wait for the
	// port and the shared memory to be free before a restart.
	time.Sleep(300 * time.Millisecond)
	os.Remove(filepath.Join(p.dir, "data", "postmaster.pid"))
}

// TestOutage kills the PostgreSQL server under load, keeps the load
// going, restarts it, and records how each failure policy answered, how
// fast, and how long recovery took. Bounded: about 6 seconds.
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("outage test skipped in -short mode")
	}
	inst := newPGInstance(t)
	cfg, err := pgxpool.ParseConfig(inst.url() + "&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := pgstore.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := ratesync.NewRegistry()
	defer r.Close()
	r.AddStore("pg", s)
	policies := []ratesync.FailurePolicy{ratesync.Allow, ratesync.Deny, ratesync.Local}
	for _, p := range policies {
		rule := ratesync.Rule{Store: "pg", RatePerSecond: 1e6, Burst: 1000, OnStoreError: p}
		if err := r.ConfigureLimiter(string(p), rule); err != nil {
			t.Fatal(err)
		}
	}
	type tally struct{ real, failedOpen, fallback, errs atomic.Int64 }
	var phase atomic.Int32
	var counts [3][3]tally
	var latMu sync.Mutex
	var downLat []time.Duration
	var recovered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, _ := r.GetOrClone(string(policies[g%3]), "client-"+strconv.Itoa(g))
			for {
				select {
				case <-stop:
					return
				default:
				}
				ph := phase.Load()
				t0 := time.Now()
				d, err := l.Try(bg)
				lat := time.Since(t0)
				tl := &counts[ph][g%3]
				switch {
				case err != nil:
					tl.errs.Add(1)
				case d.Fallback:
					tl.fallback.Add(1)
				case d.FailedOpen:
					tl.failedOpen.Add(1)
				default:
					tl.real.Add(1)
					if ph == 2 {
						recovered.CompareAndSwap(0, time.Now().UnixNano())
					}
				}
				if ph == 1 {
					latMu.Lock()
					downLat = append(downLat, lat)
					latMu.Unlock()
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	phase.Store(1)
	inst.kill()
	time.Sleep(2 * time.Second)
	inst.start()
	restarted := time.Now()
	phase.Store(2)
	deadline := time.Now().Add(ratesync.BreakerCooldown + 8*time.Second)
	for recovered.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	for ph, name := range []string{"before", "outage", "after restart"} {
		for i, p := range policies {
			tl := &counts[ph][i]
			t.Logf("%-13s %-5s real %5d  failed-open %5d  fallback %5d  errors %5d", name, p, tl.real.Load(), tl.failedOpen.Load(), tl.fallback.Load(), tl.errs.Load())
		}
	}
	slices.Sort(downLat)
	if len(downLat) == 0 {
		t.Fatal("no answers during the outage")
	}
	p99 := downLat[len(downLat)*99/100]
	t.Logf("answers during the outage: %d, p50 %v, p99 %v, max %v", len(downLat), downLat[len(downLat)/2], p99, downLat[len(downLat)-1])
	if recovered.Load() == 0 {
		t.Fatal("no real decision after the restart")
	}
	t.Logf("recovery: first real decision %v after the restart", time.Unix(0, recovered.Load()).Sub(restarted).Round(time.Millisecond))
	down := &counts[1]
	if down[0].errs.Load() != 0 || down[0].failedOpen.Load() == 0 {
		t.Errorf("allow during the outage: %d errors, %d failed open", down[0].errs.Load(), down[0].failedOpen.Load())
	}
	if down[1].errs.Load() == 0 || down[1].failedOpen.Load()+down[1].fallback.Load() != 0 {
		t.Errorf("deny during the outage: want errors only")
	}
	if down[2].fallback.Load() == 0 || down[2].errs.Load() != 0 {
		t.Errorf("local during the outage: %d fallback, %d errors", down[2].fallback.Load(), down[2].errs.Load())
	}
	if p99 > 250*time.Millisecond {
		t.Errorf("p99 answer during the outage %v: the breaker should answer at once", p99)
	}
}
