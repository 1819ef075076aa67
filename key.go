package ratesync

import (
	"strings"

	"github.com/rate-sync/ratesync-go/internal/word"
)

// Store keys are the rule name followed by the identifiers of a per-key
// limiter, joined by ':'. Each component escapes '%' and ':' (as %25 and
// %3A), so no two different (name, identifiers) lists share a key:
// ("a", "b:c") and ("a:b", "c") stay apart.

// needsEscape runs on every l.For(id) decision, where strings.ContainsAny
// costs more than the rest of building the key.
func needsEscape(s string) bool { return word.ContainsEither(s, ':', '%') }

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
