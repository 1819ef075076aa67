package grpclimit_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/grpclimit"
)

// everyone keys every call alike: a limit for the whole server.
func everyone(context.Context, string) (string, error) { return "all", nil }

func TestUnaryDenialAsTheClientSeesIt(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {Algorithm: ratesync.SlidingWindow, Limit: 2, Window: time.Minute}})
	c := serve(t, nil, grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(limiter(t, r, "api"), grpclimit.PeerAddress())))
	ctx := callCtx(t)
	for i, wantR := range []string{`"api";r=1;t=60`, `"api";r=0;t=60`} {
		var md metadata.MD
		if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&md)); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
		if got := md.Get("ratelimit"); len(got) != 1 || got[0] != wantR {
			t.Errorf("call %d: ratelimit %q, want %q", i+1, got, wantR)
		}
		if got := md.Get("ratelimit-policy"); len(got) != 1 || got[0] != `"api";q=2;w=60` {
			t.Errorf("call %d: ratelimit-policy %q", i+1, got)
		}
		if got := md.Get("retry-after"); got != nil {
			t.Errorf("call %d (admitted): retry-after %q", i+1, got)
		}
	}
	var md metadata.MD
	_, err := c.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&md))
	d := denialOf(t, err)
	if d.code != codes.ResourceExhausted || !d.hasRetry || d.retry <= 59*time.Second || d.retry > time.Minute {
		t.Fatalf("denial %v, want ResourceExhausted with RetryInfo of about 60s", d)
	}
	if !d.hasQuotaF || d.subject != "api" || d.quotaID != "api" || d.quota != 2 || d.desc != "at most 2 calls in 1m0s" {
		t.Fatalf("QuotaFailure %v %q", d, d.desc)
	}
	if got := status.Convert(err).Message(); got != "rate limit exceeded for api; retry after 1m0s" && !strings.HasPrefix(got, "rate limit exceeded for api; retry after 59.9") {
		t.Errorf("message %q", got)
	}
	want := metadata.MD{"ratelimit": {`"api";r=0;t=60`}, "ratelimit-policy": {`"api";q=2;w=60`}, "retry-after": {"60"}}
	for k, v := range want {
		if got := md.Get(k); len(got) != 1 || got[0] != v[0] {
			t.Errorf("denial metadata %s = %q, want %q", k, got, v)
		}
	}
	if m := limiter(t, r, "api").Metrics(); m.Acquisitions != 2 || m.Denials != 1 {
		t.Fatalf("metrics %+v: each call counts once", m)
	}
}

func TestStreamDenialAsTheClientSeesIt(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"streams": {RatePerSecond: 0.01, Burst: 1}})
	c := serve(t, nil, grpc.StreamInterceptor(grpclimit.StreamServerInterceptor(limiter(t, r, "streams"), grpclimit.PeerAddress())))
	ctx := callCtx(t)
	first, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil {
		t.Fatalf("first stream: %v", err)
	}
	if md, _ := first.Header(); md.Get("ratelimit")[0] != `"streams";r=0;t=100` || md.Get("ratelimit-policy")[0] != `"streams";q=1;w=100` {
		t.Fatalf("first stream's header: %v", md)
	}
	first.CloseSend()
	if _, err := first.Recv(); err != io.EOF {
		t.Fatalf("first stream's end: %v", err)
	}

	second, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = second.Recv()
	d := denialOf(t, err)
	if d.code != codes.ResourceExhausted || d.retry < 99*time.Second || d.retry > 100*time.Second || d.subject != "streams" || d.quota != 1 {
		t.Fatalf("second stream: %v", d)
	}
	md, err := second.Header()
	if err != nil {
		t.Fatal(err)
	}
	if md.Get("retry-after")[0] != "100" || md.Get("ratelimit")[0] != `"streams";r=0;t=100` {
		t.Fatalf("denied stream's header: %v", md)
	}
}

// retryInfoClient is a client interceptor that honours RetryInfo: a call
// denied with ResourceExhausted waits the advertised delay (bounded by its
// context) and tries again, up to max times.
func retryInfoClient(max int, retries *int) grpc.UnaryClientInterceptor {
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
			if delay < 0 {
				return err // the server gave no retry: do not guess
			}
			*retries++
			tm := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				tm.Stop()
				return status.FromContextError(ctx.Err()).Err()
			case <-tm.C:
			}
		}
	}
}

