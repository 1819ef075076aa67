package pgstore_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
)

// faultProxy is a loopback TCP proxy that can black-hole: BlackHole makes
// every open link silent for good (what each side sends is read and
// dropped, so TCP acknowledges it and keepalive sees a live peer) and new
// connections accepted but never forwarded; Heal forwards new connections
// again, while the silenced links stay silent, as after a partition heals
// under sockets that a middlebox forgot.
type faultProxy struct {
	ln      net.Listener
	target  string
	holed   atomic.Bool
	noReply atomic.Bool // replies dropped on every link, while set
	mu      sync.Mutex
	links   []*link
	wg      sync.WaitGroup
}

type link struct {
	a, b   net.Conn // b is nil for a connection accepted while black-holed
	silent atomic.Bool
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

func (p *faultProxy) serve() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		l := &link{a: a}
		if p.holed.Load() {
			l.silent.Store(true)
		} else if l.b, err = net.Dial("tcp", p.target); err != nil {
			a.Close()
			continue
		}
		p.mu.Lock()
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(1)
		go p.pipe(l, a, l.b, false)
		if l.b != nil {
			p.wg.Add(1)
			go p.pipe(l, l.b, a, true)
		}
	}
}

// pipe copies from to to, dropping what it reads once the link is silent
// (or, for a reply, while replies are dropped). When either side closes, a
// link that is not silent closes the other.
func (p *faultProxy) pipe(l *link, from, to net.Conn, reply bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && to != nil && !l.silent.Load() && !(reply && p.noReply.Load()) {
			if _, err = to.Write(buf[:n]); err != nil {
				n = 0
			}
		}
		if err != nil {
			if !l.silent.Load() {
				l.a.Close()
				l.b.Close()
			}
			return
		}
	}
}

// DropReplies drops what the server sends, on every link, until
// DropReplies(false): requests still arrive and run.
func (p *faultProxy) DropReplies(on bool) { p.noReply.Store(on) }

// BlackHole silences every open link and every new one until Heal.
func (p *faultProxy) BlackHole() {
	p.holed.Store(true)
	p.mu.Lock()
	for _, l := range p.links {
		l.silent.Store(true)
	}
	p.mu.Unlock()
}

// Heal forwards new connections again; silenced links stay silent.
func (p *faultProxy) Heal() { p.holed.Store(false) }

