package word

import (
	"strings"
	"testing"
)

// strs are strings of every length up to 40 with the interesting bytes at
// every position, and near misses (bytes one off, high bytes).
func strs() []string {
	var out []string
	for n := 0; n <= 40; n++ {
		base := strings.Repeat("a", n)
		out = append(out, base)
		for i := 0; i < n; i++ {
			for _, c := range []byte{':', '%', ';', '$', 0x00, 0x80 | ':', 0xff, 'b'} {
				b := []byte(base)
				b[i] = c
				out = append(out, string(b))
			}
		}
	}
	return out
}

func TestContainsEither(t *testing.T) {
	for _, s := range strs() {
		want := strings.ContainsAny(s, ":%")
		if got := ContainsEither(s, ':', '%'); got != want {
			t.Errorf("ContainsEither(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzContainsEither(f *testing.F) {
	f.Add("user-1")
	f.Add("a:b%c")
	f.Fuzz(func(t *testing.T, a string) {
		if ContainsEither(a, ':', '%') != strings.ContainsAny(a, ":%") {
			t.Fatalf("ContainsEither(%q) wrong", a)
		}
	})
}