func TestClientHonouringRetryInfoSucceeds(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 20, Burst: 1}}) // one call per 50 ms
	retries := 0
	c := serveWith(t, nil,
		[]grpc.ServerOption{grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(limiter(t, r, "api"), everyone))},
		[]grpc.DialOption{grpc.WithUnaryInterceptor(retryInfoClient(3, &retries))})
	ctx := callCtx(t)
	start := time.Now()
	for i := range 3 {
		if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatalf("call %d: %v (the client honours RetryInfo)", i+1, err)
		}
	}
	if retries < 2 || retries > 4 {
		t.Fatalf("%d retries for 3 calls at 20/s, want about 2", retries)
	}
	if el := time.Since(start); el < 95*time.Millisecond {
		t.Fatalf("3 calls at 20/s in %v: the retries did not wait", el)
	}
	if m := limiter(t, r, "api").Metrics(); m.Acquisitions != 3 {
		t.Fatalf("acquisitions %d, want 3", m.Acquisitions)
	}
}

func TestWaitIsBoundedByTheDeadline(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 4, Burst: 1}}) // one per 250 ms
	c := serve(t, nil, grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(limiter(t, r, "api"), everyone, grpclimit.Wait())))
	ctx := callCtx(t)
	if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	// A deadline shorter than the wait: denied at once, with RetryInfo.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.EmptyCall(short, &testgrpc.Empty{})
	if d := denialOf(t, err); d.code != codes.ResourceExhausted || !d.hasRetry || d.retry <= 100*time.Millisecond || d.retry > 250*time.Millisecond {
		t.Fatalf("call whose deadline passes the wait: %v", d)
	}
	if el := time.Since(start); el > 90*time.Millisecond {
		t.Fatalf("denied after %v: it should give up at once", el)
	}
	// A deadline long enough: it waits and is admitted, with the state
	// after its admission.
	long, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	start = time.Now()
	var md metadata.MD
	if _, err := c.EmptyCall(long, &testgrpc.Empty{}, grpc.Header(&md)); err != nil {
		t.Fatalf("call that can wait: %v", err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("admitted after %v: it did not wait", el)
	}
	if got := md.Get("ratelimit"); len(got) != 1 || !strings.HasPrefix(got[0], `"api";r=0`) {
		t.Fatalf("waited call's ratelimit: %q", got)
	}
	if m := limiter(t, r, "api").Metrics(); m.Acquisitions != 2 || m.Timeouts != 1 {
		t.Fatalf("metrics %+v", m)
	}
}

// holding returns a server whose EmptyCall holds until release is closed,
// and the channel each call signals on when it starts.
func holding() (srv *testServer, entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}, 16), make(chan struct{})
	return &testServer{empty: func(ctx context.Context) error {
		entered <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}, entered, release
}

func TestWaitForAConcurrencySlot(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"conc": {MaxConcurrent: 1, LeaseTTL: time.Minute}})
	l := limiter(t, r, "conc")
	srv, entered, release := holding()
	c := serve(t, srv, grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(l, everyone, grpclimit.Wait())))
	ctx := callCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() {
		_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
		errs <- err
	})
	<-entered
	wg.Go(func() {
		_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
		errs <- err
	})
	eventually(t, "the second call to wait", func() bool { return l.Metrics().Waiting == 1 })
	close(release) // the first returns, its slot goes to the waiter
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := l.Metrics(); m.Acquisitions != 2 || m.CurrentConcurrent != 0 || m.Releases != 2 {
		t.Fatalf("metrics %+v", m)
	}
}

func TestCancellingClientLeavesNoTrace(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"conc": {MaxConcurrent: 1, LeaseTTL: time.Minute}})
	l := limiter(t, r, "conc")
	srv, entered, release := holding()
	c := serve(t, srv, grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(l, everyone, grpclimit.Wait())))
	ctx := callCtx(t)
	first := make(chan error, 1)
	go func() {
		_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
		first <- err
	}()
	<-entered
	waiter, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() {
		_, err := c.EmptyCall(waiter, &testgrpc.Empty{})
		second <- err
	}()
	eventually(t, "the second call to wait", func() bool { return l.Metrics().Waiting == 1 })
	cancel()
	if err := <-second; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled call: %v, want Canceled", err)
	}
	eventually(t, "the server to see the cancellation", func() bool { return l.Metrics().Waiting == 0 })
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The cancelled waiter took no slot: the next call is admitted at once.
	if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatalf("call after the cancellation: %v", err)
	}
	if m := l.Metrics(); m.CurrentConcurrent != 0 || m.Acquisitions != 2 {
		t.Fatalf("metrics %+v", m)
	}
}

