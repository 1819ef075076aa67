package httplimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/rate-sync/ratesync-go"
)

// A KeyFunc returns the identifier a request is limited by (a client IP,
// an API key, a user id). An error means the request cannot be identified;
// the middleware then answers with its key-error handler (400 by default)
// instead of letting unidentified requests share one bucket.
type KeyFunc func(r *http.Request) (string, error)

// ErrNoKey is wrapped by the errors of the key functions of this package
// when the request does not carry the value they read.
var ErrNoKey = errors.New("httplimit: no key in request")

// IPOption configures ClientIP.
type IPOption func(*ipOpts)

type ipOpts struct {
	trusted []netip.Prefix
	realIP  bool
	header  string // the proxy header, as given
	v4, v6  int    // prefix lengths
}

// TrustProxies makes ClientIP believe the forwarding headers
// (X-Forwarded-For, or Forwarded with ProxyHeader, and X-Real-IP) of peers
// in these networks (load balancers, reverse proxies).
func TrustProxies(networks ...netip.Prefix) IPOption {
	return func(o *ipOpts) {
		for _, p := range networks {
			o.trusted = append(o.trusted, unmapPrefix(p))
		}
	}
}

// ProxyHeader sets the header trusted proxies write client addresses in:
// "X-Forwarded-For" (the default) or "Forwarded" (RFC 7239). Name the one
// your proxies write: a client can send the other, and it arrives as the
// client wrote it. ClientIP panics on another name.
func ProxyHeader(name string) IPOption { return func(o *ipOpts) { o.header = name } }

// PrefixLengths keys clients by the prefix of their address: ipv4 leading
// bits of an IPv4 address (default 32, the address itself) and ipv6 of an
// IPv6 one (default 64: a subscriber gets a /64 or more, so keying each
// address would let one client use a fresh key per request). Zero keeps a
// default. ClientIP panics on a length out of range (1 to 32, 1 to 128).
func PrefixLengths(ipv4, ipv6 int) IPOption {
	return func(o *ipOpts) {
		if ipv4 != 0 {
			o.v4 = ipv4
		}
		if ipv6 != 0 {
			o.v6 = ipv6
		}
	}
}

// IgnoreRealIP makes ClientIP ignore X-Real-IP (it is read, when the proxy
// header is absent, only from a trusted peer).
func IgnoreRealIP() IPOption { return func(o *ipOpts) { o.realIP = false } }

// ClientIP returns the key function of the client's IP address.
//
// The address is the TCP peer's, unless the peer is a trusted proxy: then
// X-Forwarded-For (or Forwarded, see ProxyHeader) is read right to left,
// skipping trusted hops, and the first untrusted address is the client (a
// client cannot spoof its address by sending its own header, because the
// entries it wrote are left of the ones the proxies appended). If every
// hop is trusted, the leftmost is used. A malformed entry stops the walk,
// and the peer is used: nothing left of it can be trusted, and no other
// header is consulted. Only when the request has no proxy header at all
// is X-Real-IP read, from a trusted peer.
//
// The key is the address in canonical form (IPv4-mapped IPv6 addresses as
// IPv4, zones dropped), or its prefix when PrefixLengths (or FromConfig)
// sets one shorter than the address: by default each IPv6 client is keyed
// by its /64, such as "2001:db8:1:2::/64".
//
// A request with no usable address (a peer address that does not parse, as
// with some Unix-socket listeners) gets an error wrapping ErrNoKey, so the
// middleware answers 400 instead of putting all such requests in one bucket.
func ClientIP(opts ...IPOption) KeyFunc {
	o := ipOpts{realIP: true, header: "X-Forwarded-For", v4: DefaultIPv4PrefixLength, v6: DefaultIPv6PrefixLength}
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkPrefixLengths(o.v4, o.v6); err != nil {
		panic("httplimit: ClientIP: " + err.Error())
	}
	header, err := proxyHeader(o.header)
	if err != nil {
		panic("httplimit: ClientIP: " + err.Error())
	}
	hops := xForwardedFor
	if header == "Forwarded" {
		hops = forwardedFor
	}
	trusted := func(a netip.Addr) bool {
		for _, p := range o.trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) (string, error) {
		peer, err := parseAddr(r.RemoteAddr)
		if err != nil {
			return "", fmt.Errorf("%w: peer address %q: %v", ErrNoKey, r.RemoteAddr, err)
		}
		if len(o.trusted) == 0 || !trusted(peer) {
			if peer.Is4() && o.v4 == 32 {
				return addrString(peer, r.RemoteAddr), nil
			}
			return o.key(peer), nil
		}
		if _, present := r.Header[header]; !present {
			if o.realIP {
				if v := strings.TrimSpace(r.Header.Get("X-Real-IP")); v != "" {
					if a, err := netip.ParseAddr(v); err == nil {
						return o.key(a), nil
					}
				}
			}
			return o.key(peer), nil
		}
		entries := hops(r.Header)
		for i := len(entries) - 1; i >= 0; i-- {
			a := entries[i]
			if !a.IsValid() {
				break // malformed: nothing left of it can be trusted
			}
			if !trusted(a) || i == 0 { // the client, or every hop is a trusted proxy
				return o.key(a), nil
			}
		}
		return o.key(peer), nil
	}
}

