package word

import (
	"strings"
	"testing"
)

func TestLoads(t *testing.T) {
	s := "\x01\x02\x03\x04\x05\x06\x07\x08\x09"
	if got := Load4(s); got != 0x04030201 {
		t.Errorf("Load4 = %#x", got)
	}
	if got := Load8(s[1:]); got != 0x0908070605040302 {
		t.Errorf("Load8 = %#x", got)
	}
}

// ZeroBytes(w ^ c*Ones) finds c at every position of the word, and only
// there: bytes one off and high bytes do not count.
func TestZeroBytes(t *testing.T) {
	for _, c := range []byte{':', '%', 0x00, 0x80, 0xff} {
		for _, other := range []byte{c + 1, c - 1, c ^ 0x80, 'a'} {
			base := strings.Repeat(string(other), 8)
			if has(Load8(base), c) {
				t.Errorf("found %#x in %q", c, base)
			}
			for i := range 8 {
				b := []byte(base)
				b[i] = c
				if !has(Load8(string(b)), c) {
					t.Errorf("missed %#x at %d in %q", c, i, b)
				}
			}
		}
	}
}

func has(w uint64, c byte) bool { return ZeroBytes(w^(uint64(c)*Ones))&Highs != 0 }
