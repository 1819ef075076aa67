// Package faultproxy is a loopback TCP proxy for tests that puts faults
// between a client and a real server: a black hole, added latency, refused
// connections, connections reset in the middle of a reply.
//
// A test points its client at Addr instead of the server, and calls one
// fault method at a time, then Heal:
//
//	p, err := faultproxy.New("127.0.0.1:6379")
//	...
//	defer p.Close()
//	p.BlackHole()
//	// calls through p.Addr() get no answer
//	p.Heal()
//
// It is a proxy of its own rather than Shopify's toxiproxy embedded as a
// library: toxiproxy leaks goroutines when a fault is removed (its
// RemoveToxic returns early for the timeout toxic, leaving the previous
// stage blocked on a send; limit_data and reset_peer stop reading), which
// the fault suite's leak checks would blame on the store under test. Here
// every goroutine belongs to one connection or to the listener, and Close
// waits for all of them.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/goleak"
)

// Proxy forwards connections from a free loopback port to one server and
// injects faults on them. The zero value is not usable; create one with
// New. A Proxy is safe for concurrent use.
type Proxy struct {
	upstream string
	addr     string
	latency  atomic.Int64 // added to what the server sends, in ns

	mu     sync.Mutex
	ln     net.Listener // nil while refusing, and once closed
	links  map[*link]struct{}
	hole   bool  // new connections are silent
	cut    int64 // bytes of reply each connection passes before its reset; 0 for none
	closed bool
	wg     sync.WaitGroup // every goroutine of the proxy
}

var errClosed = errors.New("faultproxy: proxy is closed")

// New starts a proxy to upstream (host:port) on a free port of 127.0.0.1.
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	p := &Proxy{upstream: upstream, addr: ln.Addr().String(), links: map[*link]struct{}{}}
	p.mu.Lock()
	p.serve(ln)
	p.mu.Unlock()
	return p, nil
}

// Addr returns the proxy's address (127.0.0.1:port), the same across
// faults.
func (p *Proxy) Addr() string { return p.addr }

// BlackHole makes the network silent: every open connection and every new
// one stays open (the proxy accepts it and reads what it is sent) but
// nothing passes in either direction, so calls wait for their own
// timeouts. Heal closes the silenced connections.
func (p *Proxy) BlackHole() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	p.hole = true
	for l := range p.links {
		l.silent.Store(true)
	}
	return nil
}

// Latency delays everything the server sends by d, on open and new
// connections, in order.
func (p *Proxy) Latency(d time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	p.latency.Store(int64(d))
	return nil
}

// ResetMidReply resets every connection, open or new, once the server has
// sent n more bytes on it: the client receives the first n bytes of the
// reply in flight, then a TCP reset. n must be at least 1; a few bytes cut
// any reply of Redis or PostgreSQL, and a new connection's handshake.
func (p *Proxy) ResetMidReply(n int) error {
	if n < 1 {
		return fmt.Errorf("faultproxy: ResetMidReply(%d): n must be at least 1", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	p.cut = int64(n)
	for l := range p.links {
		l.cutLeft.Store(int64(n))
	}
	return nil
}

// Refuse closes the listening port and every open connection: new
// connections are refused (nothing listens) until Heal.
func (p *Proxy) Refuse() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errClosed
	}
	ln := p.ln
	p.ln = nil
	links := p.all(func(*link) bool { return true })
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, l := range links {
		l.close()
	}
	return nil
}

// Heal removes every fault: the latency goes, connections a black hole
// silenced are closed (what was sent into the hole is lost), the others
// stop being reset, and the port listens again at the same address.
func (p *Proxy) Heal() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errClosed
	}
	p.latency.Store(0)
	p.hole, p.cut = false, 0
	for l := range p.links {
		l.cutLeft.Store(-1)
	}
	silent := p.all(func(l *link) bool { return l.silent.Load() })
	var err error
	if p.ln == nil {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
		} else {
			err = fmt.Errorf("faultproxy: heal: listen again on %s: %w", p.addr, err)
		}
	}
	p.mu.Unlock()
	for _, l := range silent {
		l.close()
	}
	return err
}

// Close stops the proxy, closes its connections and waits for its
// goroutines. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ln := p.ln
	p.ln = nil
	links := p.all(func(*link) bool { return true })
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return nil
}

