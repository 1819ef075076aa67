package redisstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/testenv"
)

type countDone struct{ n *atomic.Int64 }

func (c countDone) DecideDone(bool, error) { c.n.Add(1) }

// Found by a review (finding C) of the asynchronous decisions. DecideAsync checks s.closed, then sends the call to
// s.queue; Close may stop the workers and drain the queue in between (or a
// goroutine waiting for room picks "s.queue <- c" over "<-s.stop" once the
// drain made room). The call then sits in the queue forever: DecideDone is
// never called, against AsyncDecider's "exactly once".
func TestReviewDecideAsyncLostAtClose(t *testing.T) {
	url := testenv.RedisURL(t)
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	defer c.Close()
	prefix := fmt.Sprintf("rv2-%d", rand.Int64())
	defer func() {
		keys, _ := c.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(context.Background(), keys...)
		}
	}()
	for trial := range 40 {
		s, err := New(c, WithKeyPrefix(prefix), WithBatching(1, 1))
		if err != nil {
			t.Fatal(err)
		}
		var started, done atomic.Int64
		var wg sync.WaitGroup
		stopSpam := make(chan struct{})
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stopSpam:
						return
					default:
					}
					k := driver.Key{Name: "k", ID: fmt.Sprint(g, "-", i%50)}
					checks := []driver.Check{{Key: k, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1e6, Burst: 1e6}, Cost: 1}}
					started.Add(1)
					s.DecideAsync(context.Background(), time.Time{}, checks, make([]driver.Result, 1), countDone{&done})
				}
			}()
		}
		time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
		s.Close()
		time.Sleep(time.Millisecond)
		close(stopSpam)
		wg.Wait()
		deadline := time.Now().Add(3 * time.Second)
		for done.Load() != started.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if d, st := done.Load(), started.Load(); d != st {
			t.Fatalf("trial %d: %d DecideAsync calls, %d DecideDone calls: %d decisions never ended", trial, st, d, st-d)
		}
	}
}
