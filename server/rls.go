package server

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

// rlsService is envoy.service.ratelimit.v3.RateLimitService.
type rlsService struct {
	rlsv3.UnimplementedRateLimitServiceServer
	s *Server
}

func (r rlsService) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	resp, err := r.s.ShouldRateLimit(ctx, req)
	if err != nil {
		r.s.log.DebugContext(ctx, "rls request failed", "domain", req.GetDomain(), "error", err)
	}
	return resp, err
}

// rlsPart is one limiter key a request decides: the descriptors that
// matched it, and their total cost.
type rlsPart struct {
	limiter string
	id      string
	policy  *ratefields.Policy
	cost    uint64
	d       ratesync.Decision
	over    bool // this part denied the request
}

// ShouldRateLimit answers an Envoy rate limit request (see RLSConfig for
// how descriptors match limiters). Every limiter the descriptors match is
// decided in one all-or-nothing store call: a denial consumes nothing of
// the others. Errors are gRPC statuses: InvalidArgument for a request
// beyond the server's Limits, Unavailable when a limiter's store cannot
// decide and its rule fails closed (on_store_error = "deny"), Canceled or
// DeadlineExceeded when the caller left.
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	lim := s.limits
	domain := req.GetDomain()
	descs := req.GetDescriptors()
	switch {
	case domain == "":
		return nil, status.Error(codes.InvalidArgument, "domain is required")
	case len(domain) > lim.MaxKeyBytes:
		return nil, status.Errorf(codes.InvalidArgument, "domain is %d bytes, more than %d", len(domain), lim.MaxKeyBytes)
	case len(descs) == 0:
		return nil, status.Error(codes.InvalidArgument, "descriptors: at least one is required")
	case len(descs) > lim.MaxDescriptors:
		return nil, status.Errorf(codes.InvalidArgument, "descriptors: %d, more than %d", len(descs), lim.MaxDescriptors)
	}
	reqCost := uint64(req.GetHitsAddend())
	t := s.table()
	parts := make([]*rlsPart, 0, 1)
	matched := make([]*node, len(descs))
	partOf := make([]*rlsPart, len(descs))
	var keys, values []string
	for i, d := range descs {
		entries := d.GetEntries()
		switch {
		case len(entries) == 0:
			return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d]: no entries", i)
		case len(entries) > lim.MaxEntries:
			return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d]: %d entries, more than %d", i, len(entries), lim.MaxEntries)
		case d.GetIsNegativeHits():
			return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d]: is_negative_hits: giving quota back is not supported", i)
		}
		cost := reqCost
		if h := d.GetHitsAddend(); h != nil {
			cost = h.GetValue()
		}
		if cost == 0 { // Envoy: an unset hits_addend adds 1
			cost = 1
		}
		if cost > lim.MaxHitsAddend {
			return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d]: hits_addend %d is more than %d", i, cost, lim.MaxHitsAddend)
		}
		keys, values = keys[:0], values[:0]
		for j, e := range entries {
			if len(e.GetKey()) > lim.MaxKeyBytes || len(e.GetValue()) > lim.MaxKeyBytes {
				return nil, status.Errorf(codes.InvalidArgument, "descriptors[%d].entries[%d]: key or value longer than %d bytes", i, j, lim.MaxKeyBytes)
			}
			keys = append(keys, e.GetKey())
			values = append(values, e.GetValue())
		}
		n := t.match(domain, keys, values)
		matched[i] = n
		if n == nil || n.limiter == "" {
			continue
		}
		id := values[0]
		if len(values) > 1 {
			id = ratesync.CombineIdentifiers(values...)
		}
		var p *rlsPart
		for _, q := range parts {
			if q.limiter == n.limiter && q.id == id {
				p = q
				break
			}
		}
		if p == nil {
			p = &rlsPart{limiter: n.limiter, id: id, policy: n.policy}
			parts = append(parts, p)
		}
		p.cost += cost
		partOf[i] = p
	}
	if err := s.decide(ctx, parts); err != nil {
		return nil, err
	}
	return s.rlsResponse(descs, matched, partOf, parts), nil
}

