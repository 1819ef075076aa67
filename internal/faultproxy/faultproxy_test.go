package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer is a loopback server that writes back what it reads.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	e := newEcho(t)
	p, err := New(e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and reads as many bytes back within d; it returns
// what came back and the read error.
func roundTrip(c net.Conn, msg string, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	n, err := io.ReadFull(c, buf)
	return string(buf[:n]), err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// closedByPeer waits up to d for c to be closed by the proxy.
func closedByPeer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func TestPassThrough(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if got, err := roundTrip(c, "hello", time.Second); got != "hello" || err != nil {
		t.Fatalf("round trip: %q, %v; want hello", got, err)
	}
}

func TestBlackHole(t *testing.T) {
	p := newProxy(t)
	open := dial(t, p)
	if _, err := roundTrip(open, "warm", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.BlackHole(); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(open, "ping", 200*time.Millisecond); !isTimeout(err) {
		t.Errorf("open connection while black-holed: %q, %v; want a read timeout", got, err)
	}
	fresh := dial(t, p) // accepted: a black hole does not refuse
	if got, err := roundTrip(fresh, "ping", 200*time.Millisecond); !isTimeout(err) {
		t.Errorf("new connection while black-holed: %q, %v; want a read timeout", got, err)
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if !closedByPeer(open, 2*time.Second) {
		t.Error("a silenced connection stayed open after Heal")
	}
	if got, err := roundTrip(dial(t, p), "back", time.Second); got != "back" || err != nil {
		t.Errorf("after Heal: %q, %v; want back", got, err)
	}
}

func TestLatency(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := p.Latency(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got, err := roundTrip(c, "slow", 2*time.Second); got != "slow" || err != nil {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("round trip with +200ms latency took %v", el)
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if got, err := roundTrip(c, "fast", 2*time.Second); got != "fast" || err != nil {
		t.Fatalf("after Heal: %q, %v", got, err)
	}
	if el := time.Since(start); el >= 200*time.Millisecond {
		t.Errorf("round trip after Heal took %v", el)
	}
}

func TestRefuse(t *testing.T) {
	p := newProxy(t)
	addr := p.Addr()
	open := dial(t, p)
	if _, err := roundTrip(open, "warm", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Refuse(); err != nil {
		t.Fatal(err)
	}
	if !closedByPeer(open, 2*time.Second) {
		t.Error("an open connection stayed open when the proxy refused")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("dial while refused: %v; want connection refused", err)
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Errorf("address after Heal %s, want %s", p.Addr(), addr)
	}
	if got, err := roundTrip(dial(t, p), "back", time.Second); got != "back" || err != nil {
		t.Errorf("after Heal: %q, %v; want back", got, err)
	}
}

func TestResetMidReply(t *testing.T) {
	p := newProxy(t)
	open := dial(t, p)
	if _, err := roundTrip(open, "warm", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.ResetMidReply(3); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"open": open, "new": dial(t, p)} {
		got, err := roundTrip(c, "0123456789", 2*time.Second)
		if got != "012" || !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s connection: %q, %v; want \"012\" then the connection closed", name, got, err)
		}
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(dial(t, p), "0123456789", time.Second); got != "0123456789" || err != nil {
		t.Errorf("after Heal: %q, %v", got, err)
	}
	if err := p.ResetMidReply(0); err == nil {
		t.Error("ResetMidReply(0) accepted")
	}
}

// Faults of several kinds can be in place together, and Heal removes them
// all; a closed proxy refuses faults.
func TestHealAll(t *testing.T) {
	p := newProxy(t)
	if err := p.Latency(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := p.BlackHole(); err != nil {
		t.Fatal(err)
	}
	if err := p.Refuse(); err != nil {
		t.Fatal(err)
	}
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got, err := roundTrip(dial(t, p), "ok", time.Second); got != "ok" || err != nil || time.Since(start) >= 300*time.Millisecond {
		t.Errorf("after Heal: %q, %v in %v", got, err, time.Since(start))
	}
	p.Close()
	if err := p.BlackHole(); err == nil {
		t.Error("BlackHole on a closed proxy: no error")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("a closed proxy accepted a connection")
	}
}

// Faults come and go under traffic on many connections, and after Close
// no goroutine is left: each belongs to a connection or the listener.
// (Toxiproxy left a stage of 9 of 20 such connections blocked for good.)
func TestNoGoroutineLeftUnderTraffic(t *testing.T) {
	snap := goleak.IgnoreCurrent()
	e := newEcho(t)
	p, err := New(e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 20 {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := roundTrip(c, "warm", time.Second); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(2)
		go func() { // writes until the proxy closes the connection
			defer wg.Done()
			for {
				if _, err := c.Write([]byte("xxxxxxxx")); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
	for _, fault := range []func() error{func() error { return p.Latency(time.Millisecond) }, func() error { return p.ResetMidReply(1 << 20) }, p.BlackHole} {
		if err := fault(); err != nil {
			t.Fatal(err)
		}
		if err := p.Heal(); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	wg.Wait()
	e.ln.Close()
	if err := goleak.Find(snap, goleak.IgnoreAnyFunction("github.com/rate-sync/ratesync-go/internal/faultproxy.newEcho.func1"),
		goleak.IgnoreAnyFunction("github.com/rate-sync/ratesync-go/internal/faultproxy.newEcho.func1.1")); err != nil {
		t.Error(err)
	}
}
