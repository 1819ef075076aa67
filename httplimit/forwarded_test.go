package httplimit

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{
		`for=192.0.2.60;proto=http;by=203.0.113.43`,
		`for="[2001:db8:cafe::17]:4711"`,
		`for=unknown, for=_hidden, for="_x:_y"`,
		`For="\"quoted\\"";x=y`,
		`,, for=1.2.3.4 ,`,
		`for=1.2.3.4;for=5.6.7.8`,
		`for="1.2.3.4`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		vals, ok := parseForwarded(v)
		if !ok {
			if vals != nil {
				t.Fatalf("%q: values %q from a line that does not parse", v, vals)
			}
			return
		}
		for _, s := range vals {
			a, ok := parseNode(s)
			if ok != a.IsValid() || ok && (a.Is4In6() || a.Zone() != "") {
				t.Fatalf("node %q parsed as %v, %v", s, a, ok)
			}
		}
		// Parsing is stable: the values, written back as quoted-strings,
		// parse alike.
		var b strings.Builder
		for i, s := range vals {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(`for="`)
			b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s))
			b.WriteString(`"`)
		}
		again, ok := parseForwarded(b.String())
		if !ok || strings.Join(again, "\x00") != strings.Join(vals, "\x00") {
			t.Fatalf("%q gave %q; written back as %q it gave %q, %v", v, vals, b.String(), again, ok)
		}
	})
}

// Addresses written the way RFC 7239 says come back as they went in.
func TestForwardedRoundTrip(t *testing.T) {
	addrs := []string{"192.0.2.60", "2001:db8:cafe::17", "::1", "203.0.113.255", "::ffff:192.0.2.1"}
	var lines []string
	var want []netip.Addr
	for i, s := range addrs {
		a := netip.MustParseAddr(s)
		node := a.String()
		if a.Is6() {
			node = "[" + node + "]"
		}
		if i%2 == 1 {
			node += fmt.Sprintf(":%d", 1000+i)
		}
		lines = append(lines, fmt.Sprintf("for=%q;proto=https", node))
		want = append(want, a.Unmap())
	}
	h := http.Header{"Forwarded": {strings.Join(lines[:2], ", "), strings.Join(lines[2:], ",")}}
	got := forwardedFor(h)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
