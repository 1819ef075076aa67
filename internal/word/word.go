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

// Ones is the word whose 8 bytes are 1: c * Ones repeats byte c.
const Ones = 0x0101010101010101

// Highs is the word whose bytes have only their high bit set.
const Highs = 0x80 * Ones

// ZeroBytes returns a word that has the high bit of some byte set (in
// ZeroBytes(w) & Highs) exactly when w has a zero byte. To look for byte c
// in w, pass w ^ (c * Ones); OR the results for several words or bytes and
// test once.
func ZeroBytes(w uint64) uint64 { return (w - Ones) &^ w }
