package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// dialer opens the connections of a pool the store owns: with TCP
// keepalive and a TCP user timeout, so that a dead peer is noticed, and
// with every connection tracked, so that Close can cut them all at once,
// whatever the network does (a pool's own Close waits on connections that
// a silent network may hold for many seconds).
type dialer struct {
	net.Dialer
	cancelBound time.Duration // how long a cancel request may wait for the server

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
	ctx    context.Context // cancelled by closeAll: aborts dials in progress
	cancel context.CancelFunc
}

// newDialer returns a dialer with TCP keepalive probes every keepalive
// (none when 0) and, on Linux, unacknowledged data allowed for at most
// userTimeout (the system default when 0); a cancel request waits at most
// cancelBound for the server.
func newDialer(keepalive, userTimeout, cancelBound time.Duration) *dialer {
	d := &dialer{conns: map[*trackedConn]struct{}{}, cancelBound: cancelBound}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if keepalive > 0 {
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: keepalive, Interval: keepalive, Count: 3}
	} else {
		d.KeepAlive = -1
	}
	if userTimeout > 0 {
		ms := int(userTimeout / time.Millisecond)
		d.Control = func(network, _ string, c syscall.RawConn) error {
			if network != "tcp" && network != "tcp4" && network != "tcp6" {
				return nil
			}
			var serr error
			if err := c.Control(func(fd uintptr) { serr = setUserTimeout(fd, ms) }); err != nil {
				return err
			}
			return serr
		}
	}
	return d
}

var errDialerClosed = errors.New("ratesync/pgstore: store is closed")

// DialContext dials addr; the dial ends when ctx is done or the dialer is
// closed.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		if d.ctx.Err() != nil {
			return nil, errDialerClosed
		}
		return nil, err
	}
	tc := &trackedConn{Conn: c, d: d}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		c.Close()
		return nil, errDialerClosed
	}
	d.conns[tc] = struct{}{}
	d.mu.Unlock()
	return tc, nil
}

// closeAll closes every connection and refuses new ones.
func (d *dialer) closeAll() {
	d.cancel()
	d.mu.Lock()
	d.closed = true
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// trackedConn is a connection the dialer can close.
type trackedConn struct {
	net.Conn
	d     *dialer
	wrote atomic.Bool
}

// Write writes b. When b is the connection's first message and a
// PostgreSQL CancelRequest (pgx sends one on a new connection whenever a
// call is abandoned), the connection gets a deadline of cancelBound: the
// server answers a cancel request by closing the connection, and on a
// silent network pgx would wait 15 s for that, holding a pool slot all
// along. (A cancel request sent over TLS cannot be recognised, and keeps
// pgx's bound.)
func (c *trackedConn) Write(b []byte) (int, error) {
	if !c.wrote.Swap(true) && len(b) == 16 &&
		binary.BigEndian.Uint32(b) == 16 && binary.BigEndian.Uint32(b[4:]) == cancelRequestCode {
		c.Conn.SetDeadline(time.Now().Add(c.d.cancelBound))
	}
	return c.Conn.Write(b)
}

// cancelRequestCode identifies a CancelRequest message (PostgreSQL
// frontend/backend protocol).
const cancelRequestCode = 80877102

// closeRaw closes the network connection under c, beneath any TLS layer.
func closeRaw(c net.Conn) {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	c.Close()
}

// Close closes the connection and forgets it.
func (c *trackedConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}
