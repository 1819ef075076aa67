// Package grpclimit is gRPC server interceptors for ratesync limiters: a
// unary and a stream interceptor per limiter, or per method with Methods.
//
//	api, _ := reg.Get("api")
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(grpclimit.UnaryServerInterceptor(api, grpclimit.PeerAddress())),
//		grpc.ChainStreamInterceptor(grpclimit.StreamServerInterceptor(api, grpclimit.PeerAddress())),
//	)
//
// A denied call gets codes.ResourceExhausted with two details: a
// google.rpc.RetryInfo, the exact time until the call could pass, and a
// google.rpc.QuotaFailure naming the violated policy. Every limited call
// carries, as header metadata, the IETF RateLimit-Policy and RateLimit
// fields ("ratelimit-policy", "ratelimit"; the values package httplimit
// sends over HTTP), and a denial "retry-after" in whole seconds. The call's
// key never appears in a response.
//
// Token-bucket and sliding-window rules decide once per call or stream; a
// concurrency rule (max_concurrent) holds its lease while the handler runs
// (for a stream, until the stream ends) and releases it when the handler
// returns or panics. With Wait, a call waits up to the rule's timeout and
// its own deadline before it is denied. Store errors follow the rule's
// failure policy; deny (fail_closed) answers codes.Unavailable, and a call
// whose context ended gets its context's code. A shadow rule (shadow =
// true) decides and counts but admits every call, and its calls carry no
// RateLimit metadata: its limit is not in force.
//
// Each call counts once in the limiter's metrics: an admission, a denial
// or, with Wait, a timeout.
package grpclimit
