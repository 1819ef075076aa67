package pgstore

import (
	"context"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/internal/testenv"
)

// The owned pool's connections carry TCP keepalive and the TCP user
// timeout, and closeAll cuts them.
func TestDialerSocketOptions(t *testing.T) {
	u, err := url.Parse(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	d := newDialer(10*time.Second, 7*time.Second, time.Second)
	c, err := d.DialContext(context.Background(), "tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.(*trackedConn).Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	get := func(level, opt int) int {
		var v int
		var gerr error
		raw.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), level, opt) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		return v
	}
	if v := get(syscall.IPPROTO_TCP, tcpUserTimeout); v != 7000 {
		t.Errorf("TCP_USER_TIMEOUT = %d ms, want 7000", v)
	}
	if v := get(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); v != 1 {
		t.Errorf("SO_KEEPALIVE = %d, want 1", v)
	}
	if v := get(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE); v != 10 {
		t.Errorf("TCP_KEEPIDLE = %d s, want 10", v)
	}
	d.closeAll()
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after closeAll: %v, want the connection closed", err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", u.Host); err == nil {
		t.Fatal("dialed after closeAll")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
