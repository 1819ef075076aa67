package ratesync

import "strings"

// Store keys are the rule name followed by the identifiers of a per-key
// limiter, joined by ':'. Each component escapes '%' and ':' (as %25 and
// %3A), so no two different (name, identifiers) lists share a key:
// ("a", "b:c") and ("a:b", "c") stay apart.

func needsEscape(s string) bool {
	// Eight bytes at a time, then byte by byte: this runs on every
	// l.For(id) decision, where strings.ContainsAny costs more than the
	// rest of building the key.
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		b := s[i : i+8] // one bounds check, then one 8-byte load
		w := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		colon, percent := w^(ones*':'), w^(ones*'%')
		// (x - ones) &^ x & highs is non-zero iff some byte of x is zero.
		if ((colon-ones)&^colon|(percent-ones)&^percent)&highs != 0 {
			return true
		}
	}
	for ; i < len(s); i++ {
		if s[i] == ':' || s[i] == '%' {
			return true
		}
	}
	return false
}

func appendComponent(b *strings.Builder, s string) {
	if !needsEscape(s) {
		b.WriteString(s)
		return
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ':':
			b.WriteString("%3A")
		case '%':
			b.WriteString("%25")
		default:
			b.WriteByte(s[i])
		}
	}
}

func escapeComponent(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	appendComponent(&b, s)
	return b.String()
}

// unescapeComponent reverses appendComponent.
func unescapeComponent(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	r := strings.NewReplacer("%3A", ":", "%25", "%")
	return r.Replace(s)
}
