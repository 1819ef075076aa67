package policy

// Log is the exact sliding-window log of one key: one entry per admission,
// whatever its cost (its time and the units it took), oldest first, in a
// ring buffer. Admissions at the same time share one entry. Its answers are
// those of a log with one entry per unit; taking n units costs O(1) time
// and memory, and a denial finds its retry time by binary search. Its zero
// value is an empty log. A Log is not safe for concurrent use.
type Log struct {
	es   []logEntry
	head int // index of the oldest entry
	n    int
	// base is the running total of units at the oldest entry's start:
	// the units held are newest.end - base.
	base int64
}

// logEntry is one admission time and the running total of units up to and
// including it.
type logEntry struct {
	t   int64
	end int64
}

// LogEntry is an admission held by a Log: its time and its units.
type LogEntry struct {
	Time  int64
	Count int64
}

// rebaseAt bounds the running totals: past it, they restart from the oldest
// held entry. Held units never exceed a limit (at most 1e15), so this is
// reached only after about 4.6e18 units on one busy key.
var rebaseAt int64 = 1 << 62

// Len returns the number of entries held (live or not yet expired): one
// per admission time.
func (l *Log) Len() int { return l.n }

// Count returns the number of units held.
func (l *Log) Count() int64 {
	if l.n == 0 {
		return 0
	}
	return l.at(l.n-1).end - l.base
}

// at returns the i-th oldest entry.
func (l *Log) at(i int) *logEntry {
	i += l.head
	if i >= len(l.es) {
		i -= len(l.es)
	}
	return &l.es[i]
}

// Expire drops the entries that are out of the window (now-window, now].
func (l *Log) Expire(now, window int64) {
	cut := now - window
	for l.n > 0 && l.es[l.head].t <= cut {
		l.base = l.es[l.head].end
		l.head++
		if l.head == len(l.es) {
			l.head = 0
		}
		l.n--
	}
	if l.n == 0 {
		l.head, l.base = 0, 0
	}
}

// Newest returns the most recent admission time; ok is false when empty.
func (l *Log) Newest() (int64, bool) {
	if l.n == 0 {
		return 0, false
	}
	return l.at(l.n - 1).t, true
}

// Take answers a check of cost units against limit per window at now,
// first expiring old entries. When the check passes and consume is true,
// the cost is recorded at now: one entry, or added to the newest entry
// when that is at now too. now must not go backwards between calls.
func (l *Log) Take(now, window int64, limit, cost int, consume bool) Outcome {
	l.Expire(now, window)
	count := int(l.Count())
	o := Outcome{Remaining: max(limit-count, 0)}
	if newest, ok := l.Newest(); ok {
		o.ResetAfter = newest + window - now
	}
	if cost > limit {
		o.RetryAfter = Never
		return o
	}
	if count+cost > limit {
		// The (count+cost-limit)-th oldest unit must leave the window.
		o.RetryAfter = l.at(l.find(l.base+int64(count+cost-limit))).t + window - now
		return o
	}
	o.Allowed = true
	if !consume {
		return o
	}
	l.add(now, int64(cost), limit)
	o.Remaining = limit - count - cost
	o.ResetAfter = window
	return o
}

// find returns the index of the oldest entry whose running total reaches
// total (which the newest entry's does).
func (l *Log) find(total int64) int {
	lo, hi := 0, l.n-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if l.at(mid).end >= total {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// add records cost units at now.
func (l *Log) add(now, cost int64, limit int) {
	end := l.base
	if l.n > 0 {
		last := l.at(l.n - 1)
		if last.t == now {
			last.end += cost
			return
		}
		end = last.end
	}
	if end > rebaseAt-cost {
		l.rebase()
		end -= l.base
		l.base = 0
	}
	l.grow(limit)
	*l.at(l.n) = logEntry{t: now, end: end + cost}
	l.n++
}

// rebase restarts the running totals of the held entries from base (the
// caller then zeroes base).
func (l *Log) rebase() {
	for i := range l.n {
		l.at(i).end -= l.base
	}
}

// grow makes room for one more entry. The ring doubles, up to limit
// entries (each entry holds at least one unit, so no more are ever held),
// so that a large limit costs memory only when used.
func (l *Log) grow(limit int) {
	if l.n < len(l.es) {
		return
	}
	es := make([]logEntry, min(max(8, 2*len(l.es)), max(limit, l.n+1)))
	for i := range l.n {
		es[i] = *l.at(i)
	}
	l.es, l.head = es, 0
}

// Entries returns a copy of the held entries, oldest first (for tests and
// diagnostics).
func (l *Log) Entries() []LogEntry {
	out := make([]LogEntry, l.n)
	prev := l.base
	for i := range out {
		e := l.at(i)
		out[i] = LogEntry{Time: e.t, Count: e.end - prev}
		prev = e.end
	}
	return out
}

// Unappend removes the n newest units (undoing consumed Takes, newest
// first).
func (l *Log) Unappend(n int) {
	left := int64(n)
	for left > 0 && l.n > 0 {
		last := l.at(l.n - 1)
		prev := l.base
		if l.n > 1 {
			prev = l.at(l.n - 2).end
		}
		units := last.end - prev
		if units > left {
			last.end -= left
			return
		}
		left -= units
		*last = logEntry{}
		l.n--
	}
	if l.n == 0 {
		l.head, l.base = 0, 0
	}
}
