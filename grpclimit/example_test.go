package grpclimit_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/grpclimit"
)

// exampleServer serves grpc-go's interop test service with opts on a free
// loopback port and returns a client of it and a function that stops both.
func exampleServer(opts ...grpc.ServerOption) (testgrpc.TestServiceClient, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, &testServer{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	return testgrpc.NewTestServiceClient(conn), func() {
		conn.Close()
		srv.Stop()
		<-done
	}
}

// Two calls per client address a minute, on every method of the server:
// the third call is denied with ResourceExhausted, RetryInfo and
// QuotaFailure, and the RateLimit fields as header metadata.
func ExampleUnaryServerInterceptor() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", Algorithm: ratesync.SlidingWindow, Limit: 2, Window: time.Minute})
	api, _ := reg.Get("api")

	client, stop := exampleServer(
		grpc.ChainUnaryInterceptor(grpclimit.UnaryServerInterceptor(api, grpclimit.PeerAddress())),
		grpc.ChainStreamInterceptor(grpclimit.StreamServerInterceptor(api, grpclimit.PeerAddress())),
	)
	defer stop()
	for range 3 {
		var md metadata.MD
		_, err := client.EmptyCall(context.Background(), &testgrpc.Empty{}, grpc.Header(&md))
		st := status.Convert(err)
		fmt.Println(st.Code(), md.Get("ratelimit"), md.Get("retry-after"))
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.RetryInfo:
				fmt.Println("  retry in", d.GetRetryDelay().AsDuration().Round(time.Second))
			case *errdetails.QuotaFailure:
				v := d.GetViolations()[0]
				fmt.Printf("  violated %s: %s\n", v.GetSubject(), v.GetDescription())
			}
		}
	}
	// Output:
	// OK ["api";r=1;t=60] []
	// OK ["api";r=0;t=60] []
	// ResourceExhausted ["api";r=0;t=60] [60]
	//   retry in 1m0s
	//   violated api: at most 2 calls in 1m0s
}

// Limits per method: EmptyCall has a limit of its own, the rest of the
// service shares another, and each API key has its own state in both.
func ExampleMethods() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("cheap", ratesync.Rule{Store: "mem", RatePerSecond: 100, Burst: 100})
	reg.ConfigureLimiter("costly", ratesync.Rule{Store: "mem", RatePerSecond: 0.1, Burst: 1})
	cheap, _ := reg.Get("cheap")
	costly, _ := reg.Get("costly")
	limits := grpclimit.Methods{
		"/grpc.testing.TestService/EmptyCall": cheap,
		"/grpc.testing.TestService/":          costly,
	}
	key := grpclimit.Hashed(grpclimit.Metadata("x-api-key"))
	client, stop := exampleServer(grpc.ChainUnaryInterceptor(limits.UnaryServerInterceptor(key)))
	defer stop()

	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", "k-123")
	for range 2 {
		_, err := client.EmptyCall(ctx, &testgrpc.Empty{})
		fmt.Println("EmptyCall:", status.Code(err))
	}
	for range 2 {
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		fmt.Println("UnaryCall:", status.Code(err))
	}
	_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	fmt.Println("UnaryCall without a key:", status.Code(err))
	// Output:
	// EmptyCall: OK
	// EmptyCall: OK
	// UnaryCall: OK
	// UnaryCall: ResourceExhausted
	// UnaryCall without a key: InvalidArgument
}
