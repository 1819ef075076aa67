package server

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
	"github.com/rate-sync/ratesync-go/ratesyncprom"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI 3.1 document of the HTTP API, as served at
// /openapi.json.
func OpenAPI() []byte { return slices.Clone(openAPI) }

// apiMethods is the method of each call of the API, for 405 answers.
var apiMethods = map[string]string{
	"/v1/try": "POST", "/v1/acquire": "POST", "/v1/release": "POST", "/v1/extend": "POST", "/v1/state": "GET",
	"/v1/composite": "POST", "/v1/limiters": "GET", "/v1/admin/reset": "POST", "/v1/admin/reload": "POST",
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/try", s.handleTry)
	mux.HandleFunc("POST /v1/acquire", s.handleAcquire)
	mux.HandleFunc("POST /v1/release", s.handleRelease)
	mux.HandleFunc("POST /v1/extend", s.handleExtend)
	mux.HandleFunc("GET /v1/state", s.handleState)
	mux.HandleFunc("POST /v1/composite", s.handleComposite)
	mux.HandleFunc("GET /v1/limiters", s.handleLimiters)
	mux.HandleFunc("POST /v1/admin/reset", s.admin(s.handleReset))
	mux.HandleFunc("POST /v1/admin/reload", s.admin(s.handleReload))
	mux.HandleFunc("POST /json", s.handleRLSJSON)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	mux.Handle("GET /metrics", ratesyncprom.Handler(s.prom))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := apiMethods[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			problem(w, http.StatusMethodNotAllowed, r.URL.Path+" takes "+m)
			return
		}
		problem(w, http.StatusNotFound, "no such call: see /openapi.json")
	})
	// The dashboard's mount point: / and /dashboard/.
	if s.dashboard != nil {
		mux.Handle("/", s.dashboard)
		mux.Handle("/dashboard/", s.dashboard)
	} else {
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "ratesync serve\n\nHTTP API: /openapi.json\nRLS JSON: POST /json\nOperations: /metrics /healthz /readyz\n")
		})
	}
	return s.logged(mux)
}

// logged logs each request at Debug, and those answered 5xx at Warn.
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		level := slog.LevelDebug
		if sw.status >= 500 {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "http request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

func problem(w http.ResponseWriter, code int, detail string) {
	httplimit.WriteProblem(w, httplimit.Problem{Type: "about:blank", Title: http.StatusText(code), Status: code, Detail: detail})
}

// decode reads a JSON body of at most Limits.MaxBodyBytes into v, and
// answers the error itself (400, or 413 for a body too large).
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.limits.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", mbe.Limit))
			return false
		}
		problem(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

// keyRequest names one limiter key: the limiter and its identifiers.
type keyRequest struct {
	Limiter string   `json:"limiter"`
	ID      *string  `json:"id,omitempty"`
	IDs     []string `json:"ids,omitempty"`
}

// limiter returns the per-key limiter of k, or answers the error.
func (s *Server) limiter(w http.ResponseWriter, k keyRequest) (*ratesync.Limiter, bool) {
	lim := s.limits
	ids := k.IDs
	if k.ID != nil {
		if ids != nil {
			problem(w, http.StatusBadRequest, "give id or ids, not both")
			return nil, false
		}
		ids = []string{*k.ID}
	}
	switch {
	case k.Limiter == "":
		problem(w, http.StatusBadRequest, "limiter is required")
		return nil, false
	case len(k.Limiter) > lim.MaxKeyBytes:
		problem(w, http.StatusBadRequest, fmt.Sprintf("limiter: longer than %d bytes", lim.MaxKeyBytes))
		return nil, false
	case len(ids) > lim.MaxEntries:
		problem(w, http.StatusBadRequest, fmt.Sprintf("ids: %d, more than %d", len(ids), lim.MaxEntries))
		return nil, false
	}
	for i, id := range ids {
		if len(id) > lim.MaxKeyBytes {
			problem(w, http.StatusBadRequest, fmt.Sprintf("ids[%d]: longer than %d bytes", i, lim.MaxKeyBytes))
			return nil, false
		}
	}
	l, err := s.reg.For(k.Limiter, ids...)
	if err != nil {
		s.fail(w, err)
		return nil, false
	}
	return l, true
}

// cost checks a call's cost (0 means 1).
func (s *Server) cost(w http.ResponseWriter, c int64) (int, bool) {
	if c == 0 {
		c = 1
	}
	if c < 0 || uint64(c) > s.limits.MaxHitsAddend {
		problem(w, http.StatusBadRequest, fmt.Sprintf("cost: %d is not between 1 and %d", c, s.limits.MaxHitsAddend))
		return 0, false
	}
	return int(c), true
}

// fail answers a library error.
func (s *Server) fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ratesync.ErrLimiterNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ratesync.ErrCostTooHigh), errors.Is(err, ratesync.ErrInvalidConfig), errors.Is(err, ratesync.ErrMissingValue):
		code = http.StatusBadRequest
	case errors.Is(err, ratesync.ErrLeaseLost):
		code = http.StatusGone
	case errors.Is(err, ratesync.ErrStore), errors.Is(err, ratesync.ErrCircuitOpen), errors.Is(err, ratesync.ErrCallTimeout),
		errors.Is(err, ratesync.ErrClosed), errors.Is(err, errLeasesFull):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled):
		code = 499 // the client left; nobody reads this answer
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	problem(w, code, err.Error())
}

