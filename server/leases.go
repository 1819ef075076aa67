package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/rate-sync/ratesync-go"
)

var errLeasesFull = errors.New("server: too many leases held")

// heldLease is a lease the server holds for an HTTP client, by id.
type heldLease struct {
	lease   *ratesync.Lease
	limiter string
	expires time.Time
}

// leaseTable holds the leases of HTTP clients by id, at most max of them.
// A lease leaves it when released or when its TTL passes (the store frees
// the slot at the same time); expired entries are swept when the table is
// full and every 1,024 insertions. Ids are local to one server.
type leaseTable struct {
	mu      sync.Mutex
	max     int
	m       map[string]*heldLease
	inserts int
	now     func() time.Time
}

func newLeaseTable(max int) *leaseTable {
	return &leaseTable{max: max, m: map[string]*heldLease{}, now: time.Now}
}

func newLeaseID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// add holds l and returns its id.
func (t *leaseTable) add(l *ratesync.Lease, limiter string, ttl time.Duration) (string, time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.inserts++
	if len(t.m) >= t.max || t.inserts%1024 == 0 {
		t.sweep(now)
	}
	if len(t.m) >= t.max {
		return "", time.Time{}, errLeasesFull
	}
	id := newLeaseID()
	h := &heldLease{lease: l, limiter: limiter, expires: now.Add(ttl)}
	t.m[id] = h
	return id, h.expires, nil
}

func (t *leaseTable) sweep(now time.Time) {
	for id, h := range t.m {
		if !now.Before(h.expires) {
			delete(t.m, id)
		}
	}
}

// get returns the lease id unless it is unknown or expired.
func (t *leaseTable) get(id string) *heldLease {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.m[id]
	if h != nil && !t.now().Before(h.expires) {
		delete(t.m, id)
		return nil
	}
	return h
}

// take removes and returns the lease id, unless it is unknown or expired.
func (t *leaseTable) take(id string) *heldLease {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.m[id]
	delete(t.m, id)
	if h != nil && !t.now().Before(h.expires) {
		return nil
	}
	return h
}

// put returns a lease that take removed (a release that failed).
func (t *leaseTable) put(id string, h *heldLease) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[id] = h
}

// extended records a lease's new expiry.
func (t *leaseTable) extended(h *heldLease, expires time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h.expires = expires
}

func (t *leaseTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// releaseAll releases every lease held.
func (t *leaseTable) releaseAll(ctx context.Context) error {
	t.mu.Lock()
	m := t.m
	t.m = map[string]*heldLease{}
	t.mu.Unlock()
	var errs []error
	for _, h := range m {
		if err := h.lease.Release(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