// Close closes the listener and every link, and waits for its goroutines.
func (p *faultProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, l := range p.links {
		l.a.Close()
		if l.b != nil {
			l.b.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestBlackHole runs a store opened from configuration through a proxy
// that black-holes every connection, then heals with the old sockets left
// silent: while black-holed each call returns by its context's deadline
// (pool waits included) as unavailable; after the heal decisions go
// through again within seconds and the release listener comes back; Close
// returns within a second and leaves no goroutine behind.
func TestBlackHole(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	raw := testenv.PostgresURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	direct := pool(t, nil)
	leaks := append([]goleak.Option{goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/rate-sync/ratesync-go/pgstore_test.(*faultProxy).serve"),
		goleak.IgnoreAnyFunction("github.com/rate-sync/ratesync-go/pgstore_test.(*faultProxy).pipe"),
	}, leakOptions...)
	px := newFaultProxy(t, target)
	u.Host = px.Addr()
	schema := randomSchema()
	t.Cleanup(func() { direct.Exec(bg, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })

	cfg, err := ratesync.ParseConfig("fault.toml", []byte(`
[stores.db]
engine = "postgres"
url = "`+u.String()+`"
schema_name = "`+schema+`"
pool_max_size = 4
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.FromConfig(cfg.Stores[0])
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	pgstore.SetListenPing(s, 300*time.Millisecond)
	if err := s.Migrate(bg); err != nil {
		t.Fatal(err)
	}
	win := driver.Policy{Kind: driver.SlidingWindow, Limit: 1_000_000, Window: time.Minute}
	slot := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1000, LeaseTTL: time.Minute}
	decide := func(ctx context.Context, p driver.Policy) (driver.Result, error) {
		res := make([]driver.Result, 1)
		_, err := s.Decide(ctx, []driver.Check{{Key: driver.Key{Name: "k"}, Policy: p, Cost: 1}}, res)
		return res[0], err
	}
	released := make(chan struct{}, 100)
	unsub := s.SubscribeReleases(func(driver.Key) { released <- struct{}{} })
	defer unsub()
	// waitRelease takes and releases a lease until the listener delivers
	// one release (it may be reconnecting), within d.
	waitRelease := func(d time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < d {
			ctx, cancel := context.WithTimeout(bg, 250*time.Millisecond)
			r, err := decide(ctx, slot)
			if err == nil {
				s.Release(ctx, driver.Key{Name: "k"}, r.Lease)
			}
			cancel()
			select {
			case <-released:
				return time.Since(start)
			case <-time.After(50 * time.Millisecond):
			}
		}
		t.Fatalf("no release notification within %v", d)
		return 0
	}
	// Warm up: the pool opens its connections, the listener one of its own.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := decide(bg, win); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	waitRelease(5 * time.Second)

	px.BlackHole()
	const deadline, margin = 200 * time.Millisecond, 100 * time.Millisecond
	var slowest atomic.Int64
	for round := range 3 {
		// 8 at once on a pool of 4: half of them wait for a connection.
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(bg, deadline)
				defer cancel()
				start := time.Now()
				_, err := decide(ctx, win)
				el := time.Since(start)
				for {
					old := slowest.Load()
					if int64(el) <= old || slowest.CompareAndSwap(old, int64(el)) {
						break
					}
				}
				if err == nil || !driver.IsUnavailable(err) {
					t.Errorf("round %d: decision while black-holed: err %v, want an unavailable error", round, err)
				}
				if el > deadline+margin {
					t.Errorf("round %d: decision while black-holed returned after %v, deadline %v", round, el, deadline)
				}
			}()
		}
		wg.Wait()
	}
	for name, call := range map[string]func(ctx context.Context) error{
		"release": func(ctx context.Context) error { return s.Release(ctx, driver.Key{Name: "k"}, "x") },
		"peek": func(ctx context.Context) error {
			return s.Peek(ctx, []driver.Check{{Key: driver.Key{Name: "k"}, Policy: win, Cost: 1}}, make([]driver.Result, 1))
		},
		"ping": s.Ping,
	} {
		ctx, cancel := context.WithTimeout(bg, deadline)
		start := time.Now()
		err := call(ctx)
		cancel()
		if el := time.Since(start); err == nil || el > deadline+margin {
			t.Errorf("%s while black-holed: %v after %v", name, err, el)
		}
	}
	t.Logf("black-holed: 24 decisions (8 at a time, pool of 4) answered unavailable by their %v deadline, the slowest in %v", deadline, time.Duration(slowest.Load()).Round(time.Millisecond))

	px.Heal()
	healed := time.Now()
	attempts := 0
	for {
		attempts++
		ctx, cancel := context.WithTimeout(bg, deadline)
		_, err := decide(ctx, win)
		cancel()
		if err == nil {
			break
		}
		if time.Since(healed) > 5*time.Second {
			t.Fatalf("no decision within 5s of the heal (%d attempts), last error: %v", attempts, err)
		}
	}
	t.Logf("healed (old sockets silent): first decision after %v, attempt %d", time.Since(healed).Round(time.Millisecond), attempts)
	t.Logf("release listener back %v after the heal", (time.Since(healed) + waitRelease(10*time.Second)).Round(time.Millisecond))

	// Close, with the silenced sockets still open.
	px.BlackHole()
	for range 4 {
		go func() {
			ctx, cancel := context.WithTimeout(bg, 5*time.Second)
			defer cancel()
			decide(ctx, win) // in flight when Close comes
		}()
	}
	start := time.Now()
	s.Close()
	closed = true
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v while black-holed, want under 1s", el)
	} else {
		t.Logf("Close while black-holed: %v", el.Round(time.Millisecond))
	}
	if _, err := decide(bg, win); !errors.Is(err, pgstore.ErrClosed) || !driver.IsUnavailable(err) {
		t.Errorf("decision after Close: %v, want ErrClosed marked unavailable", err)
	}
	if err := goleak.Find(leaks...); err != nil {
		t.Errorf("goroutines left after Close: %v", err)
	}
}

// A decision whose answer is lost after the server granted its lease gives
// the lease back once the network lets it: the caller gave up, so nobody
// holds the slot.
func TestAbandonedLeaseReleased(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	raw := testenv.PostgresURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	direct := pool(t, nil)
	px := newFaultProxy(t, target)
	u.Host = px.Addr()
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // the release must open a connection of its own
	cfg.ConnConfig.ConnectTimeout = 300 * time.Millisecond
	proxied, err := pgxpool.NewWithConfig(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer proxied.Close()
	schema := randomSchema()
	s := storeIn(t, direct, schema) // to look, past the proxy
	s.Ping(bg)
	ps, err := pgstore.New(proxied, pgstore.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	slot := driver.Check{Key: driver.Key{Name: "slot"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Hour}, Cost: 1}
	res := make([]driver.Result, 1)
	remaining := func() int {
		t.Helper()
		if err := s.Peek(bg, []driver.Check{slot}, res); err != nil {
			t.Fatal(err)
		}
		return res[0].Remaining
	}
	// Prepare the statement on the one connection: then a decision is a
	// single message, which runs even though its answer is lost.
	warm := slot
	warm.Key = driver.Key{Name: "warm"}
	if _, err := ps.Decide(bg, []driver.Check{warm}, res); err != nil {
		t.Fatal(err)
	}
	px.DropReplies(true)
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	_, err = ps.Decide(ctx, []driver.Check{slot}, res)
	cancel()
	if err == nil {
		t.Fatal("decided with the replies dropped")
	}
	if r := remaining(); r != 0 {
		t.Fatalf("%d slots free after the lost answer: the server did not grant the lease, nothing to test", r)
	}
	time.Sleep(500 * time.Millisecond) // the outage lasts a while
	if r := remaining(); r != 0 {
		t.Fatalf("the lease was released while no reply could come back (%d free)", r)
	}
	px.DropReplies(false)
	healed := time.Now()
	for remaining() != 1 {
		if time.Since(healed) > 4*time.Second {
			t.Fatal("the abandoned lease still holds the slot 4s after the network came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the abandoned lease was given back %v after the network came back", time.Since(healed).Round(time.Millisecond))
}
