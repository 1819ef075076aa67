package ratesync

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"strings"
	"unicode"
	"unicode/utf8"
)

// HashOption changes HashIdentifier.
type HashOption func(*hashOpts)

type hashOpts struct {
	length    int
	salt      string
	algorithm string
}

// WithLength sets how many hex characters of the digest to keep; the
// default is 16. Like rate-sync's Python slice digest[:length], a negative
// length drops that many characters from the end.
func WithLength(n int) HashOption { return func(o *hashOpts) { o.length = n } }

// WithSalt hashes salt + ":" + identifier instead of the identifier alone;
// an empty salt means no salt.
func WithSalt(salt string) HashOption { return func(o *hashOpts) { o.salt = salt } }

// WithAlgorithm chooses "sha256" (the default), "sha384", "sha512" or
// "md5". Any other name falls back to sha256, as in rate-sync.
func WithAlgorithm(name string) HashOption { return func(o *hashOpts) { o.algorithm = name } }

// HashIdentifier returns a short, stable hash of an identifier (an email, an
// API key) so that raw values never become store keys. It equals rate-sync's
// hash_identifier byte for byte: the identifier is normalised like Python's
// str.lower().strip(), salted as "salt:identifier" when a salt is given,
// hashed, hex encoded and truncated to the length (16 by default).
func HashIdentifier(identifier string, opts ...HashOption) string {
	o := hashOpts{length: 16, algorithm: "sha256"}
	for _, f := range opts {
		f(&o)
	}
	s := pyStrip(pyLower(identifier))
	if o.salt != "" {
		s = o.salt + ":" + s
	}
	var h hash.Hash
	switch o.algorithm {
	case "sha384":
		h = sha512.New384()
	case "sha512":
		h = sha512.New()
	case "md5":
		h = md5.New()
	default:
		h = sha256.New()
	}
	h.Write([]byte(s))
	digest := hex.EncodeToString(h.Sum(nil))
	n := o.length
	if n < 0 {
		n = max(0, len(digest)+n)
	}
	return digest[:min(n, len(digest))]
}

// CombineIdentifiers joins parts into one identifier (tenant and user, IP
// and endpoint) so that distinct lists of parts give distinct identifiers:
// each part escapes '%' and ':' (as %25 and %3A) and an empty part is
// written "%", as in limiter keys, before they are joined with ':'. Parts
// without those characters join as with rate-sync's combine_identifiers
// ("acme", "42" gives "acme:42"); unlike it, a ':' inside a part cannot
// make two lists alike ("acme", "x:y" and "acme:x", "y"), and empty parts
// are kept.
func CombineIdentifiers(parts ...string) string {
	return CombineIdentifiersWith(":", parts...)
}

// CombineIdentifiersWith is CombineIdentifiers with another separator: '%'
// and every byte of sep are escaped in the parts (as %XX), so distinct
// lists still give distinct identifiers. sep must be punctuation: a sep
// that is empty or holds '%', an ASCII letter or a digit (which escapes
// are written with) is taken as ":".
func CombineIdentifiersWith(sep string, parts ...string) string {
	if !validSeparator(sep) {
		sep = ":"
	}
	escaped := func(c byte) bool { return c == '%' || strings.IndexByte(sep, c) >= 0 }
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteString(sep)
		}
		if p == "" {
			b.WriteByte('%')
			continue
		}
		for j := 0; j < len(p); j++ {
			if c := p[j]; escaped(c) {
				b.WriteByte('%')
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&15])
			} else {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

func validSeparator(sep string) bool {
	if sep == "" {
		return false
	}
	for i := 0; i < len(sep); i++ {
		if c := sep[i]; c == '%' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789ABCDEF"

// pyLower lowercases like Python's str.lower: the full Unicode lowercase
// mapping, including the two cases where it differs from a rune-by-rune
// simple mapping: U+0130 (İ) becomes "i̇" (two runes), and a capital sigma
// at the end of a word becomes final sigma ς.
func pyLower(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range s {
		switch {
		case r == 'İ':
			b.WriteString("i\u0307")
		case r == 'Σ':
			if finalSigma(s, i, i+utf8.RuneLen(r)) {
				b.WriteRune('ς')
			} else {
				b.WriteRune('σ')
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma applies Unicode's Final_Sigma condition, as CPython does: the
// sigma is preceded by a cased letter (skipping case-ignorable runes) and
// not followed by one.
func finalSigma(s string, start, end int) bool {
	before := false
	for j := start; j > 0; {
		r, size := utf8.DecodeLastRuneInString(s[:j])
		j -= size
		if caseIgnorable(r) {
			continue
		}
		before = cased(r)
		break
	}
	if !before {
		return false
	}
	for j := end; j < len(s); {
		r, size := utf8.DecodeRuneInString(s[j:])
		j += size
		if caseIgnorable(r) {
			continue
		}
		return !cased(r)
	}
	return true
}

func cased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '^', '`', 0x00AD, 0x00B7, 0x2018, 0x2019, 0x2024, 0x2027:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pyStrip trims like Python's str.strip(): Unicode whitespace, which
// includes the ASCII separators U+001C..U+001F that unicode.IsSpace omits.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f
	})
}
