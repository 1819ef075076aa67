package driver

import "testing"

func TestKeyEncoding(t *testing.T) {
	keys := []Key{{Name: "api"}, {Name: "api", ID: "u1"}, {Name: "a:b"}, {Name: "a", ID: "b"}, {Name: "a%3Ab"}, {Name: "x%", ID: "y:z"}}
	seen := map[string]Key{}
	for _, k := range keys {
		e := k.Encoded()
		if other, dup := seen[e]; dup {
			t.Fatalf("%+v and %+v both encode as %q", k, other, e)
		}
		seen[e] = k
		if got := DecodeKey(e); got != k {
			t.Fatalf("DecodeKey(%q) = %+v, want %+v", e, got, k)
		}
	}
}
