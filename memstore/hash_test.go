package memstore

import (
	"strings"
	"testing"
)

// Every byte of a string, at every length the inlined hash handles and
// past it, changes the hash; hashes of many similar keys do not collide.
func TestHashString(t *testing.T) {
	for n := 0; n <= 40; n++ {
		base := strings.Repeat("k", n)
		h := hashString(base)
		for i := 0; i < n; i++ {
			b := []byte(base)
			b[i] = 'j'
			if hashString(string(b)) == h {
				t.Fatalf("length %d: changing byte %d keeps the hash", n, i)
			}
		}
		if n > 0 && hashString(base[:n-1]) == h {
			t.Fatalf("lengths %d and %d hash alike", n-1, n)
		}
	}
	seen := make(map[uint64]string)
	for i := range 200_000 {
		s := "user-" + itoa(i)
		h := hashKey(hashString("api"), s)
		if prev, ok := seen[h]; ok {
			t.Fatalf("%q and %q collide", prev, s)
		}
		seen[h] = s
	}
	if hashKey(hashString("a"), "b") == hashKey(hashString("b"), "a") {
		t.Fatal("name and identifier are interchangeable")
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		if i < 10 {
			return string(b[n:])
		}
		i /= 10
	}
}
