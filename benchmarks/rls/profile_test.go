package rls

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/rate-sync/ratesync-go"
	_ "github.com/rate-sync/ratesync-go/redisstore" // the engine of the configuration, as cmd/ratesync links it
	"github.com/rate-sync/ratesync-go/server"
)

// TestProfileRatesync serves the benchmark's configuration from this
// process (server.New, as `ratesync serve` does) and writes a CPU profile
// of a throughput run to the file RATESYNC_BENCH_RLS_PROFILE names. The
// server's goroutines, and the Redis store's, carry the label
// side=server: `go tool pprof -tagfocus side=server FILE` shows the
// server's time without the load generator's.
//
// RATESYNC_BENCH_RLS_PROFILE_DOMAIN picks the rule (bench_tb, the default,
// or bench_sw), RATESYNC_BENCH_RLS_CONCURRENCY the streams (one value,
// default 256), RATESYNC_BENCH_RLS_DURATION the length (10s). With
// RATESYNC_BENCH_RLS_STREAM_WORKERS=N the service is mounted on a gRPC
// server of the test's own (Server.RegisterGRPC, as an embedder does) with
// grpc.NumStreamWorkers(N): N goroutines that keep their grown stacks
// serve the streams, where grpc-go otherwise starts a goroutine per
// stream; the profile shows what that saves.
func TestProfileRatesync(t *testing.T) {
	out := os.Getenv("RATESYNC_BENCH_RLS_PROFILE")
	if out == "" {
		t.Skip("set RATESYNC_BENCH_RLS_PROFILE=FILE")
	}
	domain := os.Getenv("RATESYNC_BENCH_RLS_PROFILE_DOMAIN")
	if domain == "" {
		domain = ratesyncTB
	}
	c := envInt("RATESYNC_BENCH_RLS_CONCURRENCY", 256)
	dur := envDuration("RATESYNC_BENCH_RLS_DURATION", 10*time.Second)
	env := setupRedis(t)

	cfg := filepath.Join(t.TempDir(), "rate-sync.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, ratesyncConfig, env.url, env.prefix+"rs"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	labels := pprof.Labels("side", "server")
	var srv *server.Server
	reg := ratesync.NewRegistry()
	defer reg.Close()
	pprof.Do(ctx, labels, func(context.Context) {
		if err := reg.LoadConfig(cfg); err != nil {
			t.Fatal(err)
		}
		var err error
		srv, err = server.New(reg, server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			t.Fatal(err)
		}
	})
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	if n := envInt("RATESYNC_BENCH_RLS_STREAM_WORKERS", 0); n > 0 {
		var gs *grpc.Server
		pprof.Do(ctx, labels, func(context.Context) { // its workers start here
			gs = grpc.NewServer(append(srv.GRPCOptions(), grpc.NumStreamWorkers(uint32(n)))...)
		})
		srv.RegisterGRPC(gs)
		go pprof.Do(ctx, labels, func(context.Context) { served <- gs.Serve(ln) })
		defer func() {
			gs.Stop()
			<-served
		}()
	} else {
		go pprof.Do(ctx, labels, func(ctx context.Context) { served <- srv.Serve(ctx, nil, ln) })
		defer func() {
			cancel()
			if err := <-served; err != nil {
				t.Error(err)
			}
		}()
	}

	w := newWorkload(domain)
	conns := dial(t, ln.Addr().String(), envInt("RATESYNC_BENCH_RLS_CONNS", 4))
	defer closeAll(conns)
	run(w, conns, loadSpec{workers: c, duration: time.Second}, 0, env.pid)

	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	r := run(w, conns, loadSpec{workers: c, duration: dur}, 0, env.pid)
	pprof.StopCPUProfile()
	t.Logf("%s c=%d in process: %.0f decisions/s, p50 %.0f µs, p99 %.0f µs, %d errors; process CPU %.0f %%, Redis %.0f %%",
		domain, c, r.rate(), r.quantile(0.5), r.quantile(0.99), r.errors, pct(r.cpuSelf, r.elapsed), pct(r.cpuRedis, r.elapsed))
	closeAll(conns)
}
