// Package notify fans the release notifications a store receives on one
// connection (Redis pub/sub, PostgreSQL LISTEN) out to the store's
// subscribers. It is the shared half of driver.ReleaseNotifier for the
// network stores: the listening connection is opened in the background on
// the first subscription and closed with the last one, or with Close.
package notify

import (
	"context"
	"sync"

	"github.com/rate-sync/ratesync-go/driver"
)

// A Listener listens until ctx is done and calls deliver with the payload
// of each notification (a driver.Key.Encoded string).
type Listener func(ctx context.Context, deliver func(payload string))

// Hub is the subscriber list and the one listening goroutine of a store.
type Hub struct {
	listen Listener

	mu     sync.Mutex
	subs   map[uint64]func(driver.Key)
	seq    uint64
	cancel context.CancelFunc // of the running listener; nil when none
	done   chan struct{}
	closed bool
}

// New returns a Hub that runs listen while it has subscribers.
func New(listen Listener) *Hub { return &Hub{listen: listen} }

// Subscribe implements driver.ReleaseNotifier.SubscribeReleases.
func (h *Hub) Subscribe(fn func(driver.Key)) (unsubscribe func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs = map[uint64]func(driver.Key){}
	}
	h.seq++
	id := h.seq
	h.subs[id] = fn
	if h.cancel == nil && !h.closed {
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel, h.done = cancel, make(chan struct{})
		go func(done chan struct{}) {
			defer close(done)
			h.listen(ctx, h.deliver)
		}(h.done)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, id)
			last := len(h.subs) == 0
			h.mu.Unlock()
			if last {
				h.stop()
			}
		})
	}
}

func (h *Hub) deliver(payload string) {
	k := driver.DecodeKey(payload)
	h.mu.Lock()
	fns := make([]func(driver.Key), 0, len(h.subs))
	for _, fn := range h.subs {
		fns = append(fns, fn)
	}
	h.mu.Unlock()
	for _, fn := range fns {
		fn(k)
	}
}

// stop ends the running listener, if any, and waits for it.
func (h *Hub) stop() {
	h.mu.Lock()
	cancel, done := h.cancel, h.done
	h.cancel, h.done = nil, nil
	h.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Close stops the listener for good: later subscriptions start none.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.stop()
}