func TestCancelledCallGetsItsOwnCode(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1, Burst: 1, Timeout: time.Minute}})
	l := limiter(t, r, "api")
	ic := grpclimit.UnaryServerInterceptor(l, everyone, grpclimit.Wait())
	l.For("all").Try(t.Context()) // the next call must wait a second
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/s/M"}, func(context.Context, any) (any, error) { return nil, nil })
		done <- err
	}()
	eventually(t, "the call to wait", func() bool { return l.Metrics().Waiting == 1 })
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("%v, want Canceled", err)
	}
}

func TestConcurrencyLeaseHeldForTheStream(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"conc": {MaxConcurrent: 1, LeaseTTL: time.Minute}})
	l := limiter(t, r, "conc")
	c := serve(t, nil, grpc.StreamInterceptor(grpclimit.StreamServerInterceptor(l, everyone)))
	ctx := callCtx(t)
	open := func() (testgrpc.TestService_FullDuplexCallClient, error) {
		s, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		_, err = s.Recv()
		return s, err
	}
	a, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := a.Header(); md.Get("ratelimit")[0] != `"conc";r=0;t=60` || md.Get("ratelimit-policy")[0] != `"conc";q=1;qu="concurrent-requests"` {
		t.Fatalf("stream header %q %q", md.Get("ratelimit"), md.Get("ratelimit-policy"))
	}
	for range 3 { // the stream is open: its slot stays taken
		if _, err := open(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stream while the first is open: %v", err)
		}
	}
	_, err = open()
	if d := denialOf(t, err); d.subject != "conc" || d.desc != "at most 1 concurrent calls" || d.retry <= 0 {
		t.Fatalf("concurrency denial %v", d)
	}
	if got := l.Metrics().CurrentConcurrent; got != 1 {
		t.Fatalf("current concurrency %d with one open stream", got)
	}
	a.CloseSend()
	if _, err := a.Recv(); err != io.EOF {
		t.Fatal(err)
	}
	// The handler returned before the status was sent: the slot is free.
	if got := l.Metrics().CurrentConcurrent; got != 0 {
		t.Fatalf("current concurrency %d after the stream ended", got)
	}
	b, err := open()
	if err != nil {
		t.Fatalf("stream after the first ended: %v", err)
	}
	b.CloseSend()
	b.Recv()
}

func TestPanickingHandlersReleaseTheirLease(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"conc": {MaxConcurrent: 1, LeaseTTL: time.Minute}})
	l := limiter(t, r, "conc")
	c := serve(t, nil,
		grpc.ChainUnaryInterceptor(recovery, grpclimit.UnaryServerInterceptor(l, everyone)),
		grpc.ChainStreamInterceptor(streamRecovery, grpclimit.StreamServerInterceptor(l, everyone)))
	ctx := callCtx(t)
	for i := range 3 {
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{FillUsername: true})
		if status.Code(err) != codes.Internal {
			t.Fatalf("panicking call %d: %v, want Internal from the recovery", i+1, err)
		}
	}
	for i := range 3 {
		s, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: &testgrpc.EchoStatus{Code: 99}})
		if _, err := s.Recv(); status.Code(err) != codes.Internal {
			t.Fatalf("panicking stream %d: %v, want Internal from the recovery", i+1, err)
		}
	}
	if m := l.Metrics(); m.CurrentConcurrent != 0 || m.Acquisitions != 6 || m.Releases != 6 || m.Denials != 0 {
		t.Fatalf("metrics %+v: every panicking handler must release its slot", m)
	}
}

