package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go/driver"
)

func TestClassify(t *testing.T) {
	// Real errors where they are cheap to get: a refused connection and a
	// closed pool.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cfg, err := pgxpool.ParseConfig("postgres://u@" + addr + "/db?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, refused := p.Exec(context.Background(), "SELECT 1")
	p.Close()
	_, closedPool := p.Acquire(context.Background())
	if refused == nil || closedPool == nil {
		t.Fatalf("want errors, got %v and %v", refused, closedPool)
	}
	pg := func(code string) error { return fmt.Errorf("decide: %w", &pgconn.PgError{Code: code, Message: "m"}) }
	const (
		unavailable = "unavailable"
		bad         = "bad request"
		internal    = "internal"
		canceled    = "canceled"
	)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"connection refused", refused, unavailable},
		{"closed pool", closedPool, unavailable},
		{"store closed", ErrClosed, unavailable},
		{"ECONNREFUSED", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, unavailable},
		{"ECONNRESET", fmt.Errorf("read: %w", syscall.ECONNRESET), unavailable},
		{"EPIPE", fmt.Errorf("write: %w", syscall.EPIPE), unavailable},
		{"EOF", fmt.Errorf("receive: %w", io.EOF), unavailable},
		{"unexpected EOF", io.ErrUnexpectedEOF, unavailable},
		{"net timeout", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, unavailable},
		{"conn closed", fmt.Errorf("x: %w", pgconn.ErrConnClosed), unavailable},
		{"net.ErrClosed", net.ErrClosed, unavailable},
		{"deadline", fmt.Errorf("decide: %w", context.DeadlineExceeded), unavailable},
		{"admin shutdown 57P01", pg("57P01"), unavailable},
		{"crash shutdown 57P02", pg("57P02"), unavailable},
		{"cannot connect now 57P03", pg("57P03"), unavailable},
		{"too many connections 53300", pg("53300"), unavailable},
		{"out of memory 53200", pg("53200"), unavailable},
		{"connection failure 08006", pg("08006"), unavailable},
		{"connection exception 08000", pg("08000"), unavailable},
		{"read only 25006", pg("25006"), unavailable},
		{"statement timeout 57014", pg("57014"), unavailable},
		{"lock timeout 55P03", pg("55P03"), unavailable},
		{"io error 58030", pg("58030"), unavailable},
		{"invalid byte sequence 22021", pg("22021"), bad},
		{"out of range 22003", pg("22003"), bad},
		{"index row too big 54000", pg("54000"), bad},
		{"undefined table 42P01", pg("42P01"), internal},
		{"syntax error 42601", pg("42601"), internal},
		{"unique violation 23505", pg("23505"), internal},
		{"plain error", errors.New("decide returned 3 values"), internal},
		{"canceled", fmt.Errorf("decide: %w", context.Canceled), canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.err)
			class := internal
			switch {
			case errors.Is(got, context.Canceled):
				class = canceled
				if driver.IsUnavailable(got) {
					t.Errorf("a cancelled call counts as unavailable: %v", got)
				}
			case errors.Is(got, driver.ErrUnavailable):
				class = unavailable
			case errors.Is(got, driver.ErrBadRequest):
				class = bad
			}
			if class != tt.want {
				t.Errorf("classify(%v) = %v: class %s, want %s", tt.err, got, class, tt.want)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("classify(%v) = %v lost the cause", tt.err, got)
			}
			if (class == unavailable) != driver.IsUnavailable(got) {
				t.Errorf("driver.IsUnavailable(%v) = %v", got, driver.IsUnavailable(got))
			}
		})
	}
}
