package server

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/ratesyncprom"
)

// Limits bounds what one request may ask. Zero fields mean the defaults
// (DefaultLimits); a request beyond them is answered 400 (HTTP) or
// InvalidArgument (gRPC), naming the limit.
type Limits struct {
	MaxBodyBytes   int64         // HTTP request body (default 64 KiB); gRPC messages get 4 times it
	MaxDescriptors int           // descriptors of an RLS request, parts of a composite (default 64)
	MaxEntries     int           // entries of one RLS descriptor, identifiers of one key (default 16)
	MaxKeyBytes    int           // a domain, key, value, limiter name or identifier (default 1024)
	MaxHitsAddend  uint64        // hits_addend, or an HTTP call's cost (default 1,000,000)
	MaxWait        time.Duration // the wait budget of an HTTP acquire (default 60 s)
	MaxLeases      int           // leases the server holds for HTTP clients at once (default 100,000)
}

// DefaultLimits are the limits of a server created without WithLimits.
var DefaultLimits = Limits{
	MaxBodyBytes:   64 << 10,
	MaxDescriptors: 64,
	MaxEntries:     16,
	MaxKeyBytes:    1024,
	MaxHitsAddend:  1_000_000,
	MaxWait:        time.Minute,
	MaxLeases:      100_000,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxBodyBytes > 0 {
		d.MaxBodyBytes = l.MaxBodyBytes
	}
	if l.MaxDescriptors > 0 {
		d.MaxDescriptors = l.MaxDescriptors
	}
	if l.MaxEntries > 0 {
		d.MaxEntries = l.MaxEntries
	}
	if l.MaxKeyBytes > 0 {
		d.MaxKeyBytes = l.MaxKeyBytes
	}
	if l.MaxHitsAddend > 0 {
		d.MaxHitsAddend = l.MaxHitsAddend
	}
	if l.MaxWait > 0 {
		d.MaxWait = l.MaxWait
	}
	if l.MaxLeases > 0 {
		d.MaxLeases = l.MaxLeases
	}
	return d
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the server's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithAdminToken enables the admin calls (reset, reload), for requests
// with the header "Authorization: Bearer TOKEN". Without a token (the
// default) they answer 404.
func WithAdminToken(token string) Option { return func(s *Server) { s.adminToken = token } }

// WithConfigFile names the configuration file that Reload (and the admin
// reload call) read again. Without it, Reload is an error.
func WithConfigFile(path string) Option { return func(s *Server) { s.file = path } }

// WithLegacyHeaders adds X-RateLimit-Limit, X-RateLimit-Remaining and
// X-RateLimit-Reset to the headers of RLS answers and HTTP API responses,
// beside RateLimit and RateLimit-Policy.
func WithLegacyHeaders() Option { return func(s *Server) { s.legacy = true } }

// WithLimits sets the request limits; zero fields keep DefaultLimits'.
func WithLimits(l Limits) Option { return func(s *Server) { s.limits = l.withDefaults() } }

// WithShutdownTimeout bounds how long Serve waits for requests in flight
// once its context is done (default 10 s); then it closes what remains.
func WithShutdownTimeout(d time.Duration) Option { return func(s *Server) { s.shutdownTimeout = d } }

// WithDashboard mounts h at / and /dashboard/ of the HTTP handler (the
// dashboard of package server/dashboard). Without it, / lists the API.
func WithDashboard(h http.Handler) Option { return func(s *Server) { s.dashboard = h } }

// Server is the rate limit service: Envoy's RLS v3 over gRPC, an HTTP JSON
// API, and the operations endpoints (/metrics, /healthz, /readyz), over the
// limiters of one ratesync.Registry. Create one with New, then either call
// Serve, or mount Handler and RegisterGRPC on servers of your own. A Server
// is safe for concurrent use.
type Server struct {
	reg             *ratesync.Registry
	log             *slog.Logger
	limits          Limits
	adminToken      string
	file            string
	legacy          bool
	shutdownTimeout time.Duration
	dashboard       http.Handler

	prom    *prometheus.Registry
	health  *health.Server
	leases  *leaseTable
	handler http.Handler

	tblMu  sync.Mutex
	tbl    atomic.Pointer[table]
	badSrc *RLSConfig // the last [rls] table that did not compile
	reload sync.Mutex
}

// New returns a server over reg, whose configuration may have an [rls]
// table (see RLSConfig). It is an error when that table names limiters that
// do not exist, that have max_concurrent, or that are on several stores in
// one domain. New does no I/O.
func New(reg *ratesync.Registry, opts ...Option) (*Server, error) {
	if reg == nil {
		return nil, errors.New("server: New: nil registry")
	}
	s := &Server{reg: reg, log: slog.Default(), limits: DefaultLimits, shutdownTimeout: 10 * time.Second}
	for _, o := range opts {
		o(s)
	}
	t, err := compile(RLSConfigOf(reg), ruleIn(reg, nil))
	if err != nil {
		return nil, err
	}
	s.tbl.Store(t)
	s.prom = prometheus.NewRegistry()
	if err := ratesyncprom.Register(s.prom, reg); err != nil {
		return nil, err
	}
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(rlsv3.RateLimitService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.leases = newLeaseTable(s.limits.MaxLeases)
	s.handler = s.routes()
	return s, nil
}

// ruleIn returns the rules of cfg's limiters, then reg's.
func ruleIn(reg *ratesync.Registry, cfg *ratesync.Config) func(string) (ratesync.Rule, bool) {
	return func(name string) (ratesync.Rule, bool) {
		if cfg != nil {
			for _, l := range cfg.Limiters {
				if l.Name == name {
					return l.Rule, true
				}
			}
		}
		l, err := reg.Get(name)
		if err != nil {
			return ratesync.Rule{}, false
		}
		return l.Rule(), true
	}
}

// table returns the match table of the [rls] table applied to the
// registry now, compiling it again after a reload. A table that does not
// compile is logged once and the previous one kept.
func (s *Server) table() *table {
	src := RLSConfigOf(s.reg)
	t := s.tbl.Load()
	if t.src == src {
		return t
	}
	s.tblMu.Lock()
	defer s.tblMu.Unlock()
	if t = s.tbl.Load(); t.src == src || s.badSrc == src && src != nil {
		return t
	}
	nt, err := compile(src, ruleIn(s.reg, nil))
	if err != nil {
		s.badSrc = src
		s.log.Error("the [rls] table of the new configuration is not used", "error", err)
		return t
	}
	s.tbl.Store(nt)
	return nt
}

// Reload reads the configuration file (WithConfigFile) again and applies
// it to the registry: limiters whose store and key stay the same keep their
// state (see ratesync.Registry.ApplyConfig). The new [rls] table is checked
// before anything is applied: on error nothing changes.
func (s *Server) Reload() error {
	if s.file == "" {
		return errors.New("server: reload: no configuration file (WithConfigFile)")
	}
	s.reload.Lock()
	defer s.reload.Unlock()
	data, err := os.ReadFile(s.file)
	if err != nil {
		return fmt.Errorf("server: reload: %w", err)
	}
	cfg, err := ratesync.ParseConfig(s.file, data)
	if err != nil {
		return err
	}
	rc, _ := cfg.Sections["rls"].(*RLSConfig)
	if _, err := compile(rc, ruleIn(s.reg, cfg)); err != nil {
		return err
	}
	if err := s.reg.ApplyConfig(cfg); err != nil {
		return err
	}
	s.table()
	s.log.Info("configuration reloaded", "file", s.file, "limiters", len(s.reg.Limiters()))
	return nil
}

// Handler returns the HTTP handler: the JSON API under /v1/, /openapi.json,
// /metrics, /healthz, /readyz, and the dashboard (WithDashboard) at /.
func (s *Server) Handler() http.Handler { return s.handler }

// RegisterGRPC registers the rate limit service
// (envoy.service.ratelimit.v3.RateLimitService), health checking
// (grpc.health.v1.Health) and server reflection on g.
func (s *Server) RegisterGRPC(g *grpc.Server) {
	rlsv3.RegisterRateLimitServiceServer(g, rlsService{s: s})
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
}

// GRPCOptions returns the options Serve creates its gRPC server with: the
// largest message it accepts (4 times Limits.MaxBodyBytes), and 256 stream
// workers.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(4 * s.limits.MaxBodyBytes)),
		// Long-lived workers serve the streams: a goroutine per stream
		// grew its stack on every decision (a quarter of the server's CPU
		// at 256 streams; see benchmarks/README.md).
		grpc.NumStreamWorkers(streamWorkers),
	}
}