// decide decides parts all or nothing, in one store call.
func (s *Server) decide(ctx context.Context, parts []*rlsPart) error {
	switch len(parts) {
	case 0:
		return nil
	case 1:
		p := parts[0]
		l, err := s.reg.For(p.limiter, p.id)
		if err != nil {
			return rpcError(ctx, err)
		}
		d, err := l.Try(ctx, ratesync.WithCost(int(min(p.cost, math.MaxInt32))))
		if errors.Is(err, ratesync.ErrCostTooHigh) {
			// More than the limiter can ever grant: over the limit, for good.
			p.d, p.over = ratesync.Decision{Limiter: p.limiter}, true
			return nil
		}
		if err != nil {
			return rpcError(ctx, err)
		}
		p.d, p.over = d, !d.Allowed
		return nil
	}
	names := make(map[string]string, len(parts))
	ids := make(map[string]string, len(parts))
	for i, p := range parts {
		if p.cost != parts[0].cost {
			// Composite.Check takes the same cost from every part.
			return status.Errorf(codes.InvalidArgument, "hits_addend: the %d limiters this request matches would take different costs (%d and %d); several limiters decide together only with one cost", len(parts), parts[0].cost, p.cost)
		}
		name := strconv.Itoa(i)
		names[name], ids[name] = p.limiter, p.id
	}
	c, err := s.reg.Composite(names, ratesync.AllMustPass)
	if err != nil {
		return rpcError(ctx, err)
	}
	res, err := c.Check(ctx, ids, ratesync.WithCost(int(min(parts[0].cost, math.MaxInt32))))
	if errors.Is(err, ratesync.ErrCostTooHigh) {
		// More than one of the limiters can ever grant: over the limit, for good.
		for _, p := range parts {
			p.d, p.over = ratesync.Decision{Limiter: p.limiter}, true
		}
		return nil
	}
	if err != nil {
		return rpcError(ctx, err)
	}
	for i, p := range parts {
		name := strconv.Itoa(i)
		p.d = res.Results[name]
		p.d.Limiter = p.limiter
		p.over = !res.Allowed && (p.d.RetryAfter > 0 || name == res.TriggeredBy)
	}
	return nil
}

// rpcError maps a decision's error to a gRPC status.
func rpcError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

func (s *Server) rlsResponse(descs []*ratelimitv3.RateLimitDescriptor, matched []*node, partOf []*rlsPart, parts []*rlsPart) *rlsv3.RateLimitResponse {
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(descs))}
	for i, n := range matched {
		st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		resp.Statuses[i] = st
		switch {
		case n == nil:
		case n.d.Unlimited:
			st.LimitRemaining = math.MaxUint32
		case n.d.Deny:
			st.Code, resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT, rlsv3.RateLimitResponse_OVER_LIMIT
			st.CurrentLimit = &rlsv3.RateLimitResponse_RateLimit{Name: "deny", Unit: rlsv3.RateLimitResponse_RateLimit_SECOND}
		default:
			p := partOf[i]
			st.CurrentLimit = currentLimit(p.policy)
			st.LimitRemaining = uint32(min(max(p.d.Remaining, 0), math.MaxUint32))
			wait := p.d.ResetAfter
			if p.over {
				st.Code, resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT, rlsv3.RateLimitResponse_OVER_LIMIT
				wait = p.d.RetryAfter
			}
			st.DurationUntilReset = durationpb.New(max(wait, 0))
		}
	}
	resp.ResponseHeadersToAdd = s.rlsHeaders(parts)
	return resp
}

// currentLimit is a limiter's quota as Envoy's RateLimit: q per w seconds,
// in the largest unit that divides w.
func currentLimit(p *ratefields.Policy) *rlsv3.RateLimitResponse_RateLimit {
	unit, mult := unitOf(p.Rate.Window)
	l := &rlsv3.RateLimitResponse_RateLimit{
		Name:            p.Rate.Name,
		RequestsPerUnit: uint32(min(p.Rate.Limit, math.MaxUint32)),
		Unit:            rlsv3.RateLimitResponse_RateLimit_Unit(rlsv3.RateLimitResponse_RateLimit_Unit_value[unit]),
	}
	if mult != 1 {
		l.UnitMultiplier = wrapperspb.UInt32(uint32(min(mult, math.MaxUint32)))
	}
	return l
}

// rlsHeaders returns the RateLimit-Policy field of the limiters decided and
// the RateLimit field of the binding one: the part that denied with the
// longest retry, or the one with the least quota left.
func (s *Server) rlsHeaders(parts []*rlsPart) []*corev3.HeaderValue {
	if len(parts) == 0 {
		return nil
	}
	var pol strings.Builder
	var bind *rlsPart
	seen := make(map[string]bool, len(parts))
	for _, p := range parts {
		if !seen[p.limiter] {
			seen[p.limiter] = true
			p.policy.WriteItems(&pol)
		}
		switch {
		case bind == nil:
			bind = p
		case p.over && (!bind.over || p.d.RetryAfter > bind.d.RetryAfter):
			bind = p
		case !p.over && !bind.over && p.d.Remaining < bind.d.Remaining:
			bind = p
		}
	}
	d := bind.d
	d.Allowed = !bind.over
	t := fieldTime(d)
	h := []*corev3.HeaderValue{
		{Key: "RateLimit-Policy", Value: pol.String()},
		{Key: "RateLimit", Value: ratefields.Item(bind.policy.Rate, d, t)},
	}
	if bind.over {
		h = append(h, &corev3.HeaderValue{Key: "Retry-After", Value: strconv.FormatInt(retrySeconds(d.RetryAfter), 10)})
	}
	if s.legacy {
		h = append(h,
			&corev3.HeaderValue{Key: "X-RateLimit-Limit", Value: strconv.FormatInt(bind.policy.Rate.Limit, 10)},
			&corev3.HeaderValue{Key: "X-RateLimit-Remaining", Value: strconv.Itoa(max(d.Remaining, 0))},
			&corev3.HeaderValue{Key: "X-RateLimit-Reset", Value: strconv.FormatInt(t, 10)})
	}
	return h
}
