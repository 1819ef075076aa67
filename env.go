package ratesync

import (
	"fmt"
	"os"
	"strings"
)

// expandEnv replaces ${NAME} and ${NAME:-default} in s with environment
// variables. ${NAME:-default} takes the default when NAME is unset or
// empty; ${NAME} with NAME unset is an error that names it. "$$" is a
// literal "$"; a "$" not followed by "{" or "$" is kept as is.
func expandEnv(s string) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unclosed ${ in %q: write $${ for a literal ${", s)
			}
			ref := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(ref, ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("bad variable reference ${%s}: use ${NAME} or ${NAME:-default}, NAME made of letters, digits and _", ref)
			}
			v, ok := os.LookupEnv(name)
			switch {
			case hasDef && v == "":
				v = def
			case !ok:
				return "", fmt.Errorf("environment variable %s is not set (set it, or give a default: ${%s:-value})", name, name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}