// streamWorkers is the number of goroutines that serve gRPC streams; more
// streams at once start goroutines of their own.
const streamWorkers = 256

// Serve serves HTTP on httpLn and gRPC on grpcLn (either may be nil) until
// ctx is done, then shuts down gracefully: health checks answer
// NOT_SERVING, new connections are refused, and requests in flight finish
// within the shutdown timeout (WithShutdownTimeout). It returns nil after a
// graceful shutdown, or the first error of a listener.
func (s *Server) Serve(ctx context.Context, httpLn, grpcLn net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	gs := grpc.NewServer(s.GRPCOptions()...)
	s.RegisterGRPC(gs)
	errc := make(chan error, 2)
	n := 0
	if httpLn != nil {
		n++
		s.log.Info("serving HTTP", "addr", httpLn.Addr().String())
		go func() { errc <- hs.Serve(httpLn) }()
	}
	if grpcLn != nil {
		n++
		s.log.Info("serving gRPC", "addr", grpcLn.Addr().String())
		go func() { errc <- gs.Serve(grpcLn) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		n--
	}
	s.log.Info("shutting down: draining requests in flight", "timeout", s.shutdownTimeout)
	s.health.Shutdown()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	if herr := hs.Shutdown(sctx); herr != nil {
		s.log.Warn("HTTP requests still in flight at the shutdown timeout: closed", "error", herr)
		hs.Close()
	}
	select {
	case <-stopped:
	case <-sctx.Done():
		s.log.Warn("gRPC requests still in flight at the shutdown timeout: closed")
		gs.Stop()
		<-stopped
	}
	for ; n > 0; n-- {
		if e := <-errc; err == nil && e != nil && !errors.Is(e, http.ErrServerClosed) && !errors.Is(e, grpc.ErrServerStopped) {
			err = e
		}
	}
	if err != nil && (errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped)) {
		err = nil
	}
	return err
}

// Close releases the leases the server holds for HTTP clients. It does
// not close the registry.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.leases.releaseAll(ctx)
}

//go:embed example.toml
var exampleConfig []byte

// ExampleConfig returns the built-in example configuration that `ratesync
// serve` serves when it is given no file: limiters on the memory store and
// an [rls] table for Envoy.
func ExampleConfig() []byte { return slices.Clone(exampleConfig) }
