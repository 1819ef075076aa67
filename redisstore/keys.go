package redisstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/rate-sync/ratesync-go/driver"
)

// Key layout (docs/redis.md, "Key layout"): the state of one policy of a
// limiter key is prefix:{T}:kind, or prefix:{@G}:E:kind for a rule in a
// co-location group G, where E is the limiter key encoded (keyText) and T
// is E with every '}' written %7D. Redis Cluster hashes the text between
// the first '{' and the next '}': T holds no '}', so no identifier can
// shorten the tag (and put its keys in another chosen slot), and '{' in an
// identifier changes nothing. The escape cannot make two keys alike: in an
// encoded key every '%' starts %25 or %3A (driver.Key says its parts are
// escaped), never %7D.

// kindSuffix returns the key suffix of a policy kind.
func kindSuffix(kind driver.Kind) string {
	switch kind {
	case driver.TokenBucket:
		return ":tb"
	case driver.SlidingWindow:
		return ":sw2" // members with counts: see decide.lua
	}
	return ":cc"
}

// key returns the Redis key of a limiter key's state of one policy kind.
func (s *Store) key(k driver.Key, kind driver.Kind) string {
	if len(s.colocated) > 0 {
		if g, ok := s.colocated[k.Name]; ok {
			return s.prefix + ":{" + g + "}:" + keyText(k) + kindSuffix(kind)
		}
	}
	return s.prefix + ":{" + tagText(keyText(k)) + "}" + kindSuffix(kind)
}

// tag returns what Redis Cluster hashes for the keys of k: keys with equal
// tags share a slot.
func (s *Store) tag(k driver.Key) string {
	if s.prefixTag {
		return "" // the prefix's own hash tag puts every key in one slot
	}
	if len(s.colocated) > 0 {
		if g, ok := s.colocated[k.Name]; ok {
			return g
		}
	}
	return tagText(keyText(k))
}

// maxKeyText is the longest limiter key a Redis key holds as it is.
const maxKeyText = 256

// keyText returns the limiter key encoded (driver.Key Encoded), or, when
// that is longer than maxKeyText, its first 192 bytes, '~' and the hex
// SHA-256 of the whole: 257 bytes, so no key kept as it is can equal it,
// and the state of an identifier of any length takes a few hundred bytes.
func keyText(k driver.Key) string {
	e := k.Encoded()
	if len(e) <= maxKeyText {
		return e
	}
	sum := sha256.Sum256([]byte(e))
	return e[:192] + "~" + hex.EncodeToString(sum[:])
}

// tagText returns s with every '}' written %7D, and the empty key as "%"
// (an empty hash tag would make Redis Cluster hash the whole key, putting
// the key's policies in different slots; no encoded key is "%").
func tagText(s string) string {
	if s == "" {
		return "%"
	}
	if strings.IndexByte(s, '}') < 0 {
		return s
	}
	return strings.ReplaceAll(s, "}", "%7D")
}

// checkPrefix reports whether a key prefix is usable: not empty, and, when
// it holds a '{', with a non-empty hash tag of its own (such as "{rl}"),
// which then puts every key of the store in one slot. A lone '{' would
// make the slot depend on the text after the prefix.
func checkPrefix(p string) (hasTag bool, err error) {
	if p == "" {
		return false, errors.New("ratesync/redisstore: key prefix must not be empty")
	}
	i := strings.IndexByte(p, '{')
	if i < 0 {
		return false, nil
	}
	if j := strings.IndexByte(p[i+1:], '}'); j <= 0 {
		return false, fmt.Errorf("ratesync/redisstore: key prefix %q: a '{' must open a non-empty hash tag closed in the prefix, such as \"{rl}\"", p)
	}
	return true, nil
}

// colocation returns the co-location groups as a map from escaped rule
// name to the group's tag text, "@" and its first rule's name.
func colocation(groups [][]string) (map[string]string, error) {
	out := map[string]string{}
	for _, g := range groups {
		if len(g) == 0 {
			return nil, errors.New("ratesync/redisstore: WithColocation: a group needs at least one rule")
		}
		tag := "@" + tagText(driver.EscapeName(g[0]))
		for _, rule := range g {
			if rule == "" {
				return nil, errors.New("ratesync/redisstore: WithColocation: empty rule name")
			}
			name := driver.EscapeName(rule)
			if prev, ok := out[name]; ok && prev != tag {
				return nil, fmt.Errorf("ratesync/redisstore: WithColocation: rule %q is in two groups", rule)
			}
			out[name] = tag
		}
	}
	return out, nil
}

// sameTag reports whether every check's keys share one slot.
func sameTag(s *Store, checks []driver.Check) bool {
	if len(checks) < 2 || s.prefixTag {
		return true
	}
	tag := s.tag(checks[0].Key)
	for i := 1; i < len(checks); i++ {
		if checks[i].Key != checks[0].Key && s.tag(checks[i].Key) != tag {
			return false
		}
	}
	return true
}

// slotGroups splits checks by hash tag, in order of first appearance.
func (s *Store) slotGroups(checks []driver.Check) [][]int {
	var out [][]int
	tags := map[string]int{}
	for i := range checks {
		tag := s.tag(checks[i].Key)
		g, ok := tags[tag]
		if !ok {
			g = len(out)
			tags[tag] = g
			out = append(out, nil)
		}
		out[g] = append(out[g], i)
	}
	return out
}
