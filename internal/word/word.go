// Package word reads short strings a machine word at a time, for the hot
// paths that hash and scan keys (user ids, IP addresses): up to 16 bytes
// take two overlapping loads, with no loop, where a byte loop would cost
// more than the rest of the work.
package word

// Load4 returns the first 4 bytes of s, little endian. len(s) >= 4.
func Load4(s string) uint64 {
	b := s[:4] // one bounds check
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24
}

// Load8 returns the first 8 bytes of s, little endian. len(s) >= 8.
func Load8(s string) uint64 {
	b := s[:8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

const ones, highs = 0x0101010101010101, 0x8080808080808080

// hasZero reports whether some byte of w is zero: (w - ones) &^ w & highs
// is non-zero exactly then.
func hasZero(w uint64) bool { return (w-ones)&^w&highs != 0 }

// hasEither reports whether some byte of w is a or b.
func hasEither(w uint64, a, b byte) bool {
	return hasZero(w^(ones*uint64(a))) || hasZero(w^(ones*uint64(b)))
}

// ContainsEither reports whether s contains the byte a or the byte b.
func ContainsEither(s string, a, b byte) bool {
	n := len(s)
	switch {
	case n >= 8:
		i := 0
		for ; i+8 <= n; i += 8 {
			if hasEither(Load8(s[i:]), a, b) {
				return true
			}
		}
		// The last bytes, in a word that overlaps the ones seen.
		return i < n && hasEither(Load8(s[n-8:]), a, b)
	case n >= 4:
		return hasEither(Load4(s)|Load4(s[n-4:])<<32, a, b)
	}
	for i := 0; i < n; i++ {
		if s[i] == a || s[i] == b {
			return true
		}
	}
	return false
}
