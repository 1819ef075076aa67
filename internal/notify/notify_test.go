package notify

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/rate-sync/ratesync-go/driver"
)

func TestHub(t *testing.T) {
	var starts, running atomic.Int32
	payloads := make(chan string)
	h := New(func(ctx context.Context, deliver func(string)) {
		starts.Add(1)
		running.Add(1)
		defer running.Add(-1)
		for {
			select {
			case <-ctx.Done():
				return
			case p := <-payloads:
				deliver(p)
			}
		}
	})
	got := make(chan driver.Key, 4)
	un1 := h.Subscribe(func(k driver.Key) { got <- k })
	un2 := h.Subscribe(func(k driver.Key) { got <- k })
	payloads <- driver.Key{Name: "a:b", ID: "u1"}.Encoded()
	for range 2 {
		if k := <-got; k != (driver.Key{Name: "a:b", ID: "u1"}) {
			t.Fatalf("delivered %+v", k)
		}
	}
	if n := starts.Load(); n != 1 {
		t.Fatalf("%d listeners for two subscribers, want 1", n)
	}
	un1()
	un1() // idempotent
	if running.Load() != 1 {
		t.Fatal("listener stopped while a subscriber remains")
	}
	un2()
	if running.Load() != 0 {
		t.Fatal("listener still running after the last unsubscribe")
	}
	h.Subscribe(func(k driver.Key) { got <- k })
	payloads <- "x" // received only by a running listener
	if k := <-got; k.Name != "x" || starts.Load() != 2 {
		t.Fatalf("after resubscribing: %+v, %d starts", k, starts.Load())
	}
	h.Close()
	if running.Load() != 0 {
		t.Fatal("Close left the listener running")
	}
	h.Subscribe(func(driver.Key) {})
	if starts.Load() != 2 {
		t.Fatal("a subscription after Close started a listener")
	}
}
