package memstore

import (
	"hash/maphash"
	"math/bits"
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

// hashString returns the hash of s under the process's seed.
func hashString(s string) uint64 {
	n := len(s)
	var a, b uint64
	switch {
	case n == 0:
		return key0
	case n < 4:
		a = uint64(s[0]) | uint64(s[n>>1])<<8 | uint64(s[n-1])<<16
	case n < 8:
		a, b = load4(s), load4(s[n-4:])
	case n <= 16:
		a, b = load8(s), load8(s[n-8:])
	default:
		return maphash.String(seed, s)
	}
	return mix(key2^uint64(n), mix(a^key1, b^key0))
}

func load4(s string) uint64 {
	b := s[:4]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24
}

func load8(s string) uint64 {
	b := s[:8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// hashKey hashes the key (name, id) given nameHash = hashString(name).
func hashKey(nameHash uint64, id string) uint64 {
	return mix(nameHash^key1, hashString(id)^key2)
}