// key returns the key of address a: a in canonical form, or its prefix.
func (o *ipOpts) key(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	bits := o.v6
	if a.Is4() {
		bits = o.v4
	}
	if bits >= a.BitLen() {
		return a.String()
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

func checkPrefixLengths(v4, v6 int) error {
	switch {
	case v4 < 1 || v4 > 32:
		return fmt.Errorf("IPv4 prefix length %d: want 1 to 32", v4)
	case v6 < 1 || v6 > 128:
		return fmt.Errorf("IPv6 prefix length %d: want 1 to 128", v6)
	}
	return nil
}

// proxyHeader returns the canonical name of a proxy header.
func proxyHeader(name string) (string, error) {
	switch {
	case strings.EqualFold(name, "X-Forwarded-For"):
		return "X-Forwarded-For", nil
	case strings.EqualFold(name, "Forwarded"):
		return "Forwarded", nil
	}
	return "", fmt.Errorf("proxy header %q: want \"X-Forwarded-For\" or \"Forwarded\"", name)
}

// unmapPrefix returns p with an IPv4-mapped address as IPv4, since
// ClientIP compares unmapped addresses.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// addrString returns a's canonical text, reusing the host part of remote
// when it already is (an IPv4 peer: netip parses only canonical dotted
// quads), to save an allocation per request.
func addrString(a netip.Addr, remote string) string {
	if a.Is4() {
		if h, _, err := net.SplitHostPort(remote); err == nil && !strings.Contains(h, ":") {
			return h
		}
	}
	return a.String()
}

func parseAddr(remote string) (netip.Addr, error) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i] // zone
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, err
	}
	return a.Unmap(), nil
}