func TestMethods(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{
		"empty":   {RatePerSecond: 0.01, Burst: 1},
		"service": {RatePerSecond: 0.01, Burst: 3},
	})
	const svc = "/grpc.testing.TestService/"
	m := grpclimit.Methods{svc + "EmptyCall": limiter(t, r, "empty"), svc: limiter(t, r, "service")}
	c := serve(t, nil, grpc.UnaryInterceptor(m.UnaryServerInterceptor(grpclimit.PeerAddress())), grpc.StreamInterceptor(m.StreamServerInterceptor(grpclimit.PeerAddress())))
	ctx := callCtx(t)
	if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
	if d := denialOf(t, err); d.subject != "empty" {
		t.Fatalf("second EmptyCall: %v, want denied by empty", d)
	}
	// The rest of the service shares "service": 2 calls and one stream.
	for range 2 {
		if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := c.FullDuplexCall(ctx)
	s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream: %v", err)
	}
	_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if d := denialOf(t, err); d.subject != "service" || d.quota != 3 {
		t.Fatalf("fourth call of the service: %v", d)
	}

	// A method no pattern matches passes, without metadata.
	only := grpclimit.Methods{svc + "EmptyCall": limiter(t, r, "empty")}
	c2 := serve(t, nil, grpc.UnaryInterceptor(only.UnaryServerInterceptor(everyone)))
	for range 5 {
		var md metadata.MD
		if _, err := c2.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&md)); err != nil || md.Get("ratelimit") != nil {
			t.Fatalf("unlisted method: %v %v", err, md)
		}
	}
}

func TestIncludeExclude(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.01, Burst: 1}})
	l := limiter(t, r, "api")
	ic := grpclimit.UnaryServerInterceptor(l, everyone, grpclimit.Include("/a.S/"), grpclimit.Exclude("/a.S/Health"))
	call := func(m string) codes.Code {
		_, err := ic(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: m}, func(context.Context, any) (any, error) { return nil, nil })
		return status.Code(err)
	}
	if call("/a.S/Get") != codes.OK || call("/a.S/Put") != codes.ResourceExhausted {
		t.Fatal("included methods are not limited together")
	}
	for _, m := range []string{"/a.S/Health", "/b.S/Get", "/a.SS/Get"} {
		for range 3 {
			if got := call(m); got != codes.OK {
				t.Fatalf("%s: %v, want unlimited", m, got)
			}
		}
	}
	for _, bad := range []string{"a.S/Get", "", "/a.S/Get/x", "//Get", "/a.S"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("pattern %q accepted", bad)
				}
			}()
			grpclimit.UnaryServerInterceptor(l, everyone, grpclimit.Include(bad))
		}()
	}
}

func TestShadowRuleAdmitsEveryCall(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"shadow": {RatePerSecond: 0.01, Burst: 1, MaxConcurrent: 1, Shadow: true}})
	l := limiter(t, r, "shadow")
	srv, entered, release := holding()
	c := serve(t, srv,
		grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(l, everyone)),
		grpc.StreamInterceptor(grpclimit.StreamServerInterceptor(l, everyone)))
	ctx := callCtx(t)
	// One call holds; every other call would be denied, by the rate or by
	// the concurrency limit, and is admitted.
	held := make(chan error, 1)
	go func() {
		_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
		held <- err
	}()
	<-entered
	for i := range 10 {
		var md metadata.MD
		if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&md)); err != nil {
			t.Fatalf("call %d under a shadow rule: %v", i+1, err)
		}
		if md.Get("ratelimit") != nil || md.Get("ratelimit-policy") != nil || md.Get("retry-after") != nil {
			t.Fatalf("call %d under a shadow rule has metadata %v", i+1, md)
		}
	}
	s, _ := c.FullDuplexCall(ctx)
	s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream under a shadow rule: %v", err)
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if m := l.Metrics(); m.ShadowDenials != 11 || m.CurrentConcurrent != 0 {
		t.Fatalf("metrics %+v, want 11 shadow denials and no slot held", m)
	}
}

// failingStore fails every decision, as a store that is down.
type failingStore struct{ driver.Store }

var errDown = errors.New("store down")

func (failingStore) Decide(context.Context, []driver.Check, []driver.Result) (bool, error) {
	return false, driver.Unavailable(errDown)
}
func (failingStore) Close() error { return nil }

