package httplimit_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/rate-sync/ratesync-go/httplimit"
)

// The fuzz targets feed client input to the key functions: they must never
// panic, and their answers must keep their promises. Run one with, for
// example:
//
//	go test -run '^$' -fuzz FuzzClientIP -fuzztime 30s ./httplimit
//
// Inputs the fuzzer finds failing are kept in testdata/fuzz as regression
// seeds and run by every `go test`.

func FuzzClientIP(f *testing.F) {
	for _, s := range [][5]string{
		{"10.0.0.2:1", "203.0.113.5", "", "", ""},
		{"10.0.0.2:1", "198.51.100.9:61000", "6.6.6.6", "", ""},
		{"10.0.0.2:1", "junk, 203.0.113.5, 10.1.1.1", "", "", ""},
		{"10.0.0.2:1", "", "", `for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9`, "f"},
		{"[::ffff:10.0.0.2]:1", "::ffff:1.2.3.4", "", `for="1.2.3.4`, "f"},
		{"[fe80::1%eth0]:80", "", "", "", ""},
		{"@", "1.2.3.4", "", "", ""},
		{"203.0.113.5:1", "1.1.1.1", "2.2.2.2", "for=3.3.3.3", "f"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4] != "")
	}
	trusted := httplimit.TrustProxies(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fc00::/7"))
	xff := httplimit.ClientIP(trusted)
	fwd := httplimit.ClientIP(trusted, httplimit.ProxyHeader("Forwarded"))
	f.Fuzz(func(t *testing.T, remote, xffHdr, realIP, fwdHdr string, forwarded bool) {
		key, header := xff, "X-Forwarded-For"
		if forwarded {
			key, header = fwd, "Forwarded"
		}
		req := func(withHeaders, withRealIP bool) *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = remote
			if withHeaders {
				r.Header["X-Forwarded-For"] = []string{xffHdr}
				r.Header["Forwarded"] = []string{fwdHdr}
				if withRealIP {
					r.Header["X-Real-Ip"] = []string{realIP}
				}
			}
			return r
		}
		got, err := key(req(true, true))
		if err != nil {
			if !errors.Is(err, httplimit.ErrNoKey) {
				t.Fatalf("error %v does not wrap ErrNoKey", err)
			}
			return
		}
		// The key is an address or a prefix, in canonical form.
		if a, err := netip.ParseAddr(got); err == nil {
			if a.String() != got || a.Is4In6() || a.Zone() != "" || a.Is6() {
				t.Fatalf("key %q is not a canonical IPv4 address (IPv6 clients are keyed by their /64)", got)
			}
		} else if p, err := netip.ParsePrefix(got); err != nil || p.String() != got || p.Bits() != 64 || p.Masked() != p {
			t.Fatalf("key %q is neither an address nor a canonical /64", got)
		}
		// An untrusted peer's key ignores every header.
		peer, _ := key(req(false, false))
		if peer == "" {
			t.Fatalf("no key without headers for %q, %q with them", remote, got)
		}
		if !strings.HasPrefix(peer, "10.") && !strings.HasPrefix(peer, "fc") && !strings.HasPrefix(peer, "fd") && got != peer {
			t.Fatalf("untrusted peer %q keyed %q by its headers, want %q", remote, got, peer)
		}
		// X-Real-IP is read only when the proxy header is absent: here it is
		// present, so the key does not depend on it.
		if again, _ := key(req(true, false)); again != got {
			t.Fatalf("with %s present, X-Real-IP %q changed the key from %q to %q", header, realIP, again, got)
		}
	})
}

func FuzzJSONField(f *testing.F) {
	for _, s := range []string{`{"email":"a@example.com"}`, `{"email":7}`, `{"email":null}`, `[1,2]`, `{"email":"\u0000"}`, `{"email":{"x":1}}`, "", `{"email":"a","email":"b"}`} {
		f.Add([]byte(s))
	}
	key := httplimit.JSONField("email")
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		got, err := key(r)
		if err != nil && !errors.Is(err, httplimit.ErrNoKey) {
			t.Fatalf("error %v does not wrap ErrNoKey", err)
		}
		if err == nil && (got == "" || strings.TrimSpace(got) != got) {
			t.Fatalf("key %q: empty or untrimmed", got)
		}
		// The handler still reads the whole body.
		rest, _ := io.ReadAll(r.Body)
		if !bytes.Equal(rest, body) {
			t.Fatalf("the handler reads %q, the client sent %q", rest, body)
		}
	})
}

func FuzzFormField(f *testing.F) {
	for _, s := range []string{"email=a%40example.com", "email=", "email=%zz", "a=1&email=x&email=y", ";;;", "email=" + strings.Repeat("x", 100)} {
		f.Add(s, "application/x-www-form-urlencoded", "")
	}
	f.Add("x", "multipart/form-data; boundary=zz", "email=q")
	key := httplimit.FormField("email")
	f.Fuzz(func(t *testing.T, body, ctype, query string) {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		r.Header.Set("Content-Type", ctype)
		if u, err := url.ParseQuery(query); err == nil {
			r.URL.RawQuery = u.Encode()
		}
		got, err := key(r)
		if err != nil {
			if !errors.Is(err, httplimit.ErrNoKey) {
				t.Fatalf("error %v does not wrap ErrNoKey", err)
			}
			return
		}
		// The key is what the handler sees.
		if got == "" || got != strings.TrimSpace(r.FormValue("email")) {
			t.Fatalf("key %q, the handler's FormValue %q", got, r.FormValue("email"))
		}
	})
}
