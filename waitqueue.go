package ratesync

import (
	"github.com/rate-sync/ratesync-go/driver"
	"sync"
	"sync/atomic"
)

// waitQueues holds, per (store, key), the Acquire calls waiting for a
// concurrency slot, in arrival order. A release signals the first waiter
// that has no signal pending; a waiter that leaves with an unconsumed signal
// passes it on, so no release is lost.
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
	ch      chan struct{} // capacity 1
	pending bool          // a signal sits in ch; guarded by waitQueues.mu
}

func (q *waitQueues) join(h *storeHandle, key driver.Key) *waiter {
	w := &waiter{ch: make(chan struct{}, 1)}
	q.mu.Lock()
	if q.m == nil {
		q.m = make(map[queueKey][]*waiter)
	}
	k := queueKey{h, key}
	q.m[k] = append(q.m[k], w)
	q.waiting.Add(1)
	q.mu.Unlock()
	return w
}

// consumed records that w received its signal.
func (q *waitQueues) consumed(w *waiter) {
	q.mu.Lock()
	w.pending = false
	q.mu.Unlock()
}

func (q *waitQueues) leave(h *storeHandle, key driver.Key, w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := queueKey{h, key}
	ws := q.m[k]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			q.waiting.Add(-1)
			break
		}
	}
	if len(ws) == 0 {
		delete(q.m, k)
	} else {
		q.m[k] = ws
	}
	if w.pending {
		select {
		case <-w.ch:
		default:
		}
		w.pending = false
		q.signalLocked(ws)
	}
}

// notify wakes the first waiter on (h, key) that has no signal pending.
func (q *waitQueues) notify(h *storeHandle, key driver.Key) {
	if q.waiting.Load() == 0 {
		return
	}
	q.mu.Lock()
	q.signalLocked(q.m[queueKey{h, key}])
	q.mu.Unlock()
}

func (q *waitQueues) signalLocked(ws []*waiter) {
	for _, w := range ws {
		if !w.pending {
			w.pending = true
			w.ch <- struct{}{}
			return
		}
	}
}
