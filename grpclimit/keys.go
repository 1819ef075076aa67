package grpclimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/rate-sync/ratesync-go"
)

// A KeyFunc returns the identifier a call is limited by (a client address,
// an API key, a user id); fullMethod is the call's "/package.Service/Method".
// An error means the call cannot be identified: the interceptor then answers
// with its key-error function (codes.InvalidArgument by default) instead of
// letting unidentified calls share one bucket.
type KeyFunc func(ctx context.Context, fullMethod string) (string, error)

// ErrNoKey is wrapped by the errors of the key functions of this package
// when the call does not carry the value they read.
var ErrNoKey = errors.New("grpclimit: no key in call")

// MaxKeyBytes bounds a metadata value used as a key: Metadata rejects a
// longer value (an error wrapping ErrNoKey), so a client cannot make every
// decision carry megabytes of identifier.
const MaxKeyBytes = 1024

// maxHops bounds how many x-forwarded-for entries PeerAddress reads, right
// to left, from a trusted proxy.
const maxHops = 32

// IPOption configures PeerAddress.
type IPOption func(*ipOpts)

type ipOpts struct {
	trusted []netip.Prefix
	v4, v6  int
}

// The default prefix lengths PeerAddress keys clients by: each IPv4
// address, and each IPv6 /64 (the block one subscriber gets), as
// httplimit.ClientIP does.
const (
	DefaultIPv4PrefixLength = 32
	DefaultIPv6PrefixLength = 64
)

// TrustProxies makes PeerAddress believe the x-forwarded-for metadata of
// peers in these networks (a load balancer or proxy in front of the
// server). Without it the metadata is ignored: a client can send any.
// httplimit.ConfigOf(reg).TrustedProxyNetworks gives the networks of an
// [http] table.
func TrustProxies(networks ...netip.Prefix) IPOption {
	return func(o *ipOpts) {
		for _, p := range networks {
			if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			o.trusted = append(o.trusted, p.Masked())
		}
	}
}

// PrefixLengths keys clients by the prefix of their address: ipv4 leading
// bits of an IPv4 address (default 32, the address itself) and ipv6 of an
// IPv6 one (default 64). Zero keeps a default. PeerAddress panics on a
// length out of range (1 to 32, 1 to 128).
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

// PeerAddress returns the key function of the client's IP address, without
// the port.
//
// The address is the connection peer's, unless the peer is in a network of
// TrustProxies: then the x-forwarded-for metadata is read right to left,
// skipping trusted hops, and the first untrusted address is the client
// (what a client wrote itself is left of what its proxies appended). If
// every hop is trusted, the leftmost is used. A malformed entry, or more
// than 32 hops, stops the walk and the peer is used.
//
// The key is the address in canonical form (IPv4-mapped IPv6 addresses as
// IPv4, zones dropped), or its prefix: by default each IPv6 client is keyed
// by its /64, such as "2001:db8:1:2::/64". A call with no IP peer (a Unix
// socket, an in-process transport) gets an error wrapping ErrNoKey.
func PeerAddress(opts ...IPOption) KeyFunc {
	o := ipOpts{v4: DefaultIPv4PrefixLength, v6: DefaultIPv6PrefixLength}
	for _, opt := range opts {
		opt(&o)
	}
	if o.v4 < 1 || o.v4 > 32 || o.v6 < 1 || o.v6 > 128 {
		panic(fmt.Sprintf("grpclimit: PeerAddress: prefix lengths %d and %d: want 1 to 32 and 1 to 128", o.v4, o.v6))
	}
	return func(ctx context.Context, _ string) (string, error) {
		p, ok := peer.FromContext(ctx)
		if !ok || p.Addr == nil {
			return "", fmt.Errorf("%w: no peer", ErrNoKey)
		}
		a, ok := peerAddr(p.Addr)
		if !ok {
			return "", fmt.Errorf("%w: peer address %q is not an IP address", ErrNoKey, p.Addr.String())
		}
		if len(o.trusted) > 0 && o.trusts(a) {
			a = o.forwarded(ctx, a)
		}
		return o.key(a), nil
	}
}

