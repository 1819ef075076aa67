package grpclimit

import (
	"strconv"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

// The response metadata keys: the IETF RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers-10) and Retry-After, lowercase as
// gRPC metadata keys are, with the values package httplimit sends in its
// HTTP headers.
const (
	MDPolicy     = "ratelimit-policy"
	MDRateLimit  = "ratelimit"
	MDRetryAfter = "retry-after"
)

// fields returns the response metadata of decision d by quota q of policy
// p; retry is the advertised retry of a denial (then retry-after is set
// too).
func fields(p *ratefields.Policy, q *ratefields.Quota, d ratesync.Decision, retry time.Duration) metadata.MD {
	md := metadata.MD{
		MDPolicy:    {p.Field[0]},
		MDRateLimit: {ratefields.Item(q, d, ratefields.FieldTime(d, retry))},
	}
	if !d.Allowed {
		md[MDRetryAfter] = []string{strconv.FormatInt(ratefields.RetrySeconds(retry), 10)}
	}
	return md
}