func TestStoreErrorsFollowTheRule(t *testing.T) {
	r := registry(t, nil)
	if err := r.AddStore("down", failingStore{}, ratesync.WithBreaker(1000, time.Second)); err != nil {
		t.Fatal(err)
	}
	for name, rule := range map[string]ratesync.Rule{
		"open":   {Store: "down", RatePerSecond: 0.01, OnStoreError: ratesync.Allow},
		"closed": {Store: "down", RatePerSecond: 0.01, OnStoreError: ratesync.Deny},
		"local":  {Store: "down", RatePerSecond: 0.01},
	} {
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	var gotErr error
	c := serve(t, nil, grpc.ChainUnaryInterceptor(
		grpclimit.Methods{"/grpc.testing.TestService/EmptyCall": limiter(t, r, "open")}.UnaryServerInterceptor(everyone),
		grpclimit.Methods{"/grpc.testing.TestService/UnaryCall": limiter(t, r, "closed")}.UnaryServerInterceptor(everyone),
	), grpc.StreamInterceptor(grpclimit.StreamServerInterceptor(limiter(t, r, "local"), everyone, grpclimit.OnError(func(ctx context.Context, err error) error {
		gotErr = err
		return status.Error(codes.Aborted, "custom")
	}))))
	ctx := callCtx(t)
	var md metadata.MD
	if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&md)); err != nil || md.Get("ratelimit") != nil {
		t.Fatalf("fail open: %v %v (no invented quota values)", err, md)
	}
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("fail closed: %v, want Unavailable", err)
	}
	// Local: the rule is enforced in process, one stream then a denial.
	for i, want := range []codes.Code{codes.OK, codes.ResourceExhausted} {
		s, _ := c.FullDuplexCall(ctx)
		s.CloseSend()
		_, err := s.Recv()
		if err == io.EOF {
			err = nil
		}
		if status.Code(err) != want {
			t.Fatalf("local fallback, stream %d: %v, want %v", i+1, err, want)
		}
	}
	if gotErr != nil {
		t.Fatalf("OnError ran for a local decision: %v", gotErr)
	}
	if m := limiter(t, r, "local").Metrics(); m.Fallbacks != 2 {
		t.Fatalf("local metrics %+v", m)
	}
}

func TestCustomErrors(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.01, Burst: 1}})
	r.AddStore("down", failingStore{})
	r.ConfigureLimiter("closed", ratesync.Rule{Store: "down", RatePerSecond: 1, OnStoreError: ratesync.Deny})
	var got grpclimit.Denial
	var storeErr, keyErr error
	opts := []grpclimit.Option{
		grpclimit.OnDenied(func(ctx context.Context, d grpclimit.Denial) error {
			got = d
			return status.Error(codes.Unavailable, "busy")
		}),
		grpclimit.OnError(func(ctx context.Context, err error) error { storeErr = err; return status.Error(codes.Internal, "x") }),
		grpclimit.OnKeyError(func(ctx context.Context, err error) error {
			keyErr = err
			return status.Error(codes.Unauthenticated, "who?")
		}),
	}
	call := func(ic grpc.UnaryServerInterceptor, ctx context.Context) error {
		_, err := ic(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/a.S/M"}, func(context.Context, any) (any, error) { return nil, nil })
		return err
	}
	ic := grpclimit.UnaryServerInterceptor(limiter(t, r, "api"), grpclimit.Metadata("x-api-key"), opts...)
	key := metadata.NewIncomingContext(t.Context(), metadata.Pairs("x-api-key", "k1"))
	call(ic, key)
	if err := call(ic, key); status.Code(err) != codes.Unavailable || got.Policy != "api" || got.Limit != 1 || got.FullMethod != "/a.S/M" || got.Window != 100*time.Second {
		t.Fatalf("custom denial: %v %+v", err, got)
	}
	if err := call(ic, t.Context()); status.Code(err) != codes.Unauthenticated || !errors.Is(keyErr, grpclimit.ErrNoKey) {
		t.Fatalf("custom key error: %v %v", err, keyErr)
	}
	closed := grpclimit.UnaryServerInterceptor(limiter(t, r, "closed"), everyone, opts...)
	if err := call(closed, t.Context()); status.Code(err) != codes.Internal || !errors.Is(storeErr, ratesync.ErrStore) || !errors.Is(storeErr, errDown) {
		t.Fatalf("custom store error: %v %v", err, storeErr)
	}
}

func TestNoMetadataAndPolicyName(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.01, Burst: 1}})
	l := limiter(t, r, "api")
	c := serve(t, nil, grpc.UnaryInterceptor(grpclimit.UnaryServerInterceptor(l, everyone, grpclimit.NoMetadata(), grpclimit.PolicyName("public-api"))))
	ctx := callCtx(t)
	var md metadata.MD
	if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&md)); err != nil || md.Get("ratelimit") != nil {
		t.Fatalf("admitted with NoMetadata: %v %v", err, md)
	}
	_, err := c.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&md))
	if d := denialOf(t, err); d.subject != "public-api" || md.Get("ratelimit-policy")[0] != `"public-api";q=1;w=100` {
		t.Fatalf("denial with PolicyName: %v %v", d, md)
	}
}
