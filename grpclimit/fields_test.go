package grpclimit_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/grpclimit"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// fakeStream captures the header metadata an interceptor sets, for calls
// made without a server.
type fakeStream struct{ md metadata.MD }

func (s *fakeStream) Method() string { return "/a.S/M" }
func (s *fakeStream) SetHeader(md metadata.MD) error {
	s.md = metadata.Join(s.md, md)
	return nil
}
func (s *fakeStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }
func (s *fakeStream) SetTrailer(metadata.MD) error    { return nil }

// fields are the rate limit fields of one response.
type fields struct{ rateLimit, policy, retryAfter string }

// nested makes n calls, each inside the handler of the one before when it
// was admitted (so concurrency leases stay held), and returns each call's
// fields.
func nested(n int, call func(inner func()) fields) []fields {
	out := make([]fields, n)
	var run func(i int)
	run = func(i int) {
		if i == n {
			return
		}
		ran := false
		out[i] = call(func() { ran = true; run(i + 1) })
		if !ran {
			run(i + 1)
		}
	}
	run(0)
	return out
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// TestFieldsMatchHTTPLimit holds the metadata to the values httplimit
// sends in its headers for the same rules and decisions.
func TestFieldsMatchHTTPLimit(t *testing.T) {
	rules := map[string]ratesync.Rule{
		"bucket":      {RatePerSecond: 10, Burst: 5},
		"slow":        {RatePerSecond: 0.5, Burst: 2},
		"window":      {Algorithm: ratesync.SlidingWindow, Limit: 3, Window: 90 * time.Second},
		"concurrency": {MaxConcurrent: 2, LeaseTTL: time.Minute},
		"both":        {RatePerSecond: 10, Burst: 3, MaxConcurrent: 1, LeaseTTL: 30 * time.Second},
	}
	for name := range rules {
		t.Run(name, func(t *testing.T) {
			hr, gr := registry(t, rules), registry(t, rules)
			all := func(*http.Request) (string, error) { return "all", nil }
			want := nested(7, func(inner func()) fields {
				rec := httptest.NewRecorder()
				httplimit.New(limiter(t, hr, name), all)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { inner() })).
					ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				h := rec.Header()
				return fields{h.Get("RateLimit"), h.Get("RateLimit-Policy"), h.Get("Retry-After")}
			})
			got := nested(7, func(inner func()) fields {
				st := &fakeStream{}
				ctx := grpc.NewContextWithServerTransportStream(t.Context(), st)
				grpclimit.UnaryServerInterceptor(limiter(t, gr, name), everyone)(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/a.S/M"},
					func(context.Context, any) (any, error) { inner(); return nil, nil })
				return fields{first(st.md, "ratelimit"), first(st.md, "ratelimit-policy"), first(st.md, "retry-after")}
			})
			denied := 0
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("call %d: gRPC %q, HTTP %q", i+1, got[i], want[i])
				}
				if want[i].retryAfter != "" {
					denied++
				}
			}
			if denied == 0 || want[0].rateLimit == "" {
				t.Fatalf("the sequence shows no denial or no fields: %q", want)
			}
		})
	}
}
