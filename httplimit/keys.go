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
}

// TrustProxies makes ClientIP believe X-Forwarded-For and X-Real-IP from
// peers in these networks (load balancers, reverse proxies).
func TrustProxies(networks ...netip.Prefix) IPOption {
	return func(o *ipOpts) { o.trusted = append(o.trusted, networks...) }
}

// TrustProxiesFrom trusts the networks of reg's [http]
// trusted_proxy_networks configuration.
func TrustProxiesFrom(reg *ratesync.Registry) IPOption {
	return TrustProxies(reg.HTTP().TrustedProxyNetworks...)
}

// IgnoreRealIP makes ClientIP ignore X-Real-IP (it is read, after
// X-Forwarded-For, only from a trusted peer).
func IgnoreRealIP() IPOption { return func(o *ipOpts) { o.realIP = false } }

// ClientIP returns the key function of the client's IP address.
//
// The address is the TCP peer's, unless the peer is a trusted proxy: then
// X-Forwarded-For is read right to left, skipping trusted hops, and the
// first untrusted address is the client (a client cannot spoof its address
// by sending its own X-Forwarded-For, because the entries it wrote are left
// of the ones the proxies appended). If every hop is trusted, the leftmost
// is used; without X-Forwarded-For, X-Real-IP from a trusted peer. Each
// address is its own key, in canonical form (IPv4-mapped IPv6 addresses as
// IPv4).
//
// A request with no usable address (a peer address that does not parse, as
// with some Unix-socket listeners) gets an error wrapping ErrNoKey, so the
// middleware answers 400 instead of putting all such requests in one bucket.
func ClientIP(opts ...IPOption) KeyFunc {
	o := ipOpts{realIP: true}
	for _, opt := range opts {
		opt(&o)
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
			return addrString(peer, r.RemoteAddr), nil
		}
		hops := forwardedFor(r.Header)
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(hops[i])
			if err != nil {
				// A malformed entry: nothing left of it can be trusted.
				break
			}
			a = a.Unmap()
			if !trusted(a) {
				return a.String(), nil
			}
			if i == 0 {
				return a.String(), nil // every hop is a trusted proxy
			}
		}
		if o.realIP {
			if v := strings.TrimSpace(r.Header.Get("X-Real-IP")); v != "" {
				if a, err := netip.ParseAddr(v); err == nil {
					return a.Unmap().String(), nil
				}
			}
		}
		return peer.String(), nil
	}
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

// forwardedFor returns the X-Forwarded-For entries of every such header,
// in order.
func forwardedFor(h http.Header) []string {
	var out []string
	for _, v := range h.Values("X-Forwarded-For") {
		for _, part := range strings.Split(v, ",") {
			if p := strings.TrimSpace(part); p != "" {
				out = append(out, p)
			}
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
