package redisstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go/driver"
)

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("ratesync/redisstore: store is closed")

// replyError is an error reply of the server for one decision of a batch
// (the batch script catches each decision's error on its own). It is a
// redis.Error, like the error replies go-redis returns.
type replyError string

func (e replyError) Error() string { return string(e) }

// RedisError marks replyError as a redis.Error.
func (replyError) RedisError() {}

// Server error replies that mean the server cannot answer anyone now: it
// is loading its data, a read-only replica, cut from its primary or its
// cluster, busy running a script, out of memory, unable to persist, or
// full of clients.
var unavailableReplies = []string{
	"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY",
	"NOREPLICAS", "OOM", "MISCONF", "ERR max number of clients reached",
}

// Server error replies that concern one request's keys or arguments only.
var badRequestReplies = []string{
	"WRONGTYPE", "ERR string exceeds maximum allowed size",
}

// classify marks err with its driver class: driver.Unavailable for a
// server or network that cannot answer now, driver.BadRequest for an error
// that only this request's keys cause. Context errors (the caller's, or a
// call timeout, which driver.IsUnavailable recognises) and other errors are
// returned as they are.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, driver.ErrUnavailable) || errors.Is(err, driver.ErrBadRequest) {
		return err
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range unavailableReplies {
			if strings.HasPrefix(msg, p) {
				return driver.Unavailable(err)
			}
		}
		for _, p := range badRequestReplies {
			if strings.HasPrefix(msg, p) {
				return driver.BadRequest(err)
			}
		}
		return err
	}
	var nerr net.Error
	switch {
	case errors.As(err, &nerr), // refused, reset, unreachable, timed out
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted):
		return driver.Unavailable(err)
	}
	return err
}