// decisionJSON is a decision as the API answers it.
type decisionJSON struct {
	Allowed           bool    `json:"allowed"`
	Limiter           string  `json:"limiter"`
	Key               string  `json:"key,omitempty"`
	Limit             int     `json:"limit"`
	Remaining         int     `json:"remaining"`
	RetryAfterSeconds float64 `json:"retry_after_seconds"`
	ResetAfterSeconds float64 `json:"reset_after_seconds"`
	Concurrency       bool    `json:"concurrency,omitempty"`
	Shadow            bool    `json:"shadow,omitempty"`
	Fallback          bool    `json:"fallback,omitempty"`
	FailedOpen        bool    `json:"failed_open,omitempty"`
	LeaseID           string  `json:"lease_id,omitempty"`
	LeaseExpiresAt    string  `json:"lease_expires_at,omitempty"`
}

func toJSON(d ratesync.Decision) decisionJSON {
	return decisionJSON{Allowed: d.Allowed, Limiter: d.Limiter, Limit: d.Limit, Remaining: max(d.Remaining, 0),
		RetryAfterSeconds: d.RetryAfter.Seconds(), ResetAfterSeconds: d.ResetAfter.Seconds(),
		Concurrency: d.Concurrency, Shadow: d.Shadow, Fallback: d.Fallback, FailedOpen: d.FailedOpen}
}

// hold keeps a granted lease that holds a slot, and fills in its id.
func (s *Server) hold(w http.ResponseWriter, r *http.Request, l *ratesync.Limiter, lease *ratesync.Lease, out *decisionJSON) bool {
	if !lease.Held() {
		return true
	}
	id, exp, err := s.leases.add(lease, l.Name(), l.Rule().LeaseTTL)
	if err != nil {
		lease.Release(r.Context())
		s.fail(w, err)
		return false
	}
	out.LeaseID, out.LeaseExpiresAt = id, exp.UTC().Format(time.RFC3339Nano)
	return true
}

// rateHeaders sets RateLimit-Policy and RateLimit for a decision of l.
func (s *Server) rateHeaders(w http.ResponseWriter, l *ratesync.Limiter, d ratesync.Decision) {
	r := l.Rule()
	if r.RatePerSecond <= 0 && r.Algorithm != ratesync.SlidingWindow || d.Concurrency {
		return
	}
	p := describe(l.Name(), r)
	t := fieldTime(d)
	h := w.Header()
	h.Set("RateLimit-Policy", p.Field[0])
	h.Set("RateLimit", ratefields.Item(p.Rate, d, t))
	if s.legacy {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(p.Rate.Limit, 10))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(d.Remaining, 0)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(t, 10))
	}
}

type tryRequest struct {
	keyRequest
	Cost int64 `json:"cost,omitempty"`
}

