package ratesync

import (
	"strings"
	"testing"
)

// needsEscape agrees with strings.ContainsAny on every length up to 40 with
// ':' or '%' (or a near miss) at every position: its word loads overlap
// differently at each length.
func TestNeedsEscape(t *testing.T) {
	if !needsEscape("") {
		t.Error(`needsEscape("") = false: the empty identifier is escaped as "%"`)
	}
	for n := 1; n <= 40; n++ {
		base := strings.Repeat("a", n)
		if needsEscape(base) {
			t.Errorf("needsEscape(%q) = true", base)
		}
		for i := range n {
			for _, c := range []byte{':', '%', ';', '$', 0x00, 0x80 | ':', 0xff} {
				b := []byte(base)
				b[i] = c
				s := string(b)
				if got, want := needsEscape(s), strings.ContainsAny(s, ":%"); got != want {
					t.Errorf("needsEscape(%q) = %v, want %v", s, got, want)
				}
			}
		}
	}
}
