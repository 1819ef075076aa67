package redisstore

import (
	"strings"

	"github.com/rate-sync/ratesync-go/driver"
)

// key returns the Redis key of a limiter key's state of one policy kind:
// prefix:{name:id}:tb|sw|cc. The braces make every kind of one limiter key
// share a Cluster slot. Colons and percent signs in the name are escaped,
// so the name ends at the first colon and keys cannot collide.
func (s *Store) key(k driver.Key, kind driver.Kind) string {
	var suffix string
	switch kind {
	case driver.TokenBucket:
		suffix = "}:tb"
	case driver.SlidingWindow:
		suffix = "}:sw2"
	default:
		suffix = "}:cc"
	}
	return s.prefix + ":{" + k.Encoded() + suffix
}

// hashTag returns the part of key Redis Cluster hashes: the text between
// the first '{' and the next '}', when not empty; else the whole key.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return key
	}
	return key[i+1 : i+1+j]
}

func sameTag(s *Store, checks []driver.Check) bool {
	tag := hashTag(s.key(checks[0].Key, driver.TokenBucket))
	for i := 1; i < len(checks); i++ {
		if hashTag(s.key(checks[i].Key, driver.TokenBucket)) != tag {
			return false
		}
	}
	return true
}

// groups splits checks by hash tag, in order of first appearance.
func (s *Store) groups(checks []driver.Check) [][]int {
	var out [][]int
	tags := map[string]int{}
	for i := range checks {
		tag := hashTag(s.key(checks[i].Key, driver.TokenBucket))
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
