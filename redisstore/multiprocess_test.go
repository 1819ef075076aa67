package redisstore_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/redisstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

// redisHolders counts lease holders in Redis, for the test: prefix:holders
// is the current count, prefix:maxholders the highest seen.
type redisHolders struct {
	c      *redis.Client
	prefix string
}

var holdScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n`)

func (h redisHolders) Enter(ctx context.Context) error {
	return holdScript.Run(ctx, h.c, []string{h.prefix + ":holders", h.prefix + ":maxholders"}).Err()
}

func (h redisHolders) Leave(ctx context.Context) error {
	return h.c.Decr(ctx, h.prefix+":holders").Err()
}

func (h redisHolders) Peak(ctx context.Context) (int, error) {
	return h.c.Get(ctx, h.prefix+":maxholders").Int()
}

var hammer = storetest.MultiProcessOptions{
	ChildTest: "TestHammerChild",
	Namespace: func(t *testing.T) string {
		c := client(t)
		prefix := randomPrefix(t)
		t.Cleanup(func() {
			s, _ := redisstore.New(c, redisstore.WithKeyPrefix(prefix))
			s.ResetAll(bg)
			s.Close()
			c.Del(bg, prefix+":holders", prefix+":maxholders")
		})
		return prefix
	},
	Open: func(t *testing.T, prefix string) driver.Store {
		s, err := redisstore.New(client(t), redisstore.WithKeyPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
	Holders: func(t *testing.T, prefix string) storetest.Holders { return redisHolders{client(t), prefix} },
}

// TestMultiProcessAccuracy runs 4 OS processes of 32 goroutines each on one
// key per policy (storetest.MultiProcess): never above the exact bound, and
// never more holders (counted in Redis by the test) than max_concurrent.
func TestMultiProcessAccuracy(t *testing.T) { storetest.MultiProcess(t, hammer) }

// TestHammerChild is one process of TestMultiProcessAccuracy.
func TestHammerChild(t *testing.T) { storetest.MultiProcessChild(t, hammer) }

// TestReloadUnderLoad rewrites the configuration that 4 processes of 32
// goroutines follow every 200 ms for 10 s (storetest.ReloadUnderLoad).
func TestReloadUnderLoad(t *testing.T) { storetest.ReloadUnderLoad(t, hammer) }
