package httplimit_test

import (
	"errors"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

func loadConfig(t *testing.T, toml string) (*ratesync.Registry, error) {
	t.Helper()
	cfg, err := ratesync.ParseConfig("test.toml", []byte(toml))
	if err != nil {
		return nil, err
	}
	r := ratesync.NewRegistry()
	t.Cleanup(func() { r.Close() })
	return r, r.ApplyConfig(cfg)
}

func TestConfigHTTPTable(t *testing.T) {
	for _, table := range []string{"http", "fastapi"} {
		r, err := loadConfig(t, "["+table+"]\ntrusted_proxy_networks = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1/128\", \"::ffff:172.16.0.0/108\"]\n")
		if err != nil {
			t.Fatal(err)
		}
		c := httplimit.ConfigOf(r)
		want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"),
			netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("172.16.0.0/12")}
		if !slices.Equal(c.TrustedProxyNetworks, want) || c.ProxyHeader != "X-Forwarded-For" || c.IPv4PrefixLength != 32 || c.IPv6PrefixLength != 64 {
			t.Fatalf("[%s]: %+v", table, c)
		}
	}
	r, err := loadConfig(t, "[http]\ntrusted_proxy_networks = [\"10.0.0.0/8\"]\nproxy_header = \"forwarded\"\nipv4_prefix_length = 24\nipv6_prefix_length = \"${RATESYNC_TEST_V6:-56}\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if c := httplimit.ConfigOf(r); c.ProxyHeader != "Forwarded" || c.IPv4PrefixLength != 24 || c.IPv6PrefixLength != 56 {
		t.Fatalf("%+v", c)
	}
	// FromConfig applies all of it.
	key := httplimit.ClientIP(httplimit.FromConfig(r))
	for _, tt := range []struct{ remote, fwd, want string }{
		{"10.0.0.2:1", `for="[2001:db8:1:2ff::9]:4711"`, "2001:db8:1:200::/56"},
		{"10.0.0.2:1", "for=203.0.113.77", "203.0.113.0/24"},
		{"203.0.113.77:1", "for=198.51.100.1", "203.0.113.0/24"},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = tt.remote
		req.Header.Set("Forwarded", tt.fwd)
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		if got, err := key(req); err != nil || got != tt.want {
			t.Errorf("%s with Forwarded %s: %q, %v; want %q", tt.remote, tt.fwd, got, err, tt.want)
		}
	}
	// A registry without [http]: the zero Config, and ClientIP's defaults.
	r, _ = loadConfig(t, "")
	if c := httplimit.ConfigOf(r); c.TrustedProxyNetworks != nil || c.ProxyHeader != "" {
		t.Fatalf("no [http]: %+v", c)
	}
}

func TestConfigHTTPErrors(t *testing.T) {
	for _, tt := range []struct{ name, toml string }{
		{"bad network", "[http]\ntrusted_proxy_networks = [\"10.0.0.0/33\"]\n|test.toml:2|trusted_proxy_networks|not a network"},
		{"not a list", "[http]\ntrusted_proxy_networks = \"10.0.0.0/8\"\n|test.toml:2|want an array"},
		{"unknown key", "[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n|test.toml:2|[http] trusted_proxies|unknown key|trusted_proxy_networks"},
		{"unknown key under the alias", "\n[fastapi]\nipv6_prefix = 48\n|test.toml:3|[fastapi] ipv6_prefix|unknown key"},
		{"both names", "[http]\ntrusted_proxy_networks = []\n[fastapi]\ntrusted_proxy_networks = []\n|[http] under two names|keep one"},
		{"bad header", "[http]\nproxy_header = \"X-Real-IP\"\n|test.toml:2|proxy_header|want \"X-Forwarded-For\" or \"Forwarded\""},
		{"v6 length", "[http]\nipv6_prefix_length = 129\n|test.toml:2|ipv6_prefix_length|want 1 to 128"},
		{"v4 length", "[http]\nipv4_prefix_length = 0\n|test.toml:2|ipv4_prefix_length|want 1 to 32"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			parts := strings.Split(tt.toml, "|")
			_, err := loadConfig(t, parts[0])
			if err == nil || !errors.Is(err, ratesync.ErrInvalidConfig) {
				t.Fatalf("got %v, want a configuration error", err)
			}
			for _, w := range parts[1:] {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