// LeakOptions returns goleak options that ignore the proxy's listening
// goroutine, for leak checks made while a Proxy runs: it is a new
// goroutine after each Refuse and Heal, so goleak.IgnoreCurrent alone does
// not cover it. The goroutines of a connection end when its client closes
// it.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreAnyFunction("github.com/rate-sync/ratesync-go/internal/faultproxy.(*Proxy).accept")}
}

// all returns the links that match; p.mu is held.
func (p *Proxy) all(match func(*link) bool) []*link {
	var out []*link
	for l := range p.links {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}

// serve accepts connections on ln; p.mu is held.
func (p *Proxy) serve(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Refuse or Close
		}
		p.open(ln, c)
	}
}

// open links a client accepted on ln to the server: a connection accepted
// into a black hole is never forwarded, and one the server refuses is
// closed.
func (p *Proxy) open(ln net.Listener, client net.Conn) {
	p.mu.Lock()
	hole := p.hole
	p.mu.Unlock()
	var server net.Conn
	if !hole {
		s, err := net.DialTimeout("tcp", p.upstream, time.Second)
		if err != nil {
			client.Close()
			return
		}
		server = s
	}
	l := &link{p: p, client: client, server: server, done: make(chan struct{})}
	l.cutLeft.Store(-1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != ln { // refused or closed meanwhile
		client.Close()
		if server != nil {
			server.Close()
		}
		return
	}
	l.silent.Store(p.hole || server == nil)
	if p.cut > 0 {
		l.cutLeft.Store(p.cut)
	}
	p.links[l] = struct{}{}
	if server == nil {
		p.wg.Add(1)
		go l.drain()
		return
	}
	up, down := make(chan chunk, 64), make(chan chunk, 64)
	p.wg.Add(4)
	go l.read(client, up)
	go l.write(up, server, false)
	go l.read(server, down)
	go l.write(down, client, true)
}

// link is one client connection and its connection to the server (nil
// when it was accepted into a black hole).
type link struct {
	p              *Proxy
	client, server net.Conn
	silent         atomic.Bool  // black-holed: what either side sends is dropped
	cutLeft        atomic.Int64 // reply bytes left before the reset; -1 for no reset
	done           chan struct{}
	once           sync.Once
}

type chunk struct {
	b  []byte
	at time.Time // when it was read
}

// close closes both connections and ends the link's goroutines.
func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		if l.server != nil {
			l.server.Close()
		}
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	})
}

// reset closes the link with a TCP reset to the client.
func (l *link) reset() {
	if tc, ok := l.client.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	l.close()
}

// drain reads and drops what a client accepted into a black hole sends.
func (l *link) drain() {
	defer l.p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		if _, err := l.client.Read(buf); err != nil {
			l.close()
			return
		}
	}
}

// read passes what src sends to the writer, stamped with its arrival.
func (l *link) read(src net.Conn, out chan<- chunk) {
	defer l.p.wg.Done()
	defer close(out)
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case out <- chunk{buf[:n], time.Now()}:
			case <-l.done:
				return
			}
		}
		if err != nil {
			l.close()
			return
		}
	}
}

// write sends what the reader passes to dst, applying the faults: the
// black hole drops it, and on what the server sends (reply), the latency
// delays it and the reset cuts it.
func (l *link) write(in <-chan chunk, dst net.Conn, reply bool) {
	defer l.p.wg.Done()
	var timer *time.Timer
	for {
		var c chunk
		select {
		case next, ok := <-in:
			if !ok {
				return // the reader ended, and closed the link
			}
			c = next
		case <-l.done:
			return
		}
		if reply {
			if wait := time.Until(c.at.Add(time.Duration(l.p.latency.Load()))); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
					defer timer.Stop()
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-l.done:
					return
				}
			}
		}
		if l.silent.Load() {
			continue
		}
		b := c.b
		cut := false
		if reply {
			if left := l.cutLeft.Load(); left >= 0 && int64(len(b)) >= left {
				b, cut = b[:left], true
			} else if left >= 0 {
				l.cutLeft.Add(-int64(len(b)))
			}
		}
		if _, err := dst.Write(b); err != nil {
			l.close()
			return
		}
		if cut {
			l.reset()
			return
		}
	}
}
