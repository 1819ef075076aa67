package pgstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rate-sync/ratesync-go/driver"
)

// classify marks err with its driver class: driver.ErrUnavailable when
// the server cannot be reached or cannot answer now, driver.ErrBadRequest
// when this one request's input cannot be decided (which the byte keys
// make impossible for keys), unmarked otherwise (internal). A cancelled
// caller is left as it is: it says nothing about the store.
func classify(err error) error {
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return err
	case unavailable(err):
		return driver.Unavailable(err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && badRequest(pe.Code) {
		return driver.BadRequest(err)
	}
	return err
}

// unavailable reports whether err means the server cannot answer now.
func unavailable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true // no connection: refused, timed out, or the server turned it away
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return unavailableCode(pe.Code)
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne), // any network error: timeouts, refused, reset
		pgconn.Timeout(err),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, ErrClosed):
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == "closed pool" { // puddle.ErrClosedPool: the pool was closed under the call
			return true
		}
	}
	return false
}

// unavailableCode reports whether a SQLSTATE says the server cannot
// answer now: connection exceptions (08), insufficient resources (53:
// too many connections, disk full, out of memory), admin or crash
// shutdown and cannot-connect-now (57P01-57P03), a statement cancelled by
// statement_timeout (57014), a lock not available in time (55P03), a
// read-only server, such as a standby after a failover (25006), and
// system errors (58).
func unavailableCode(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"), strings.HasPrefix(code, "58"):
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "57014", "55P03", "25006":
		return true
	}
	return false
}

// badRequest reports whether a SQLSTATE says this request's input cannot
// be decided: a data exception (22: bytes the encoding rejects, a number
// out of range) or a program limit (54: an index row too large).
func badRequest(code string) bool {
	return strings.HasPrefix(code, "22") || strings.HasPrefix(code, "54")
}
