package redisstore

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Client is the part of a go-redis v9 client the store uses.
// *redis.Client (including the Sentinel failover client),
// *redis.ClusterClient, *redis.Ring and redis.UniversalClient satisfy it,
// as do wrappers of them. Scripts run through Process: a decision is sent
// as a command that go-redis does not retry (see onceCmd), since a retry
// after a late or lost reply would run it twice.
//
// The store finds out whether the keys of a decision may live on
// different servers by what the client can do, not by its type: a client
// with ForEachMaster (Cluster) or ForEachShard (Ring), such as a wrapper
// that embeds one, is sharded from the start, and a client whose server
// answers CROSSSLOT (a Cluster behind a wrapper that hides those methods)
// is sharded from that answer on. ResetAll reaches every node only through
// ForEachMaster or ForEachShard.
type Client interface {
	Process(ctx context.Context, cmd redis.Cmder) error
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	Unlink(ctx context.Context, keys ...string) *redis.IntCmd
	Ping(ctx context.Context) *redis.StatusCmd
}

// primaries is implemented by *redis.ClusterClient (and wrappers that
// embed it): the primaries hold every key.
type primaries interface {
	ForEachMaster(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error
}

// shards is implemented by *redis.ClusterClient and *redis.Ring (and
// wrappers that embed them).
type shards interface {
	ForEachShard(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error
}

// isSharded reports whether c says that keys may live on several servers.
func isSharded(c Client) bool {
	_, p := c.(primaries)
	_, sh := c.(shards)
	return p || sh
}

// isCrossSlot reports whether err is a Cluster's refusal of a call whose
// keys are in different slots: the call did not run.
func isCrossSlot(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "CROSSSLOT")
}

// scanDeleteAll deletes the keys that match on every server of c.
func scanDeleteAll(ctx context.Context, c Client, match string) error {
	each := func(ctx context.Context, n *redis.Client) error { return scanDelete(ctx, n, match) }
	switch c := c.(type) {
	case primaries:
		return c.ForEachMaster(ctx, each)
	case shards:
		return c.ForEachShard(ctx, each)
	}
	return scanDelete(ctx, c, match)
}

type scanner interface {
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	Unlink(ctx context.Context, keys ...string) *redis.IntCmd
}

func scanDelete(ctx context.Context, c scanner, match string) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return err
		}
		// On Cluster, one UNLINK per key: keys of one batch may hash to
		// different slots.
		for _, k := range keys {
			if err := c.Unlink(ctx, k).Err(); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// honoursDeadlines reports whether c cuts a call at its context's deadline.
func honoursDeadlines(c Client) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}
