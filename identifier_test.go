package ratesync_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/rate-sync/ratesync-go"
)

// The want values were computed with rate-sync's definition of
// hash_identifier (inventory §2.8): hashlib.<alg>(f"{salt}:{s}" if salt else
// s, s = identifier.lower().strip()).hexdigest()[:length], run by CPython.
func TestHashIdentifierMatchesRateSync(t *testing.T) {
	tests := []struct {
		name, in string
		opts     []ratesync.HashOption
		want     string
	}{
		{"default", "user@example.com", nil, "b4c9a289323b21a0"},
		{"normalised", "  User@Example.COM \n", nil, "b4c9a289323b21a0"},
		{"length 8", "user@example.com", []ratesync.HashOption{ratesync.WithLength(8)}, "b4c9a289"},
		{"length 64", "user@example.com", []ratesync.HashOption{ratesync.WithLength(64)}, "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"},
		{"length past digest", "user@example.com", []ratesync.HashOption{ratesync.WithLength(200)}, "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"},
		{"length 1", "user@example.com", []ratesync.HashOption{ratesync.WithLength(1)}, "b"},
		{"negative length slices from the end", "user@example.com", []ratesync.HashOption{ratesync.WithLength(-4)}, "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e47"},
		{"length 0", "user@example.com", []ratesync.HashOption{ratesync.WithLength(0)}, ""},
		{"salt", "user@example.com", []ratesync.HashOption{ratesync.WithSalt("pepper")}, "4fd35b4c62a9efe2"},
		{"empty salt is no salt", "user@example.com", []ratesync.HashOption{ratesync.WithSalt("")}, "b4c9a289323b21a0"},
		{"sha384", "user@example.com", []ratesync.HashOption{ratesync.WithAlgorithm("sha384")}, "932c1566d0e77a01"},
		{"sha512", "user@example.com", []ratesync.HashOption{ratesync.WithAlgorithm("sha512"), ratesync.WithLength(32)}, "6db185971e8d3b52426ff4a1c1ec499a"},
		{"md5", "user@example.com", []ratesync.HashOption{ratesync.WithAlgorithm("md5")}, "b58996c504c56387"},
		{"unknown algorithm falls back to sha256", "user@example.com", []ratesync.HashOption{ratesync.WithAlgorithm("whirlpool")}, "b4c9a289323b21a0"},
		{"dotted capital I lowers to two runes", "İSTANBUL", nil, "4a4df120f7d1f3c2"},
		{"final sigma", "ΟΔΥΣΣΕΥΣ", nil, "3c70e8e70fb6820b"},
		{"sigma alone and at word ends", "ΣΑΣ Σ", nil, "1d7205a4d877f449"},
		{"python whitespace includes \\x1c-\\x1f", "\x1c\u2003Straße\u3000\x1f", nil, "787f4770613d3824"},
		{"titlecase digraph", "ǅemal", nil, "4c7bda2afea428bb"},
		{"salted md5 unicode", "ÅNGSTRÖM", []ratesync.HashOption{ratesync.WithSalt("s"), ratesync.WithAlgorithm("md5")}, "0dcb1d1e0e68e51c"},
		{"empty", "", nil, "e3b0c44298fc1c14"},
		{"emoji", "🙂 Émoji", []ratesync.HashOption{ratesync.WithLength(20)}, "5bd7589a3f477d5634f8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ratesync.HashIdentifier(tt.in, tt.opts...); got != tt.want {
				t.Errorf("HashIdentifier(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCombineIdentifiers(t *testing.T) {
	tests := []struct {
		name  string
		sep   string
		parts []string
		want  string
	}{
		{"basic, as rate-sync", ":", []string{"1.2.3.4", "abc"}, "1.2.3.4:abc"},
		{"three", ":", []string{"tenant", "user", "action"}, "tenant:user:action"},
		{"single", ":", []string{"a"}, "a"},
		{"none", ":", nil, ""},
		{"empty parts kept", ":", []string{"a", "", "b"}, "a:%:b"},
		{"separator inside is escaped", ":", []string{"acme", "x:y"}, "acme:x%3Ay"},
		{"percent is escaped", ":", []string{"50%", "a%3Ab"}, "50%25:a%253Ab"},
		{"IPv6 address", ":", []string{"2001:db8::1", "/login"}, "2001%3Adb8%3A%3A1:/login"},
		{"custom separator", "|", []string{"tenant", "user", "action"}, "tenant|user|action"},
		{"custom separator escaped", "|", []string{"a|b", "c:d"}, "a%7Cb|c:d"},
		{"multi-byte separator", "::", []string{"a:", ":b"}, "a%3A::%3Ab"},
		{"a letter is no separator", "x", []string{"a", "b"}, "a:b"},
		{"an empty separator is ':'", "", []string{"a", "b"}, "a:b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ratesync.CombineIdentifiersWith(tt.sep, tt.parts...)
			if tt.sep == ":" {
				if g2 := ratesync.CombineIdentifiers(tt.parts...); g2 != got {
					t.Fatalf("CombineIdentifiers = %q, CombineIdentifiersWith(\":\") = %q", g2, got)
				}
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// The collisions of rate-sync's combine_identifiers are gone.
	for _, pair := range [][2][]string{
		{{"acme", "x:y"}, {"acme:x", "y"}},
		{{"a", "", "b"}, {"a", "b"}},
		{{"a", "%3Ab"}, {"a:b"}},
		{{""}, {}},
	} {
		if a, b := ratesync.CombineIdentifiers(pair[0]...), ratesync.CombineIdentifiers(pair[1]...); a == b {
			t.Errorf("%q and %q both combine to %q", pair[0], pair[1], a)
		}
	}
}

// FuzzCombineIdentifiers checks that distinct lists of parts combine to
// distinct identifiers, with any bytes and any separator.
func FuzzCombineIdentifiers(f *testing.F) {
	f.Add("acme\x00x:y", "acme:x\x00y", ":")
	f.Add("a\x00\x00b", "a\x00b", ":")
	f.Add("a|b\x00c", "a\x00b|c", "|")
	f.Add("5%\x005", "5\x00%5", "5")
	f.Fuzz(func(t *testing.T, a, b, sep string) {
		// a and b are lists of parts separated by NUL (an empty string is
		// the empty list).
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, "\x00")
		}
		pa, pb := split(a), split(b)
		ca, cb := ratesync.CombineIdentifiersWith(sep, pa...), ratesync.CombineIdentifiersWith(sep, pb...)
		if ca == cb && !slices.Equal(pa, pb) {
			t.Fatalf("%q and %q both combine to %q with separator %q", pa, pb, ca, sep)
		}
	})
}
