package memstore

import (
	"hash/maphash"
	"math/bits"

	"github.com/rate-sync/ratesync-go/internal/word"
)

// Keys are hashed with a per-process random seed, so that no one can choose
// identifiers that collide. Strings up to 16 bytes (user ids, IPv4
// addresses, API keys' prefixes) take the mixing of the Go runtime's
// fallback string hash (wyhash), inlined, which costs a fraction of a call
// to hash/maphash; longer strings go to hash/maphash.
var (
	seed             = maphash.MakeSeed()
	key0, key1, key2 = seedWord("0"), seedWord("1"), seedWord("2")
)

func seedWord(s string) uint64 { return maphash.String(seed, s) | 1 }

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hashString returns the hash of a rule name under the process's seed.
func hashString(s string) uint64 { return hashKey(key0, s) }

// hashKey hashes the key (name, id) given nameHash = hashString(name): the
// name's hash seeds the hash of id, as the seed does in wyhash.
func hashKey(nameHash uint64, id string) uint64 {
	n := len(id)
	var a, b uint64
	switch {
	case n == 0:
	case n < 4:
		a = uint64(id[0]) | uint64(id[n>>1])<<8 | uint64(id[n-1])<<16
	case n < 8:
		a, b = word.Load4(id), word.Load4(id[n-4:])
	case n <= 16:
		a, b = word.Load8(id), word.Load8(id[n-8:])
	default:
		return mix(nameHash^key1, maphash.String(seed, id)^key2)
	}
	return mix(key2^uint64(n), mix(a^key1, b^nameHash))
}
