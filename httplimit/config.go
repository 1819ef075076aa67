package httplimit

import (
	"net/netip"
	"strings"

	"github.com/rate-sync/ratesync-go"
)

func init() { ratesync.RegisterSection("http", parseConfig) }

// Config is the [http] table of a configuration file ([fastapi], rate-sync's
// name for it, is read too), as ClientIP uses it through FromConfig:
//
//	[http]
//	trusted_proxy_networks = ["10.0.0.0/8", "192.168.1.7"]
//	proxy_header = "X-Forwarded-For"  # or "Forwarded" (RFC 7239)
//	ipv4_prefix_length = 32           # the default
//	ipv6_prefix_length = 64           # the default: one key per /64
//
// The zero Config trusts no proxy and uses the defaults.
type Config struct {
	// TrustedProxyNetworks are the networks whose forwarding headers are
	// believed (trusted_proxy_networks; an address is a network of one).
	TrustedProxyNetworks []netip.Prefix
	// ProxyHeader is the header trusted proxies write the client address
	// in: "X-Forwarded-For" (the default) or "Forwarded" (proxy_header).
	ProxyHeader string
	// IPv4PrefixLength and IPv6PrefixLength are the lengths of the
	// prefixes clients are keyed by (ipv4_prefix_length, default 32: each
	// address; ipv6_prefix_length, default 64: each /64). Zero means the
	// default.
	IPv4PrefixLength int
	IPv6PrefixLength int
}

// The default prefix lengths ClientIP keys clients by: each IPv4 address,
// and each IPv6 /64, the block one subscriber gets (RFC 6177), so that a
// client cannot take a fresh key per address of its own /64.
const (
	DefaultIPv4PrefixLength = 32
	DefaultIPv6PrefixLength = 64
)

func parseConfig(t *ratesync.SectionConfig) (any, error) {
	var c Config
	nets, err := t.Strings("trusted_proxy_networks")
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		p, err := parsePrefix(n)
		if err != nil {
			return nil, t.Errorf("trusted_proxy_networks", "%q is not a network: write a CIDR such as \"10.0.0.0/8\" or an address", n)
		}
		c.TrustedProxyNetworks = append(c.TrustedProxyNetworks, p)
	}
	h, err := t.String("proxy_header", "X-Forwarded-For")
	if err != nil {
		return nil, err
	}
	if c.ProxyHeader, err = proxyHeader(h); err != nil {
		return nil, t.Errorf("proxy_header", "%v", err)
	}
	if c.IPv4PrefixLength, err = t.Int("ipv4_prefix_length", DefaultIPv4PrefixLength); err != nil {
		return nil, err
	}
	if c.IPv6PrefixLength, err = t.Int("ipv6_prefix_length", DefaultIPv6PrefixLength); err != nil {
		return nil, err
	}
	if err := checkPrefixLengths(c.IPv4PrefixLength, c.IPv6PrefixLength); err != nil {
		key := "ipv4_prefix_length"
		if strings.Contains(err.Error(), "IPv6") {
			key = "ipv6_prefix_length"
		}
		return nil, t.Errorf(key, "%v", err)
	}
	return &c, nil
}

// ConfigOf returns the [http] settings of the configuration loaded into
// reg; the zero Config when it had no [http] table.
func ConfigOf(reg *ratesync.Registry) Config {
	if c, ok := reg.Section("http").(*Config); ok {
		return *c
	}
	return Config{}
}

// FromConfig makes ClientIP use the [http] settings of the configuration
// loaded into reg (see Config): its trusted proxies, proxy header and
// prefix lengths. Options after it override them.
func FromConfig(reg *ratesync.Registry) IPOption {
	c := ConfigOf(reg)
	return func(o *ipOpts) {
		o.trusted = append(o.trusted, c.TrustedProxyNetworks...)
		if c.ProxyHeader != "" {
			o.header = c.ProxyHeader
		}
		if c.IPv4PrefixLength != 0 {
			o.v4 = c.IPv4PrefixLength
		}
		if c.IPv6PrefixLength != 0 {
			o.v6 = c.IPv6PrefixLength
		}
	}
}

// parsePrefix parses a CIDR, or a single address as a one-address network.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return unmapPrefix(p.Masked()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
