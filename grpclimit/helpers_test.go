package grpclimit_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis pools reap idle connections in the background.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"))
}

// testServer is grpc-go's interop test service: EmptyCall and UnaryCall
// run the hooks the test sets, FullDuplexCall echoes until the client
// closes its side.
type testServer struct {
	testgrpc.UnimplementedTestServiceServer
	empty func(ctx context.Context) error // nil: answer at once
}

func (s *testServer) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	if s.empty != nil {
		if err := s.empty(ctx); err != nil {
			return nil, err
		}
	}
	return &testgrpc.Empty{}, nil
}

func (s *testServer) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetFillUsername() {
		panic("handler panics")
	}
	return &testgrpc.SimpleResponse{}, nil
}

func (s *testServer) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetResponseStatus().GetCode() == 99 {
			panic("stream handler panics")
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
}

// recovery turns a handler's panic into codes.Internal, as
// grpc-ecosystem's recovery interceptor does.
func recovery(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = status.Errorf(codes.Internal, "panic: %v", p)
		}
	}()
	return h(ctx, req)
}

func streamRecovery(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = status.Errorf(codes.Internal, "panic: %v", p)
		}
	}()
	return h(srv, ss)
}

// serve starts a gRPC server with opts on 127.0.0.1:0 and returns a client
// of it; both stop when the test ends.
func serve(t *testing.T, srv *testServer, opts ...grpc.ServerOption) testgrpc.TestServiceClient {
	t.Helper()
	return serveWith(t, srv, opts, nil)
}

func serveWith(t *testing.T, srv *testServer, opts []grpc.ServerOption, dial []grpc.DialOption) testgrpc.TestServiceClient {
	t.Helper()
	if srv == nil {
		srv = &testServer{}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(s, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ln)
	}()
	conn, err := grpc.NewClient(ln.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
		<-done
	})
	return testgrpc.NewTestServiceClient(conn)
}

// registry returns a registry with a memory store "mem" and the rules, each
// on it unless it names a store.
func registry(t *testing.T, rules map[string]ratesync.Rule) *ratesync.Registry {
	t.Helper()
	r := ratesync.NewRegistry()
	t.Cleanup(func() { r.Close() })
	if err := r.ConfigureStore("mem", "memory", nil); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		if rule.Store == "" {
			rule.Store = "mem"
		}
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func limiter(t *testing.T, r *ratesync.Registry, name string) *ratesync.Limiter {
	t.Helper()
	l, err := r.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// callCtx is a test call's context: bounded, so a broken test fails
// instead of hanging.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually spins (yielding, no sleeps) until cond holds, for at most 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// denial is what a client sees of a denied call.
type denial struct {
	code      codes.Code
	retry     time.Duration
	subject   string
	quotaID   string
	quota     int64
	desc      string
	hasRetry  bool
	hasQuotaF bool
}

func denialOf(t *testing.T, err error) denial {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a status error: %v", err)
	}
	d := denial{code: st.Code()}
	for _, det := range st.Details() {
		switch v := det.(type) {
		case *errdetails.RetryInfo:
			d.hasRetry, d.retry = true, v.GetRetryDelay().AsDuration()
		case *errdetails.QuotaFailure:
			d.hasQuotaF = true
			if len(v.GetViolations()) != 1 {
				t.Fatalf("QuotaFailure with %d violations, want 1", len(v.GetViolations()))
			}
			vi := v.GetViolations()[0]
			d.subject, d.quotaID, d.quota, d.desc = vi.GetSubject(), vi.GetQuotaId(), vi.GetQuotaValue(), vi.GetDescription()
		case error:
			t.Fatalf("detail does not decode: %v", v)
		}
	}
	return d
}

func (d denial) String() string {
	return fmt.Sprintf("%v retry=%v(%v) quota=%v %q/%q q=%d", d.code, d.retry, d.hasRetry, d.hasQuotaF, d.subject, d.quotaID, d.quota)
}
