package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go/driver"
)

// netErr returns the error of a PING to a server that behaves as serve
// says, through a go-redis client that does not retry.
func netErr(t *testing.T, serve func(net.Conn)) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if serve == nil {
		l.Close() // nothing listens: connection refused
	} else {
		done := make(chan struct{})
		t.Cleanup(func() { l.Close(); <-done })
		go func() {
			defer close(done)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				serve(c)
			}
		}()
	}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, Protocol: 2,
		DialTimeout: time.Second, ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
	defer c.Close()
	return c.Ping(context.Background()).Err()
}

func TestClassify(t *testing.T) {
	var silent []net.Conn
	t.Cleanup(func() {
		for _, c := range silent {
			c.Close()
		}
	})
	closed := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	closed.Close()
	const (
		unavailable = "unavailable"
		badRequest  = "bad request"
		other       = "other"
	)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"connection refused", netErr(t, nil), unavailable},
		{"connection closed by the server", netErr(t, func(c net.Conn) { c.Close() }), unavailable},
		{"read timeout", netErr(t, func(c net.Conn) { silent = append(silent, c) }), unavailable},
		{"client closed", closed.Ping(context.Background()).Err(), unavailable},
		{"pool timeout", fmt.Errorf("wrapped: %w", redis.ErrPoolTimeout), unavailable},
		{"EOF", io.EOF, unavailable},
		{"unexpected EOF", io.ErrUnexpectedEOF, unavailable},
		{"LOADING", replyError("LOADING Redis is loading the dataset in memory"), unavailable},
		{"READONLY", replyError("READONLY You can't write against a read only replica."), unavailable},
		{"MASTERDOWN", replyError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), unavailable},
		{"CLUSTERDOWN", replyError("CLUSTERDOWN The cluster is down"), unavailable},
		{"TRYAGAIN", replyError("TRYAGAIN Multiple keys request during rehashing of slot"), unavailable},
		{"BUSY", replyError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), unavailable},
		{"OOM", replyError("OOM command not allowed when used memory > 'maxmemory'."), unavailable},
		{"MISCONF", replyError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."), unavailable},
		{"max clients", replyError("ERR max number of clients reached"), unavailable},
		{"WRONGTYPE", replyError("WRONGTYPE Operation against a key holding the wrong kind of value"), badRequest},
		{"value too large", replyError("ERR string exceeds maximum allowed size (proto-max-bulk-len)"), badRequest},
		{"script error", replyError("ERR user_script:1: Script attempted to access nonexistent global variable 'x'"), other},
		{"NOSCRIPT", redis.ErrNoScript, other},
		{"CROSSSLOT", redis.ErrCrossSlot, other},
		{"store closed", ErrClosed, other},
		{"cancelled", context.Canceled, other},
		{"unexpected reply", errors.New("ratesync/redisstore: unexpected script reply"), other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error to classify")
			}
			got := classify(tt.err)
			if !errors.Is(got, tt.err) {
				t.Fatalf("classify(%v) = %v: the cause is lost", tt.err, got)
			}
			class := other
			switch {
			case errors.Is(got, driver.ErrUnavailable):
				class = unavailable
			case errors.Is(got, driver.ErrBadRequest):
				class = badRequest
			}
			if class != tt.want {
				t.Fatalf("classify(%q) is %s, want %s", tt.err, class, tt.want)
			}
			if driver.IsUnavailable(got) != (tt.want == unavailable) {
				t.Fatalf("driver.IsUnavailable(classify(%q)) = %v", tt.err, driver.IsUnavailable(got))
			}
		})
	}
	// A deadline is unavailability as it is: driver.IsUnavailable says so.
	if got := classify(context.DeadlineExceeded); got != context.DeadlineExceeded || !driver.IsUnavailable(got) {
		t.Fatalf("classify(DeadlineExceeded) = %v", got)
	}
	if classify(nil) != nil {
		t.Fatal("classify(nil) != nil")
	}
}