// handleTry makes one attempt. A denial is a result: 200 with allowed
// false (and Retry-After).
func (s *Server) handleTry(w http.ResponseWriter, r *http.Request) {
	var req tryRequest
	if !s.decode(w, r, &req) {
		return
	}
	l, ok := s.limiter(w, req.keyRequest)
	if !ok {
		return
	}
	cost, ok := s.cost(w, req.Cost)
	if !ok {
		return
	}
	d, err := l.Try(r.Context(), ratesync.WithCost(cost))
	if err != nil {
		s.fail(w, err)
		return
	}
	out := toJSON(d)
	out.Key = l.Key()
	if d.Allowed && !s.hold(w, r, l, d.Lease, &out) {
		return
	}
	s.rateHeaders(w, l, d)
	if !d.Allowed {
		w.Header().Set("Retry-After", strconv.FormatInt(retrySeconds(d.RetryAfter), 10))
	}
	writeJSON(w, http.StatusOK, out)
}

type acquireRequest struct {
	keyRequest
	Cost           int64   `json:"cost,omitempty"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
}

// handleAcquire waits up to the request's budget (timeout_seconds, at most
// Limits.MaxWait; the rule's timeout when zero) and answers the lease, or
// 429 when the budget runs out.
func (s *Server) handleAcquire(w http.ResponseWriter, r *http.Request) {
	var req acquireRequest
	if !s.decode(w, r, &req) {
		return
	}
	l, ok := s.limiter(w, req.keyRequest)
	if !ok {
		return
	}
	cost, ok := s.cost(w, req.Cost)
	if !ok {
		return
	}
	if req.TimeoutSeconds < 0 || math.IsNaN(req.TimeoutSeconds) || req.TimeoutSeconds > s.limits.MaxWait.Seconds() {
		problem(w, http.StatusBadRequest, fmt.Sprintf("timeout_seconds: must be between 0 and %g", s.limits.MaxWait.Seconds()))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.limits.MaxWait)
	defer cancel()
	opts := []ratesync.CallOption{ratesync.WithCost(cost)}
	if req.TimeoutSeconds > 0 {
		opts = append(opts, ratesync.WithTimeout(time.Duration(req.TimeoutSeconds*float64(time.Second))))
	}
	lease, err := l.Acquire(ctx, opts...)
	if err != nil {
		var te *ratesync.TimeoutError
		if errors.As(err, &te) && r.Context().Err() == nil {
			retry := retrySeconds(te.RetryAfter)
			w.Header().Set("Retry-After", strconv.FormatInt(retry, 10))
			httplimit.WriteProblem(w, httplimit.Problem{Type: httplimit.QuotaExceeded, Title: "Too Many Requests", Status: http.StatusTooManyRequests,
				Detail: err.Error(), ViolatedPolicies: []string{l.Name()}, RetryAfterSeconds: retry})
			return
		}
		s.fail(w, err)
		return
	}
	var held decisionJSON
	if !s.hold(w, r, l, lease, &held) {
		return
	}
	out := map[string]any{"allowed": true, "limiter": l.Name(), "key": l.Key()}
	if held.LeaseID != "" {
		out["lease_id"], out["lease_expires_at"] = held.LeaseID, held.LeaseExpiresAt
	}
	if lease.FailedOpen() {
		out["failed_open"] = true
	}
	if lease.Fallback() {
		out["fallback"] = true
	}
	writeJSON(w, http.StatusOK, out)
}

type leaseRequest struct {
	LeaseID    string  `json:"lease_id"`
	TTLSeconds float64 `json:"ttl_seconds,omitempty"`
}

// handleRelease releases a lease by id: 204, or 404 when the id is unknown
// (never issued by this server, released, or expired).
func (s *Server) handleRelease(w http.ResponseWriter, r *http.Request) {
	var req leaseRequest
	if !s.decode(w, r, &req) {
		return
	}
	h := s.leases.take(req.LeaseID)
	if h == nil {
		problem(w, http.StatusNotFound, "no such lease: released, expired, or held by another server instance")
		return
	}
	if err := h.lease.Release(r.Context()); err != nil {
		s.leases.put(req.LeaseID, h) // still held: the client may try again
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleExtend sets a lease's expiry to ttl_seconds from now (the rule's
// lease TTL when zero).
func (s *Server) handleExtend(w http.ResponseWriter, r *http.Request) {
	var req leaseRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.TTLSeconds < 0 || math.IsNaN(req.TTLSeconds) || req.TTLSeconds > 86400 {
		problem(w, http.StatusBadRequest, "ttl_seconds: must be between 0 and 86400")
		return
	}
	h := s.leases.get(req.LeaseID)
	if h == nil {
		problem(w, http.StatusNotFound, "no such lease: released, expired, or held by another server instance")
		return
	}
	ttl := time.Duration(req.TTLSeconds * float64(time.Second))
	if ttl == 0 {
		l, err := s.reg.Get(h.limiter)
		if err != nil {
			s.fail(w, err)
			return
		}
		ttl = l.Rule().LeaseTTL
	}
	if err := h.lease.Extend(r.Context(), ttl); err != nil {
		if errors.Is(err, ratesync.ErrLeaseLost) {
			s.leases.take(req.LeaseID)
		}
		s.fail(w, err)
		return
	}
	exp := time.Now().Add(ttl)
	s.leases.extended(h, exp)
	writeJSON(w, http.StatusOK, map[string]any{"lease_id": req.LeaseID, "lease_expires_at": exp.UTC().Format(time.RFC3339Nano)})
}

// handleState reads a key's state without consuming: GET
// /v1/state?limiter=NAME&id=ID (id repeated for a path of identifiers).
func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	l, ok := s.limiter(w, keyRequest{Limiter: q.Get("limiter"), IDs: q["id"]})
	if !ok {
		return
	}
	st, err := l.State(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"limiter": l.Name(), "key": l.Key(), "allowed": st.Allowed, "limit": st.Limit, "remaining": st.Remaining,
		"current_usage": st.CurrentUsage, "retry_after_seconds": st.RetryAfter.Seconds(),
		"reset_at": st.ResetAt.UTC().Format(time.RFC3339Nano), "concurrency": st.Concurrency,
	})
}

type compositeRequest struct {
	Limiters map[string]string `json:"limiters"`
	IDs      map[string]string `json:"ids"`
	Strategy string            `json:"strategy,omitempty"`
}

// handleComposite decides several limiters as one request (see
// ratesync.Composite): with all_must_pass (the default) all or nothing in
// one store call.
func (s *Server) handleComposite(w http.ResponseWriter, r *http.Request) {
	var req compositeRequest
	if !s.decode(w, r, &req) {
		return
	}
	if len(req.Limiters) > s.limits.MaxDescriptors {
		problem(w, http.StatusBadRequest, fmt.Sprintf("limiters: %d parts, more than %d", len(req.Limiters), s.limits.MaxDescriptors))
		return
	}
	for part, id := range req.IDs {
		if len(part) > s.limits.MaxKeyBytes || len(id) > s.limits.MaxKeyBytes || len(req.Limiters[part]) > s.limits.MaxKeyBytes {
			problem(w, http.StatusBadRequest, fmt.Sprintf("a part name, limiter or identifier is longer than %d bytes", s.limits.MaxKeyBytes))
			return
		}
	}
	c, err := s.reg.Composite(req.Limiters, ratesync.Strategy(req.Strategy))
	if err != nil {
		s.fail(w, err)
		return
	}
	res, err := c.Check(r.Context(), req.IDs)
	if err != nil {
		if !errors.Is(err, ratesync.ErrStore) && !errors.Is(err, context.Canceled) && !errors.Is(err, ratesync.ErrClosed) && !errors.Is(err, ratesync.ErrCircuitOpen) && !errors.Is(err, ratesync.ErrCallTimeout) {
			err = fmt.Errorf("%w: %w", ratesync.ErrInvalidConfig, err) // wrong parts: the caller's mistake
		}
		s.fail(w, err)
		return
	}
	out := map[string]any{"allowed": res.Allowed, "triggered_by": res.TriggeredBy}
	results := map[string]decisionJSON{}
	for part, d := range res.Results {
		results[part] = toJSON(d)
	}
	out["results"] = results
	if res.Allowed && res.Lease.Held() {
		ttl := time.Duration(math.MaxInt64)
		for _, name := range req.Limiters {
			if l, err := s.reg.Get(name); err == nil && l.Rule().MaxConcurrent > 0 {
				ttl = min(ttl, l.Rule().LeaseTTL)
			}
		}
		id, exp, err := s.leases.add(res.Lease, "", ttl)
		if err != nil {
			res.Lease.Release(r.Context())
			s.fail(w, err)
			return
		}
		out["lease_id"], out["lease_expires_at"] = id, exp.UTC().Format(time.RFC3339Nano)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleLimiters(w http.ResponseWriter, r *http.Request) {
	type limiterJSON struct {
		Name          string  `json:"name"`
		Store         string  `json:"store"`
		Algorithm     string  `json:"algorithm,omitempty"`
		RatePerSecond float64 `json:"rate_per_second,omitempty"`
		Burst         int     `json:"burst,omitempty"`
		Limit         int     `json:"limit,omitempty"`
		WindowSeconds float64 `json:"window_seconds,omitempty"`
		MaxConcurrent int     `json:"max_concurrent,omitempty"`
		Shadow        bool    `json:"shadow,omitempty"`
		OnStoreError  string  `json:"on_store_error,omitempty"`
	}
	var out []limiterJSON
	for _, li := range s.reg.Limiters() {
		r := li.Rule
		lj := limiterJSON{Name: li.Name, Store: r.Store, MaxConcurrent: r.MaxConcurrent, Shadow: r.Shadow, OnStoreError: string(r.OnStoreError)}
		if r.Algorithm == ratesync.SlidingWindow {
			lj.Algorithm, lj.Limit, lj.WindowSeconds = string(r.Algorithm), r.Limit, r.Window.Seconds()
		} else if r.RatePerSecond > 0 {
			lj.Algorithm, lj.RatePerSecond, lj.Burst = string(r.Algorithm), r.RatePerSecond, r.Burst
		}
		out = append(out, lj)
	}
	writeJSON(w, http.StatusOK, map[string]any{"limiters": out})
}

// admin guards an admin call: off (404) without an admin token, 401
// without the right bearer token.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.adminToken == "" {
			problem(w, http.StatusNotFound, "admin calls are off: start the server with an admin token (RATESYNC_ADMIN_TOKEN)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.adminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ratesync admin"`)
			problem(w, http.StatusUnauthorized, "admin calls need the header Authorization: Bearer TOKEN")
			return
		}
		h(w, r)
	}
}

