package ratesync

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// waitQueues holds, per (store, key), the Acquire calls of this process
// waiting for a concurrency slot, in arrival order. Only the first waiter
// asks the store: a release signals it (a second signal while one is
// pending changes nothing), and it asks again by itself after a bounded
// time. When it is admitted it signals the next, which becomes first
// (another slot may be free too); a waiter that leaves with an unconsumed
// signal passes it on, so no release is lost.
type waitQueues struct {
	mu      sync.Mutex
	m       map[queueKey][]*waiter
	waiting atomic.Int64 // number of waiters, to skip the lock when zero
}

type queueKey struct {
	h   *storeHandle
	key driver.Key
}

type waiter struct {
	k       queueKey
	ch      chan struct{} // capacity 1
	pending bool          // a signal sits in ch; guarded by waitQueues.mu
	gone    bool          // left the queue; guarded by waitQueues.mu
	// retryAfter is the last denial's time until the earliest lease
	// expiry; owned by the waiting goroutine.
	retryAfter time.Duration
}

// recheckAfter is how long a first waiter waits without a notification
// before it asks the store again: an eighth of the lease TTL, between
// 10 ms and 1 s, less up to a quarter at random so that the waiters of
// several processes do not ask in step. A lost release notification then
// holds a free slot at most that long.
func recheckAfter(ttl time.Duration) time.Duration {
	d := min(max(ttl/8, 10*time.Millisecond), time.Second)
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

func (q *waitQueues) join(h *storeHandle, key driver.Key) *waiter {
	w := &waiter{k: queueKey{h, key}, ch: make(chan struct{}, 1)}
	q.mu.Lock()
	if q.m == nil {
		q.m = make(map[queueKey][]*waiter)
	}
	q.m[w.k] = append(q.m[w.k], w)
	q.waiting.Add(1)
	q.mu.Unlock()
	return w
}

// busy reports whether some Acquire of this process waits on (h, key).
func (q *waitQueues) busy(h *storeHandle, key driver.Key) bool {
	if q.waiting.Load() == 0 {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.m[queueKey{h, key}]) > 0
}

// first reports whether w is first in its queue.
func (q *waitQueues) first(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	ws := q.m[w.k]
	return len(ws) > 0 && ws[0] == w
}

// consumed records that w received its signal.
func (q *waitQueues) consumed(w *waiter) {
	q.mu.Lock()
	w.pending = false
	q.mu.Unlock()
}

// admitted removes w, which got a slot, and signals the next waiter: the
// release that woke w may not have been the only one.
func (q *waitQueues) admitted(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.removeLocked(w) {
		w.pending = false
		q.signalLocked(q.m[w.k])
	}
}

// leave removes w (a no-op when it was admitted). When w was first, or
// held an unconsumed signal, the next waiter is signalled: a waiter that
// was woken and leaves before its decision ends must not take the
// wake-up with it.
func (q *waitQueues) leave(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	wasFirst := len(q.m[w.k]) > 0 && q.m[w.k][0] == w
	if !q.removeLocked(w) {
		return
	}
	if w.pending {
		select {
		case <-w.ch:
		default:
		}
		w.pending = false
	} else if !wasFirst {
		return
	}
	q.signalLocked(q.m[w.k])
}

func (q *waitQueues) removeLocked(w *waiter) bool {
	if w.gone {
		return false
	}
	w.gone = true
	ws := q.m[w.k]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			q.waiting.Add(-1)
			break
		}
	}
	if len(ws) == 0 {
		delete(q.m, w.k)
	} else {
		q.m[w.k] = ws
	}
	return true
}

// notifyStore wakes the first waiter of every key on h.
func (q *waitQueues) notifyStore(h *storeHandle) {
	if q.waiting.Load() == 0 {
		return
	}
	q.mu.Lock()
	for k, ws := range q.m {
		if k.h == h {
			q.signalLocked(ws)
		}
	}
	q.mu.Unlock()
}

// notifyRule wakes the first waiter of every key of the rule whose
// escaped name is name: a reload replaced or removed the rule, and its
// waiters must decide by the rule in force.
func (q *waitQueues) notifyRule(name string) {
	if q.waiting.Load() == 0 {
		return
	}
	q.mu.Lock()
	for k, ws := range q.m {
		if k.key.Name == name {
			q.signalLocked(ws)
		}
	}
	q.mu.Unlock()
}

// notify wakes the first waiter on (h, key), unless a signal is pending.
func (q *waitQueues) notify(h *storeHandle, key driver.Key) {
	if q.waiting.Load() == 0 {
		return
	}
	q.mu.Lock()
	q.signalLocked(q.m[queueKey{h, key}])
	q.mu.Unlock()
}

func (q *waitQueues) signalLocked(ws []*waiter) {
	if len(ws) > 0 && !ws[0].pending {
		ws[0].pending = true
		ws[0].ch <- struct{}{}
	}
}
