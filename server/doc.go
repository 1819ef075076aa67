// Package server is the rate limit service behind `ratesync serve`: the
// limiters of one ratesync.Registry served to programs in any language.
//
//   - Envoy's rate limit service (envoy.service.ratelimit.v3, over gRPC):
//     the [rls] table of the configuration maps domains and descriptor
//     entries to limiters (see RLSConfig); every limiter a request matches
//     is decided in one all-or-nothing store call.
//   - An HTTP JSON API (try, acquire with a wait budget, release, extend,
//     state, composite checks; admin reset and reload behind a bearer
//     token), described by the OpenAPI document served at /openapi.json.
//   - Operations: /metrics (Prometheus), /healthz, /readyz, gRPC health
//     checking and server reflection, structured logs (log/slog).
//
// A Go program embeds it with New and Serve:
//
//	reg := ratesync.NewRegistry()
//	if err := reg.LoadConfig("rate-sync.toml"); err != nil { ... }
//	srv, err := server.New(reg, server.WithConfigFile("rate-sync.toml"))
//	if err != nil { ... }
//	defer srv.Close()
//	err = srv.Serve(ctx, httpListener, grpcListener) // until ctx is done
//
// or mounts Handler on an HTTP server and RegisterGRPC on a gRPC server of
// its own. See docs/serve.md.
package server