// xForwardedFor returns the X-Forwarded-For entries of every such header,
// in order, unmapped; a malformed entry (not an address: a host, a port, a
// garbled list) is the zero Addr.
func xForwardedFor(h http.Header) []netip.Addr {
	var out []netip.Addr
	for _, v := range h.Values("X-Forwarded-For") {
		for part := range strings.SplitSeq(v, ",") {
			p := strings.TrimSpace(part)
			if p == "" {
				continue // an empty list element (RFC 9110 5.6.1)
			}
			a, err := netip.ParseAddr(p)
			if err != nil || a.Zone() != "" {
				a = netip.Addr{}
			}
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Header returns the key function of a request header (an API key, a
// tenant id). A missing or empty header is an error wrapping ErrNoKey.
func Header(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		if v := strings.TrimSpace(r.Header.Get(name)); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%w: header %s", ErrNoKey, name)
	}
}

// ContextValue returns the key function of a value the application put in
// the request context (an authenticated user, a tenant), formatted with
// fmt.Sprint. A missing value is an error wrapping ErrNoKey.
func ContextValue(key any) KeyFunc {
	return func(r *http.Request) (string, error) {
		v := r.Context().Value(key)
		if v == nil {
			return "", fmt.Errorf("%w: context value %v", ErrNoKey, key)
		}
		if s, ok := v.(string); ok {
			if s == "" {
				return "", fmt.Errorf("%w: context value %v is empty", ErrNoKey, key)
			}
			return s, nil
		}
		return fmt.Sprint(v), nil
	}
}

// PathValue returns the key function of a path wildcard of an
// http.ServeMux pattern (r.PathValue(name)), such as {tenant} in
// "/t/{tenant}/items".
func PathValue(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		if v := r.PathValue(name); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%w: path value %s", ErrNoKey, name)
	}
}

// maxBody bounds what FormField and JSONField read.
const maxBody = 1 << 20

// FormField returns the key function of a form field of the request (a
// login form's email). The form is parsed with r.ParseForm, so the handler
// still sees it through r.FormValue.
func FormField(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		if r.Body != nil && r.PostForm == nil {
			r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
		}
		if err := r.ParseForm(); err != nil {
			return "", fmt.Errorf("%w: form: %v", ErrNoKey, err)
		}
		if v := strings.TrimSpace(r.FormValue(name)); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%w: form field %s", ErrNoKey, name)
	}
}

// JSONField returns the key function of a top-level field of a JSON request
// body (a login request's "email"). The body is read (up to 1 MiB) and put
// back, so the handler reads it whole.
func JSONField(name string) KeyFunc {
	return func(r *http.Request) (string, error) {
		if r.Body == nil {
			return "", fmt.Errorf("%w: no body", ErrNoKey)
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return "", fmt.Errorf("%w: body: %v", ErrNoKey, err)
		}
		if len(body) > maxBody {
			return "", fmt.Errorf("%w: body larger than %d bytes", ErrNoKey, maxBody)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			return "", fmt.Errorf("%w: body is not a JSON object: %v", ErrNoKey, err)
		}
		raw, ok := fields[name]
		if !ok {
			return "", fmt.Errorf("%w: JSON field %s", ErrNoKey, name)
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			s = string(raw) // a number or another literal
		}
		if s = strings.TrimSpace(s); s == "" || s == "null" {
			return "", fmt.Errorf("%w: JSON field %s is empty", ErrNoKey, name)
		}
		return s, nil
	}
}

// Combine returns the key function of several keys at once (user and
// endpoint, tenant and user), joined with ratesync.CombineIdentifiers. It
// fails when any part fails.
func Combine(fns ...KeyFunc) KeyFunc {
	return func(r *http.Request) (string, error) {
		parts := make([]string, len(fns))
		for i, fn := range fns {
			v, err := fn(r)
			if err != nil {
				return "", err
			}
			parts[i] = v
		}
		return ratesync.CombineIdentifiers(parts...), nil
	}
}

// FirstOf returns the key of the first function that succeeds: an API key
// when the client sends one, else its IP.
func FirstOf(fns ...KeyFunc) KeyFunc {
	return func(r *http.Request) (string, error) {
		var errs []error
		for _, fn := range fns {
			v, err := fn(r)
			if err == nil {
				return v, nil
			}
			errs = append(errs, err)
		}
		return "", errors.Join(errs...)
	}
}

// Hashed returns fn's key hashed with ratesync.HashIdentifier, so raw
// emails or API keys never become store keys.
func Hashed(fn KeyFunc, opts ...ratesync.HashOption) KeyFunc {
	return func(r *http.Request) (string, error) {
		v, err := fn(r)
		if err != nil {
			return "", err
		}
		return ratesync.HashIdentifier(v, opts...), nil
	}
}
