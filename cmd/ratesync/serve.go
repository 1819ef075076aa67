package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/server"
	"github.com/rate-sync/ratesync-go/server/dashboard"
)

const serveUsage = `usage: ratesync serve [flags] [FILE]

Serves the limiters of FILE (or of $RATE_SYNC_CONFIG; with neither, a built-in
example on the memory store): Envoy's rate limit service over gRPC, an HTTP
JSON API (see /openapi.json), /metrics, /healthz and /readyz.

SIGINT and SIGTERM shut down gracefully, draining requests in flight; SIGHUP
and every change of FILE reload it, keeping the state of the limiters that
did not change. The dashboard is at / of the HTTP address.

Flags (each also read from the environment variable named):
  --http ADDR         HTTP address (RATESYNC_HTTP_ADDR; default 127.0.0.1:8080)
  --grpc ADDR         gRPC address (RATESYNC_GRPC_ADDR; default 127.0.0.1:8081)
  --legacy-headers    add X-RateLimit-* beside RateLimit (RATESYNC_LEGACY_HEADERS=1)
  --log-format F      text or json (RATESYNC_LOG_FORMAT; default text)
  --log-level L       debug, info, warn or error (RATESYNC_LOG_LEVEL; default info)

The admin calls (reset, reload) are on when RATESYNC_ADMIN_TOKEN is set: they
need the header Authorization: Bearer $RATESYNC_ADMIN_TOKEN.
`

// serveHooks lets tests learn the addresses and stop the server.
type serveHooks struct {
	ready func(httpAddr, grpcAddr string)
}

func runServe(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, args, stderr, serveHooks{})
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func serve(ctx context.Context, args []string, stderr io.Writer, hooks serveHooks) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	httpAddr := fs.String("http", envOr("RATESYNC_HTTP_ADDR", "127.0.0.1:8080"), "")
	grpcAddr := fs.String("grpc", envOr("RATESYNC_GRPC_ADDR", "127.0.0.1:8081"), "")
	legacy := fs.Bool("legacy-headers", os.Getenv("RATESYNC_LEGACY_HEADERS") == "1", "")
	logFormat := fs.String("log-format", envOr("RATESYNC_LOG_FORMAT", "text"), "")
	logLevel := fs.String("log-level", envOr("RATESYNC_LOG_LEVEL", "info"), "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, serveUsage)
			return 0
		}
		fmt.Fprintf(stderr, "ratesync serve: %v\n%s", err, serveUsage)
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprint(stderr, serveUsage)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "ratesync serve: --log-level %q: use debug, info, warn or error\n", *logLevel)
		return 2
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(stderr, hopts))
	case "json":
		log = slog.New(slog.NewJSONHandler(stderr, hopts))
	default:
		fmt.Fprintf(stderr, "ratesync serve: --log-format %q: use text or json\n", *logFormat)
		return 2
	}
	if err := serveWith(ctx, fs.Arg(0), *httpAddr, *grpcAddr, *legacy, log, hooks); err != nil {
		log.Error("ratesync serve", "error", err)
		return 1
	}
	return 0
}

func serveWith(ctx context.Context, file, httpAddr, grpcAddr string, legacy bool, log *slog.Logger, hooks serveHooks) error {
	if file == "" {
		file = os.Getenv(ratesync.ConfigEnv)
	}
	reg := ratesync.NewRegistry(ratesync.WithLogger(log))
	defer reg.Close()
	opts := []server.Option{server.WithLogger(log)}
	if file != "" {
		if err := reg.LoadConfig(file); err != nil {
			return err
		}
		opts = append(opts, server.WithConfigFile(file))
		log.Info("configuration loaded", "file", file, "limiters", len(reg.Limiters()))
	} else {
		cfg, err := ratesync.ParseConfig("built-in example", server.ExampleConfig())
		if err != nil {
			return err
		}
		if err := reg.ApplyConfig(cfg); err != nil {
			return err
		}
		log.Info("no configuration file: serving the built-in example on the memory store", "limiters", len(reg.Limiters()))
	}
	if tok := os.Getenv("RATESYNC_ADMIN_TOKEN"); tok != "" {
		opts = append(opts, server.WithAdminToken(tok))
	}
	if legacy {
		opts = append(opts, server.WithLegacyHeaders())
	}
	dash, closeDash := mountDashboard(reg)
	defer closeDash()
	if dash != nil {
		opts = append(opts, server.WithDashboard(dash))
	}
	srv, err := server.New(reg, opts...)
	if err != nil {
		return err
	}
	defer srv.Close()
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("HTTP address: %w", err)
	}
	gl, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		hl.Close()
		return fmt.Errorf("gRPC address: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if file != "" {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := srv.Reload(); err != nil {
						log.Error("reload on SIGHUP failed: the previous configuration stays", "error", err)
					}
				}
			}
		}()
		defer watchConfig(ctx, reg, file, log)()
	}
	if hooks.ready != nil {
		hooks.ready(hl.Addr().String(), gl.Addr().String())
	}
	err = srv.Serve(ctx, hl, gl)
	cancel() // stops the watchers before the deferred waits
	return err
}

// mountDashboard returns the live dashboard (package server/dashboard), mounted at /
// and /dashboard/.
func mountDashboard(reg *ratesync.Registry) (http.Handler, func()) {
	d := dashboard.New(reg)
	return d, func() { d.Close() }
}

// watchConfig reloads file whenever it changes (Registry.WatchConfig), until
// ctx is done; the returned function waits for the watcher to stop.
func watchConfig(ctx context.Context, reg *ratesync.Registry, file string, log *slog.Logger) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := reg.WatchConfig(ctx, file); err != nil {
			log.Error("the configuration file is not watched: reload with SIGHUP", "file", file, "error", err)
		}
	}()
	return func() { <-done }
}
