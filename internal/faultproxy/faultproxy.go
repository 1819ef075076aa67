// Package faultproxy is a loopback TCP proxy for tests that puts faults
// between a client and a real server: a black hole, added latency, refused
// connections, connections cut in the middle of a reply. It embeds
// Shopify's toxiproxy as a library (the only package that imports it); no
// HTTP API is served and nothing is logged.
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
package faultproxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// Proxy forwards connections from a free loopback port to one server and
// injects faults on them. The zero value is not usable; create one with
// New. A Proxy is safe for concurrent use.
type Proxy struct {
	mu      sync.Mutex
	p       *toxiproxy.Proxy
	toxics  []string // names of the toxics in place
	refused bool
	closed  bool
}

// New starts a proxy to upstream (host:port) on a free port of 127.0.0.1.
func New(upstream string) (*Proxy, error) {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "faultproxy", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("faultproxy: start: %w", err)
	}
	return &Proxy{p: p}, nil
}

// Addr returns the proxy's address (127.0.0.1:port), which stays the same
// across faults.
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.p.Listen
}

// BlackHole makes the network silent: every open connection and every new
// one stays open (the proxy accepts it and acknowledges what it is sent)
// but nothing passes in either direction, so calls wait for their own
// timeouts. Heal closes the silenced connections.
func (p *Proxy) BlackHole() error {
	return p.add(
		toxic{"blackhole_up", "timeout", "upstream", `{"timeout":0}`},
		toxic{"blackhole_down", "timeout", "downstream", `{"timeout":0}`},
	)
}

// Latency delays everything the server sends by d, on open and new
// connections.
func (p *Proxy) Latency(d time.Duration) error {
	return p.add(toxic{"latency", "latency", "downstream", fmt.Sprintf(`{"latency":%d}`, d.Milliseconds())})
}

// ResetMidReply cuts every connection, open or new, after the server has
// sent n more bytes on it: a reply in flight arrives truncated, then the
// connection is closed. n must be at least 1; a few bytes cut any reply of
// Redis or PostgreSQL, and a new connection's handshake.
func (p *Proxy) ResetMidReply(n int) error {
	if n < 1 {
		return fmt.Errorf("faultproxy: ResetMidReply(%d): n must be at least 1", n)
	}
	return p.add(toxic{"reset_mid_reply", "limit_data", "downstream", fmt.Sprintf(`{"bytes":%d}`, n)})
}

// Refuse closes the listening port and every open connection: new
// connections are refused (nothing listens) until Heal.
func (p *Proxy) Refuse() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	if !p.refused {
		p.p.Stop()
		p.refused = true
	}
	return nil
}

// Heal removes every fault: the toxics go (the connections they silenced
// or cut are closed; the others carry on) and the port listens again, at
// the same address.
func (p *Proxy) Heal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	var errs []string
	for _, name := range p.toxics {
		if err := p.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
			errs = append(errs, name+": "+err.Error())
		}
	}
	p.toxics = nil
	if p.refused {
		if err := p.p.Start(); err != nil {
			errs = append(errs, "listen again on "+p.p.Listen+": "+err.Error())
		} else {
			p.refused = false
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("faultproxy: heal: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Close stops the proxy and closes its connections. It is safe to call
// more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.p.Toxics.ResetToxics(context.Background())
	p.toxics = nil
	p.p.Stop()
	return nil
}

var errClosed = fmt.Errorf("faultproxy: proxy is closed")

// toxic is one toxiproxy toxic: a name, a type, the direction it acts on
// ("upstream": what the client sends; "downstream": what the server sends)
// and its attributes as JSON.
type toxic struct{ name, kind, stream, attrs string }

// add puts toxics in place, after the faults already there.
func (p *Proxy) add(ts ...toxic) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	for _, t := range ts {
		js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, t.name, t.kind, t.stream, t.attrs)
		if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			return fmt.Errorf("faultproxy: %s: %w", t.name, err)
		}
		p.toxics = append(p.toxics, t.name)
	}
	return nil
}

// LeakOptions returns goleak options that ignore the proxy's own
// goroutines (its accept loop and the pipes of its connections), for leak
// checks made while a Proxy runs. The accept loop is a new goroutine after
// each Refuse and Heal, so goleak.IgnoreCurrent alone does not cover it.
func LeakOptions() []goleak.Option {
	var opts []goleak.Option
	for _, fn := range []string{
		"github.com/Shopify/toxiproxy/v2.(*Proxy).server",
		"github.com/Shopify/toxiproxy/v2.(*Proxy).freeBlocker",
		"github.com/Shopify/toxiproxy/v2.(*ToxicLink).read",
		"github.com/Shopify/toxiproxy/v2.(*ToxicLink).write",
		"github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run",
	} {
		opts = append(opts, goleak.IgnoreAnyFunction(fn))
	}
	return opts
}
