package grpclimit_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/grpclimit"
)

// peerCtx is a call from addr with the metadata kv.
func peerCtx(addr net.Addr, kv ...string) context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: addr})
	return metadata.NewIncomingContext(ctx, metadata.Pairs(kv...))
}

func tcp(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestPeerAddress(t *testing.T) {
	proxies := grpclimit.TrustProxies(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::ffff:192.168.1.7/128"))
	manyHops := strings.Repeat("10.0.0.9, ", 40) + "10.0.0.8"
	tests := []struct {
		name string
		opts []grpclimit.IPOption
		ctx  context.Context
		want string
	}{
		{"ipv4 peer, port dropped", nil, peerCtx(tcp("192.0.2.1:5555")), "192.0.2.1"},
		{"ipv6 peer keyed by its /64", nil, peerCtx(tcp("[2001:db8:1:2:3:4:5:6]:5555")), "2001:db8:1:2::/64"},
		{"ipv4-mapped peer", nil, peerCtx(tcp("[::ffff:192.0.2.1]:5555")), "192.0.2.1"},
		{"zone dropped", nil, peerCtx(tcp("[fe80::1%eth0]:1")), "fe80::/64"},
		{"spoofed x-forwarded-for from an untrusted peer is ignored", []grpclimit.IPOption{proxies}, peerCtx(tcp("192.0.2.1:1"), "x-forwarded-for", "203.0.113.9"), "192.0.2.1"},
		{"spoofed x-forwarded-for without TrustProxies is ignored", nil, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", "203.0.113.9"), "10.0.0.2"},
		{"trusted proxy", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", "203.0.113.9"), "203.0.113.9"},
		{"trusted chain, client's own entry on the left ignored", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.3"), "203.0.113.9"},
		{"several values, right to left", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", "1.2.3.4", "x-forwarded-for", "203.0.113.9,,10.0.0.3"), "203.0.113.9"},
		{"every hop trusted: the leftmost", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", "10.0.0.5, 10.0.0.3"), "10.0.0.5"},
		{"malformed entry stops the walk", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", "203.0.113.9, evil\x00host, 10.0.0.3"), "10.0.0.2"},
		{"entry with a port is malformed", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", "203.0.113.9:80"), "10.0.0.2"},
		{"more than 32 hops", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", manyHops), "10.0.0.2"},
		{"empty x-forwarded-for", []grpclimit.IPOption{proxies}, peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", " , "), "10.0.0.2"},
		{"mapped trusted network", []grpclimit.IPOption{proxies}, peerCtx(tcp("192.168.1.7:1"), "x-forwarded-for", "2001:db8::1"), "2001:db8::/64"},
		{"prefix lengths", []grpclimit.IPOption{grpclimit.PrefixLengths(24, 48)}, peerCtx(tcp("192.0.2.77:1")), "192.0.2.0/24"},
		{"ipv6 each address", []grpclimit.IPOption{grpclimit.PrefixLengths(0, 128)}, peerCtx(tcp("[2001:db8::7]:1")), "2001:db8::7"},
		{"non-TCP peer with an IP", nil, peerCtx(&net.UDPAddr{IP: net.ParseIP("192.0.2.4"), Port: 3}), "192.0.2.4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := grpclimit.PeerAddress(tt.opts...)(tt.ctx, "/s/M")
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	for name, ctx := range map[string]context.Context{
		"no peer":     context.Background(),
		"unix socket": peerCtx(&net.UnixAddr{Name: "/tmp/s", Net: "unix"}),
	} {
		if got, err := grpclimit.PeerAddress()(ctx, "/s/M"); !errors.Is(err, grpclimit.ErrNoKey) {
			t.Errorf("%s: %q, %v; want ErrNoKey", name, got, err)
		}
	}
	for _, bad := range [][2]int{{33, 0}, {0, 129}, {-1, 0}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("PrefixLengths%v accepted", bad)
				}
			}()
			grpclimit.PeerAddress(grpclimit.PrefixLengths(bad[0], bad[1]))
		}()
	}
}

func FuzzPeerAddressForwarded(f *testing.F) {
	for _, s := range []string{"203.0.113.9, 10.0.0.3", "", ",,,", "1.2.3.4:5", "[::1]", "2001:db8::1%eth0", strings.Repeat("10.1.1.1,", 50)} {
		f.Add(s)
	}
	key := grpclimit.PeerAddress(grpclimit.TrustProxies(netip.MustParsePrefix("10.0.0.0/8")))
	f.Fuzz(func(t *testing.T, xff string) {
		got, err := key(peerCtx(tcp("10.0.0.2:1"), "x-forwarded-for", xff), "/s/M")
		if err != nil {
			t.Fatal(err)
		}
		if got == "10.0.0.2" {
			return
		}
		if _, err := netip.ParsePrefix(got); err == nil {
			return // an IPv6 client's /64
		}
		if _, err := netip.ParseAddr(got); err != nil || !strings.Contains(xff, got) {
			t.Fatalf("key %q is neither the peer nor an address of x-forwarded-for %q", got, xff)
		}
	})
}

func TestMetadataKey(t *testing.T) {
	key := grpclimit.Metadata("X-API-Key")
	tests := []struct {
		name string
		md   metadata.MD
		want string // "" for ErrNoKey
	}{
		{"present", metadata.Pairs("x-api-key", "k1"), "k1"},
		{"trimmed", metadata.Pairs("x-api-key", "  k1 "), "k1"},
		{"first of several", metadata.Pairs("x-api-key", "k1", "x-api-key", "k2"), "k1"},
		{"missing", metadata.Pairs("other", "k1"), ""},
		{"empty", metadata.Pairs("x-api-key", "  "), ""},
		{"at the bound", metadata.Pairs("x-api-key", strings.Repeat("k", grpclimit.MaxKeyBytes)), strings.Repeat("k", grpclimit.MaxKeyBytes)},
		{"over the bound", metadata.Pairs("x-api-key", strings.Repeat("k", grpclimit.MaxKeyBytes+1)), ""},
		{"huge", metadata.Pairs("x-api-key", strings.Repeat("k", 1<<20)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := key(metadata.NewIncomingContext(context.Background(), tt.md), "/s/M")
			if tt.want == "" {
				if !errors.Is(err, grpclimit.ErrNoKey) || strings.Contains(err.Error(), "kkkk") {
					t.Fatalf("got %q, %v; want ErrNoKey without the value", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	bin := grpclimit.Metadata("x-id-bin")
	raw := "\x00\xff :%\x00"
	if got, err := bin(metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-id-bin", raw)), "/s/M"); err != nil || got != raw {
		t.Fatalf("binary key %q, %v: its bytes as they are", got, err)
	}
}

func TestOtherKeys(t *testing.T) {
	type userKey struct{}
	ctx := context.WithValue(peerCtx(tcp("192.0.2.1:1"), "x-api-key", "k1"), userKey{}, 42)
	tests := []struct {
		name string
		fn   grpclimit.KeyFunc
		want string
	}{
		{"method", grpclimit.Method(), "/a.S/M"},
		{"context value", grpclimit.ContextValue(userKey{}), "42"},
		{"combine", grpclimit.Combine(grpclimit.PeerAddress(), grpclimit.Method()), ratesync.CombineIdentifiers("192.0.2.1", "/a.S/M")},
		{"first of", grpclimit.FirstOf(grpclimit.Metadata("absent"), grpclimit.Metadata("x-api-key")), "k1"},
		{"hashed", grpclimit.Hashed(grpclimit.Metadata("x-api-key")), ratesync.HashIdentifier("k1")},
	}
	for _, tt := range tests {
		if got, err := tt.fn(ctx, "/a.S/M"); err != nil || got != tt.want {
			t.Errorf("%s: %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	for name, fn := range map[string]grpclimit.KeyFunc{
		"context value":   grpclimit.ContextValue("absent"),
		"combine failing": grpclimit.Combine(grpclimit.Method(), grpclimit.Metadata("absent")),
		"first of none":   grpclimit.FirstOf(grpclimit.Metadata("a"), grpclimit.Metadata("b")),
		"hashed failing":  grpclimit.Hashed(grpclimit.Metadata("absent")),
	} {
		if _, err := fn(ctx, "/a.S/M"); !errors.Is(err, grpclimit.ErrNoKey) {
			t.Errorf("%s: %v, want ErrNoKey", name, err)
		}
	}
}

// TestSpoofedAndHostileMetadata sends hostile metadata through a real
// client and server: forged x-forwarded-for cannot change a client's key,
// oversized keys are refused, binary keys with NUL bytes are keys like
// any other.
func TestSpoofedAndHostileMetadata(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{
		"ip":  {RatePerSecond: 0.01, Burst: 1},
		"key": {RatePerSecond: 0.01, Burst: 1},
	})
	const svc = "/grpc.testing.TestService/"
	c := serve(t, nil, grpc.ChainUnaryInterceptor(
		grpclimit.Methods{svc + "EmptyCall": limiter(t, r, "ip")}.UnaryServerInterceptor(grpclimit.PeerAddress()),
		grpclimit.Methods{svc + "UnaryCall": limiter(t, r, "key")}.UnaryServerInterceptor(grpclimit.FirstOf(grpclimit.Metadata("x-id-bin"), grpclimit.Metadata("x-api-key"))),
	))
	ctx := callCtx(t)
	with := func(kv ...string) context.Context { return metadata.AppendToOutgoingContext(ctx, kv...) }

	// Each call claims another address: they all share the peer's bucket.
	if _, err := c.EmptyCall(with("x-forwarded-for", "203.0.113.1"), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_, err := c.EmptyCall(with("x-forwarded-for", "203.0.113."+string(rune('2'+i)), "x-real-ip", "198.51.100.1"), &testgrpc.Empty{})
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("spoofed call %d: %v, want denied by the peer's bucket", i+1, err)
		}
	}

	// Keys over MaxKeyBytes: InvalidArgument, and the value is not echoed.
	for _, n := range []int{grpclimit.MaxKeyBytes + 1, 64 << 10} {
		big := strings.Repeat("k", n)
		_, err := c.UnaryCall(with("x-api-key", big), &testgrpc.SimpleRequest{})
		if status.Code(err) != codes.InvalidArgument || strings.Contains(status.Convert(err).Message(), "kkk") {
			t.Fatalf("key of %d bytes: %v", n, err)
		}
	}
	// Binary keys with NUL and high bytes: their own buckets.
	for _, id := range []string{"\x00", "\x00\x00", "\xff\x00:%", "a:b", "a%3Ab"} {
		if _, err := c.UnaryCall(with("x-id-bin", id), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("binary key %q: %v", id, err)
		}
		if _, err := c.UnaryCall(with("x-id-bin", id), &testgrpc.SimpleRequest{}); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("binary key %q, second call: %v", id, err)
		}
	}
	// Thousands of values of one key: the first is used.
	kv := []string{}
	for i := range 2000 {
		kv = append(kv, "x-api-key", "v"+strings.Repeat("x", i%7))
	}
	start := time.Now()
	if _, err := c.UnaryCall(with(kv...), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("many values: %v", err)
	}
	if _, err := c.UnaryCall(with("x-api-key", "v"), &testgrpc.SimpleRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("the first of many values is the key: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("many values took %v", el)
	}
}
