package ratesync

import (
	"strings"

	"github.com/rate-sync/ratesync-go/internal/word"
)

// Store keys are the rule name followed by the identifiers of a per-key
// limiter, joined by ':'. Each component escapes '%' and ':' (as %25 and
// %3A), and an empty component is written "%" (which no other component
// can be), so no two different (name, identifiers) lists share a key:
// ("a", "b:c") and ("a:b", "c") stay apart, and so do ("a", "", "x") and
// ("a", "x"), or ("a", "") and ("a").

// needsEscape reports whether s contains ':' or '%', or is empty. It runs on every
// l.For(id) decision, where strings.ContainsAny costs more than the rest of
// building the key: up to 16 bytes take two overlapping word loads and no
// loop.
func needsEscape(s string) bool {
	n := len(s)
	switch {
	case n > 16:
		for i := 0; i+16 < n; i += 16 {
			if escapable(word.Load8(s[i:]), word.Load8(s[i+8:])) {
				return true
			}
		}
		// The last 16 bytes, in words that may overlap the ones seen.
		return escapable(word.Load8(s[n-16:]), word.Load8(s[n-8:]))
	case n >= 8:
		return escapable(word.Load8(s), word.Load8(s[n-8:]))
	case n >= 4:
		return escapable(word.Load4(s), word.Load4(s[n-4:]))
	case n == 0:
		return true
	}
	for i := 0; i < n; i++ {
		if s[i] == ':' || s[i] == '%' {
			return true
		}
	}
	return false
}

// escapable reports whether some byte of a or b is ':' or '%' (zero bytes,
// such as the high half of a 4-byte load, are neither).
func escapable(a, b uint64) bool {
	const colon, percent = ':' * word.Ones, '%' * word.Ones
	z := word.ZeroBytes(a^colon) | word.ZeroBytes(a^percent) | word.ZeroBytes(b^colon) | word.ZeroBytes(b^percent)
	return z&word.Highs != 0
}

func appendComponent(b *strings.Builder, s string) {
	if s == "" {
		b.WriteByte('%')
		return
	}
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
	if s == "" {
		return "%"
	}
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	appendComponent(&b, s)
	return b.String()
}

// unescapeComponent reverses appendComponent.
func unescapeComponent(s string) string {
	if s == "%" {
		return ""
	}
	if !strings.Contains(s, "%") {
		return s
	}
	r := strings.NewReplacer("%3A", ":", "%25", "%")
	return r.Replace(s)
}
