package pgstore_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
	"github.com/rate-sync/ratesync-go/storetest"
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
// fast, and how long recovery took (storetest.Outage). Bounded: about 6
// seconds.
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
	storetest.Outage(t, storetest.OutageOptions{Store: s, Kill: inst.kill, Restart: inst.start})
}
