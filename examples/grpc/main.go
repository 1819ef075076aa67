// Command grpc limits a gRPC service with package grpclimit: it starts a
// server on a free loopback port and a client in the same program, makes
// calls until one is denied, prints the denial as the client sees it
// (status, details, metadata), then calls through a client interceptor
// that honours RetryInfo.
//
//	go run ./examples/grpc                       # memory store
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/grpc
//
// The service is grpc-go's interop test service (grpc.testing.TestService),
// so the example needs no generated code of its own. The limits are in
// rate-sync.toml beside this file (embedded), or in the file
// RATE_SYNC_CONFIG names.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/grpclimit"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

//go:embed rate-sync.toml
var defaultConfig []byte

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// service answers every unary call at once.
type service struct {
	testgrpc.UnimplementedTestServiceServer
}

func (service) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{}, nil
}

// run serves, calls and prints what the client sees to w.
func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := configure(reg); err != nil {
		return err
	}
	api, err := reg.Get("api")
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(grpclimit.UnaryServerInterceptor(api, grpclimit.PeerAddress())),
		grpc.ChainStreamInterceptor(grpclimit.StreamServerInterceptor(api, grpclimit.PeerAddress())),
	)
	testgrpc.RegisterTestServiceServer(srv, service{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Stop()
		<-served
	}()
	fmt.Fprintln(w, "server listening on", ln.Addr())

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)

	// Calls until the burst is spent: the fourth is denied.
	for i := 1; ; i++ {
		var md metadata.MD
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&md))
		if err == nil {
			fmt.Fprintf(w, "call %d: OK  ratelimit: %s\n", i, strings.Join(md.Get("ratelimit"), ", "))
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			return err
		}
		fmt.Fprintf(w, "call %d: denied, as the client sees it:\n", i)
		printDenial(w, err, md)
		break
	}

	// A client that honours RetryInfo: each call waits the delay the
	// server gave and tries again.
	retries := 0
	honouring, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(honourRetryInfo(3, func(d time.Duration) {
			retries++
			fmt.Fprintf(w, "  denied: waiting %v as RetryInfo says\n", d.Round(10*time.Millisecond))
		})))
	if err != nil {
		return err
	}
	defer honouring.Close()
	fmt.Fprintln(w, "client honouring RetryInfo:")
	hc := testgrpc.NewTestServiceClient(honouring)
	for i := 1; i <= 2; i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := hc.UnaryCall(cctx, &testgrpc.SimpleRequest{})
		cancel()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  call %d: OK\n", i)
	}
	m := api.Metrics()
	fmt.Fprintf(w, "limiter api: %d admitted, %d denied, %d retries\n", m.Acquisitions, m.Denials, retries)
	return nil
}

// printDenial prints a denied call's status, details and header metadata.
func printDenial(w io.Writer, err error, md metadata.MD) {
	st := status.Convert(err)
	fmt.Fprintf(w, "  status:   %v: %s\n", st.Code(), st.Message())
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			fmt.Fprintf(w, "  details:  google.rpc.RetryInfo{retry_delay: %v}\n", d.GetRetryDelay().AsDuration().Round(10*time.Millisecond))
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(w, "            google.rpc.QuotaFailure{subject: %q, description: %q, quota_id: %q, quota_value: %d}\n",
					v.GetSubject(), v.GetDescription(), v.GetQuotaId(), v.GetQuotaValue())
			}
		}
	}
	sep := "  metadata: "
	for _, k := range []string{"ratelimit", "ratelimit-policy", "retry-after"} {
		fmt.Fprintf(w, "%s%s: %s\n", sep, k, strings.Join(md.Get(k), ", "))
		sep = "            "
	}
}

// honourRetryInfo returns a client interceptor that retries a call denied
// with codes.ResourceExhausted after the RetryInfo delay, up to max times,
// within the call's deadline. A denial without RetryInfo is returned.
func honourRetryInfo(max int, onRetry func(time.Duration)) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for attempt := 0; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted || attempt == max {
				return err
			}
			delay := time.Duration(-1)
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok {
					delay = ri.GetRetryDelay().AsDuration()
				}
			}
			if dl, ok := ctx.Deadline(); delay < 0 || ok && time.Until(dl) < delay {
				return err // no retry advised, or not before the deadline
			}
			onRetry(delay)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			case <-t.C:
			}
		}
	}
}

// configure loads the embedded rate-sync.toml (or RATE_SYNC_CONFIG's
// file) into reg, and puts store "main" on REDIS_URL when it is set.
func configure(reg *ratesync.Registry) error {
	cfg, err := ratesync.ParseConfig("examples/grpc/rate-sync.toml", defaultConfig)
	if path := os.Getenv(ratesync.ConfigEnv); path != "" {
		var data []byte
		if data, err = os.ReadFile(path); err == nil {
			cfg, err = ratesync.ParseConfig(path, data)
		}
	}
	if err != nil {
		return err
	}
	if err := reg.ApplyConfig(cfg); err != nil {
		return err
	}
	if url := os.Getenv("REDIS_URL"); url != "" {
		return reg.ConfigureStore("main", "redis", map[string]any{"url": url, "key_prefix": "example-grpc"})
	}
	return nil
}
