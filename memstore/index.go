package memstore

import (
	"math/bits"
	"sync/atomic"

	"github.com/rate-sync/ratesync-go/driver"
)

// index is a shard's hash table of entries: open addressing with linear
// probing over atomic slots, so that lookups read it without a lock while
// the holder of the shard's lock changes it.
//
// Changes keep every lookup safe: a slot goes from nil to an entry, from an
// entry to tombstone, and from tombstone to a new entry; growing or
// compacting builds a new index and publishes it whole. A lock-free lookup
// may therefore miss a key added meanwhile, or find one removed meanwhile
// (marked tatGone), and then asks again under the lock, where the index is
// exact.
type index struct {
	slots []atomic.Pointer[entry]
	mask  uint64
	used  int // slots that are not nil: entries and tombstones
}

// tombstone fills the slot of a removed entry; lookups probe past it. Its
// bucket is gone, so a lone check that is handed it looks again.
var tombstone = func() *entry {
	e := new(entry)
	e.tat.Store(tatGone)
	return e
}()

func newIndex(size int) *index {
	n := 8
	if size > n {
		n = 1 << bits.Len(uint(size-1))
	}
	return &index{slots: make([]atomic.Pointer[entry], n), mask: uint64(n - 1)}
}

// lookup returns the entry of (name, id), whose hash is h, or nil. It takes
// no lock (see index).
func (x *index) lookup(h uint64, name, id string) *entry {
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		e := x.slots[i].Load()
		if e == nil {
			return nil
		}
		if e.hash == h && e.key.ID == id && e.key.Name == name {
			return e
		}
	}
}

// slot returns the position of e. Shard lock held.
func (x *index) slot(e *entry) uint64 {
	for i := e.hash & x.mask; ; i = (i + 1) & x.mask {
		if x.slots[i].Load() == e {
			return i
		}
	}
}

// find returns the entry of (name, id), whose hash is h, or nil. Shard lock
// held.
func (sh *shard) find(h uint64, name, id string) *entry {
	e := sh.index.Load().lookup(h, name, id)
	if e == tombstone {
		return nil // the tombstone's key is empty; no real key is
	}
	return e
}

// get returns the entry of key, creating it when missing. Shard lock held.
func (sh *shard) get(h uint64, key driver.Key) *entry {
	if e := sh.find(h, key.Name, key.ID); e != nil {
		return e
	}
	x := sh.index.Load()
	if (x.used+1)*4 > 3*len(x.slots) {
		x = sh.rebuild()
	}
	e := &entry{key: key, hash: h}
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		s := x.slots[i].Load()
		if s != nil && s != tombstone {
			continue
		}
		if s == nil {
			x.used++
		}
		x.slots[i].Store(e)
		break
	}
	sh.n++
	return e
}

// remove takes e out of the index and marks it gone, so that a lone check
// that holds it looks again. Shard lock held.
func (sh *shard) remove(e *entry) {
	e.tat.Store(tatGone)
	x := sh.index.Load()
	x.slots[x.slot(e)].Store(tombstone)
	sh.n--
	if x.used-sh.n > len(x.slots)/4 { // tombstones slow the probes down
		sh.rebuild()
	}
}

// rebuild publishes a new index with the live entries, a quarter full.
// Shard lock held.
func (sh *shard) rebuild() *index {
	old := sh.index.Load()
	x := newIndex(2 * (sh.n + 1))
	for i := range old.slots {
		e := old.slots[i].Load()
		if e == nil || e == tombstone {
			continue
		}
		j := e.hash & x.mask
		for x.slots[j].Load() != nil {
			j = (j + 1) & x.mask
		}
		x.slots[j].Store(e)
		x.used++
	}
	sh.index.Store(x)
	return x
}

// each calls fn for every entry. fn may remove the entry it is given.
// Shard lock held.
func (sh *shard) each(fn func(*entry)) {
	x := sh.index.Load()
	for i := range x.slots {
		if e := x.slots[i].Load(); e != nil && e != tombstone {
			fn(e)
		}
	}
}

// clear removes every entry. Shard lock held.
func (sh *shard) clear() {
	sh.each(func(e *entry) { e.tat.Store(tatGone) })
	sh.index.Store(newIndex(0))
	sh.n = 0
}
