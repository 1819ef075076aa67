package memstore

import (
	"strconv"
	"sync"
	"testing"

	"github.com/rate-sync/ratesync-go/driver"
)

func newShard() *shard {
	sh := new(shard)
	sh.index.Store(newIndex(0))
	return sh
}

// Keys whose hashes are equal, or equal modulo the index size, all stay
// findable through growth, removal and rebuilding.
func TestIndexCollisionsAndRebuilds(t *testing.T) {
	sh := newShard()
	key := func(i int) driver.Key { return driver.Key{Name: "n", ID: strconv.Itoa(i)} }
	hash := func(i int) uint64 { return uint64(i%7) << 40 } // 7 distinct hashes, all in slot 0 at first
	const n = 2000
	for i := range n {
		sh.mu.Lock()
		e := sh.get(hash(i), key(i))
		if again := sh.get(hash(i), key(i)); again != e {
			t.Fatalf("get(%d) twice gave two entries", i)
		}
		sh.mu.Unlock()
	}
	if sh.n != n {
		t.Fatalf("n = %d, want %d", sh.n, n)
	}
	for i := 0; i < n; i += 2 {
		sh.remove(sh.find(hash(i), "n", key(i).ID))
	}
	for i := range n {
		e := sh.find(hash(i), "n", key(i).ID)
		if (e == nil) != (i%2 == 0) {
			t.Fatalf("after removing the even keys: find(%d) = %v", i, e)
		}
		if e != nil && e.key != key(i) {
			t.Fatalf("find(%d) returned the entry of %v", i, e.key)
		}
	}
	if x := sh.index.Load(); sh.n != n/2 || x.used-sh.n > len(x.slots)/4 {
		t.Fatalf("n = %d, %d tombstones in %d slots", sh.n, x.used-sh.n, len(x.slots))
	}
	sh.clear()
	if sh.n != 0 || sh.find(hash(1), "n", "1") != nil {
		t.Fatal("clear left keys")
	}
}

// Lookups without the lock always find the keys that stay, while another
// goroutine adds and removes other keys (growing and rebuilding the index).
func TestIndexLockFreeLookups(t *testing.T) {
	sh := newShard()
	stable := make([]*entry, 100)
	for i := range stable {
		stable[i] = sh.get(uint64(i)*0x9e3779b97f4a7c15, driver.Key{Name: "stable", ID: strconv.Itoa(i)})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for round := 0; ; round++ {
			select {
			case <-stop:
				return
			default:
			}
			sh.mu.Lock()
			var added []*entry
			for i := range 200 {
				added = append(added, sh.get(uint64(round*1000+i), driver.Key{Name: "churn", ID: strconv.Itoa(round*1000 + i)}))
			}
			for _, e := range added {
				sh.remove(e)
			}
			sh.mu.Unlock()
		}
	}()
	for range 2000 {
		for _, want := range stable {
			if got := sh.index.Load().lookup(want.hash, want.key.Name, want.key.ID); got != want {
				close(stop)
				wg.Wait()
				t.Fatalf("lock-free lookup of %v = %v, want its entry", want.key, got)
			}
		}
	}
	close(stop)
	wg.Wait()
}