func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) {
	var req keyRequest
	if !s.decode(w, r, &req) {
		return
	}
	l, ok := s.limiter(w, req)
	if !ok {
		return
	}
	if err := l.Reset(r.Context()); err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("admin reset", "limiter", l.Name(), "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if err := s.Reload(); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ratesync.ErrInvalidConfig) || strings.HasPrefix(err.Error(), "server:") {
			code = http.StatusUnprocessableEntity
		}
		problem(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": s.file, "limiters": len(s.reg.Limiters())})
}

// handleRLSJSON is envoyproxy/ratelimit's /json: a RateLimitRequest in
// protobuf's JSON mapping, answered 200 (OK) or 429 (OVER_LIMIT) with the
// RateLimitResponse.
func (s *Server) handleRLSJSON(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.limits.MaxBodyBytes))
	if err != nil {
		problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", s.limits.MaxBodyBytes))
		return
	}
	var req rlsv3.RateLimitRequest
	if err := protojson.Unmarshal(body, &req); err != nil {
		problem(w, http.StatusBadRequest, "invalid RateLimitRequest: "+err.Error())
		return
	}
	resp, err := s.ShouldRateLimit(r.Context(), &req)
	if err != nil {
		st := status.Convert(err)
		code := http.StatusServiceUnavailable
		switch st.Code() {
		case codes.InvalidArgument:
			code = http.StatusBadRequest
		case codes.Canceled:
			code = 499
		}
		problem(w, code, st.Message())
		return
	}
	out, _ := protojson.Marshal(resp)
	code := http.StatusOK
	if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
		code = http.StatusTooManyRequests
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(out)
}

// handleReady answers 200 when every store answers a read within a second
// and no circuit breaker is open, else 503 with what failed.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	on := map[string]string{} // store -> a limiter on it
	for _, li := range s.reg.Limiters() {
		if _, ok := on[li.Rule.Store]; !ok {
			on[li.Rule.Store] = li.Name
		}
	}
	stores := map[string]string{}
	ready := true
	for _, st := range s.reg.Stores() {
		state := "ok"
		if st.Breaker == ratesync.BreakerOpen {
			state = "circuit breaker open"
		} else if name, ok := on[st.Name]; ok {
			if l, err := s.reg.Get(name); err == nil {
				if _, err := l.State(ctx); err != nil {
					state = err.Error()
				}
			}
		}
		if state != "ok" {
			ready = false
		}
		stores[st.Name] = state
	}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ready": ready, "stores": stores})
}