func (o *ipOpts) trusts(a netip.Addr) bool {
	for _, p := range o.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwarded walks x-forwarded-for right to left from the trusted peer and
// returns the client's address (the peer when the list is absent or
// malformed).
func (o *ipOpts) forwarded(ctx context.Context, peerIP netip.Addr) netip.Addr {
	vals := metadata.ValueFromIncomingContext(ctx, "x-forwarded-for")
	hops := 0
	var last netip.Addr
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for v != "" {
			part := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				part, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			part = strings.TrimSpace(part)
			if part == "" {
				continue // an empty list element
			}
			if hops++; hops > maxHops {
				return peerIP
			}
			a, err := netip.ParseAddr(part)
			if err != nil || a.Zone() != "" {
				return peerIP // malformed: nothing left of it can be trusted
			}
			last = a.Unmap()
			if !o.trusts(last) {
				return last
			}
		}
	}
	if last.IsValid() {
		return last // every hop is a trusted proxy: the leftmost
	}
	return peerIP
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

// peerAddr returns the IP address of a connection peer.
func peerAddr(addr net.Addr) (netip.Addr, bool) {
	if t, ok := addr.(*net.TCPAddr); ok {
		a := t.AddrPort().Addr()
		return a.Unmap().WithZone(""), a.IsValid()
	}
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// Metadata returns the key function of a request metadata value (an API
// key, a tenant id), such as Metadata("x-api-key"); the name is case
// insensitive. The first value is used, trimmed of spaces unless the key
// is binary ("-bin", whose bytes are used as they are). A missing or empty
// value, or one longer than MaxKeyBytes, is an error wrapping ErrNoKey.
// Any bytes are a valid key: ratesync escapes them in store keys.
func Metadata(name string) KeyFunc {
	name = strings.ToLower(name)
	binary := strings.HasSuffix(name, "-bin")
	return func(ctx context.Context, _ string) (string, error) {
		vals := metadata.ValueFromIncomingContext(ctx, name)
		if len(vals) == 0 {
			return "", fmt.Errorf("%w: metadata %s", ErrNoKey, name)
		}
		v := vals[0]
		if len(v) > MaxKeyBytes {
			return "", fmt.Errorf("%w: metadata %s of %d bytes (at most %d)", ErrNoKey, name, len(v), MaxKeyBytes)
		}
		if !binary {
			v = strings.TrimSpace(v)
		}
		if v == "" {
			return "", fmt.Errorf("%w: metadata %s is empty", ErrNoKey, name)
		}
		return v, nil
	}
}

// Method returns the key function of the called method
// ("/package.Service/Method"): one limiter for a whole service, with each
// method's own state. Combine it with another key to limit each client per
// method.
func Method() KeyFunc {
	return func(_ context.Context, fullMethod string) (string, error) { return fullMethod, nil }
}

// ContextValue returns the key function of a value an earlier interceptor
// put in the call's context (an authenticated user, a tenant), formatted
// with fmt.Sprint. A missing or empty value is an error wrapping ErrNoKey.
func ContextValue(key any) KeyFunc {
	return func(ctx context.Context, _ string) (string, error) {
		v := ctx.Value(key)
		if v == nil {
			return "", fmt.Errorf("%w: context value %v", ErrNoKey, key)
		}
		s, ok := v.(string)
		if !ok {
			s = fmt.Sprint(v)
		}
		if s == "" {
			return "", fmt.Errorf("%w: context value %v is empty", ErrNoKey, key)
		}
		return s, nil
	}
}

// Combine returns the key function of several keys at once (client and
// method, tenant and user), joined with ratesync.CombineIdentifiers so that
// distinct parts stay distinct keys. It fails when any part fails.
func Combine(fns ...KeyFunc) KeyFunc {
	return func(ctx context.Context, fullMethod string) (string, error) {
		parts := make([]string, len(fns))
		for i, fn := range fns {
			v, err := fn(ctx, fullMethod)
			if err != nil {
				return "", err
			}
			parts[i] = v
		}
		return ratesync.CombineIdentifiers(parts...), nil
	}
}

// FirstOf returns the key of the first function that succeeds: an API key
// when the client sends one, else its address.
func FirstOf(fns ...KeyFunc) KeyFunc {
	return func(ctx context.Context, fullMethod string) (string, error) {
		var errs []error
		for _, fn := range fns {
			v, err := fn(ctx, fullMethod)
			if err == nil {
				return v, nil
			}
			errs = append(errs, err)
		}
		return "", errors.Join(errs...)
	}
}

// Hashed returns fn's key hashed with ratesync.HashIdentifier, so raw API
// keys never become store keys.
func Hashed(fn KeyFunc, opts ...ratesync.HashOption) KeyFunc {
	return func(ctx context.Context, fullMethod string) (string, error) {
		v, err := fn(ctx, fullMethod)
		if err != nil {
			return "", err
		}
		return ratesync.HashIdentifier(v, opts...), nil
	}
}
