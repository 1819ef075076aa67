// Package policy holds the pure maths of the three rate limit policies as
// functions of (state, now, policy, cost): no I/O, no clock, no locks. The
// memory store runs them directly; the conformance suite uses them as the
// reference model that the Redis and PostgreSQL scripts must agree with.
//
// Times are int64 nanoseconds on the store's clock; only differences matter.
package policy

// Outcome is the answer of one policy to one check.
type Outcome struct {
	Allowed    bool
	Remaining  int
	RetryAfter int64 // ns until the check could pass; 0 when allowed
	ResetAfter int64 // ns until the quota is fully restored
}

// Never is the RetryAfter of a check that can never pass (its cost exceeds
// the policy's capacity).
const Never = int64(1<<63 - 1)

// BucketTake applies a GCRA token bucket with the given emission interval
// (ns per token) and burst to the theoretical arrival time tat. It returns
// the new tat (unchanged when denied or when consume is false).
//
// A bucket whose tat is at or before now is full: burst tokens are
// available. Taking cost tokens moves tat forward by cost*interval; the check
// passes when the new tat is no more than burst*interval ahead of now.
func BucketTake(tat, now, interval int64, burst, cost int, consume bool) (int64, Outcome) {
	if tat < now {
		tat = now
	}
	capNs := int64(burst) * interval
	if cost > burst {
		return tat, Outcome{Remaining: available(tat, now, interval, capNs), RetryAfter: Never, ResetAfter: tat - now}
	}
	newTAT := tat + int64(cost)*interval
	allowAt := newTAT - capNs
	if now < allowAt {
		return tat, Outcome{
			Remaining:  available(tat, now, interval, capNs),
			RetryAfter: allowAt - now,
			ResetAfter: tat - now,
		}
	}
	if !consume {
		return tat, Outcome{Allowed: true, Remaining: available(tat, now, interval, capNs), ResetAfter: tat - now}
	}
	return newTAT, Outcome{Allowed: true, Remaining: available(newTAT, now, interval, capNs), ResetAfter: newTAT - now}
}

// available is the number of whole tokens in a bucket whose tat >= now.
func available(tat, now, interval, capNs int64) int {
	free := now - (tat - capNs)
	if free <= 0 {
		return 0
	}
	return int(free / interval)
}

// Lease is one held concurrency slot.
type Lease struct {
	ID     string
	Expiry int64 // the lease is live while now < Expiry
}

// ExpireLeases removes the leases that expired at or before now, in place,
// keeping order, and returns the shortened slice.
func ExpireLeases(ls []Lease, now int64) []Lease {
	j := 0
	for _, l := range ls {
		if l.Expiry > now {
			ls[j] = l
			j++
		}
	}
	for k := j; k < len(ls); k++ {
		ls[k] = Lease{}
	}
	return ls[:j]
}

// LeaseCheck answers a concurrency check against live leases (already
// expired by ExpireLeases): it passes when fewer than max are held. When
// granted is true the caller has just appended the new lease, so Remaining
// counts it.
func LeaseCheck(live []Lease, now int64, max int) Outcome {
	o := Outcome{Allowed: len(live) < max, Remaining: max - len(live)}
	if o.Remaining < 0 {
		o.Remaining = 0
	}
	var earliest, latest int64
	for i, l := range live {
		if i == 0 || l.Expiry < earliest {
			earliest = l.Expiry
		}
		if l.Expiry > latest {
			latest = l.Expiry
		}
	}
	if len(live) > 0 {
		o.ResetAfter = latest - now
		if !o.Allowed {
			o.RetryAfter = earliest - now
		}
	}
	return o
}

// RemoveLease removes the lease with the given id and reports whether it was
// held.
func RemoveLease(ls []Lease, id string) ([]Lease, bool) {
	for i, l := range ls {
		if l.ID == id {
			copy(ls[i:], ls[i+1:])
			ls[len(ls)-1] = Lease{}
			return ls[:len(ls)-1], true
		}
	}
	return ls, false
}
