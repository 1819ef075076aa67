package policy

// Log is the exact sliding-window log of one key: the admission times of
// the units admitted in the last window, oldest first, in a ring buffer. Its
// zero value is an empty log. A Log is not safe for concurrent use.
type Log struct {
	ts   []int64
	head int // index of the oldest entry
	n    int
}

// Len returns the number of entries held (live or not yet expired).
func (l *Log) Len() int { return l.n }

func (l *Log) at(i int) int64 { return l.ts[(l.head+i)%len(l.ts)] }

// Expire drops the entries that are out of the window (now-window, now].
func (l *Log) Expire(now, window int64) {
	cut := now - window
	for l.n > 0 && l.ts[l.head] <= cut {
		l.head = (l.head + 1) % len(l.ts)
		l.n--
	}
	if l.n == 0 {
		l.head = 0
	}
}

// Newest returns the most recent admission time; ok is false when empty.
func (l *Log) Newest() (int64, bool) {
	if l.n == 0 {
		return 0, false
	}
	return l.at(l.n - 1), true
}

// Take answers a check of cost units against limit per window at now,
// first expiring old entries. When the check passes and consume is true,
// cost entries stamped now are appended.
func (l *Log) Take(now, window int64, limit, cost int, consume bool) Outcome {
	l.Expire(now, window)
	count := l.n
	o := Outcome{Remaining: limit - count}
	if o.Remaining < 0 {
		o.Remaining = 0
	}
	if newest, ok := l.Newest(); ok {
		o.ResetAfter = newest + window - now
	}
	if cost > limit {
		o.RetryAfter = Never
		return o
	}
	if count+cost > limit {
		// The (count+cost-limit)-th oldest entry must leave the window.
		o.RetryAfter = l.at(count+cost-limit-1) + window - now
		return o
	}
	o.Allowed = true
	if !consume {
		return o
	}
	for i := 0; i < cost; i++ {
		l.grow(limit)
		l.ts[(l.head+l.n)%len(l.ts)] = now
		l.n++
	}
	o.Remaining = limit - l.n
	o.ResetAfter = window
	return o
}

// grow makes room for one more entry (up to limit), doubling the ring
// so that a large limit costs memory only when used.
func (l *Log) grow(limit int) {
	if l.n < len(l.ts) || len(l.ts) >= limit {
		return
	}
	ts := make([]int64, min(limit, max(8, 2*len(l.ts))))
	for i := 0; i < l.n; i++ {
		ts[i] = l.at(i)
	}
	l.ts, l.head = ts, 0
}

// Entries returns a copy of the held entries, oldest first (for tests and
// diagnostics).
func (l *Log) Entries() []int64 {
	out := make([]int64, l.n)
	for i := range out {
		out[i] = l.at(i)
	}
	return out
}

// Unappend removes the n newest entries (undoing a consumed Take).
func (l *Log) Unappend(n int) {
	if n > l.n {
		n = l.n
	}
	l.n -= n
	if l.n == 0 {
		l.head = 0
	}
}
