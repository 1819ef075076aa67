package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rate-sync/ratesync-go/driver"
)

// bucketSQL decides a lone token-bucket check (the most common decision)
// in one statement, with no PL/pgSQL. c reads the committed row and then
// the clock: a denial there is final and writes nothing. An admission
// upserts the row; on a conflict the update reads the clock again once it
// holds the row lock, rechecks, and records that reading in at, which
// RETURNING gives back. When the locked row turns out full (another
// decision got there first) no row is returned and the caller decides
// again with the function. $1 key, $2 cost times interval (ns), $3 burst
// times interval, $4 test clock or NULL.
const bucketSQL = `WITH c AS MATERIALIZED (
  SELECT (SELECT t.tat FROM {{T}} t WHERE t.key = $1 AND t.kind = 1) AS tat,
    coalesce($4::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000) AS now,
    set_config('synchronous_commit', 'off', true) AS cfg
), d AS (
  SELECT tat, now, coalesce(tat, 0) + $2 - $3 <= now AS ok FROM c
), ins AS (
  INSERT INTO {{T}} AS s (key, kind, tat, at, expires_at)
  SELECT $1, 1, greatest(d.tat, d.now) + $2, d.now, {{expiry}}(0, greatest(d.tat, d.now) + $2) FROM d WHERE d.ok
  ON CONFLICT (key, kind) DO UPDATE SET (tat, at, expires_at) = (
    SELECT greatest(s.tat, n.now) + $2, n.now, {{expiry}}(s.expires_at, greatest(s.tat, n.now) + $2)
    FROM (SELECT coalesce($4::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000) AS now) n)
  WHERE coalesce(s.tat, 0) + $2 - $3 <= coalesce($4::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)
  RETURNING s.tat, s.at
)
SELECT tat, at, true FROM ins
UNION ALL
SELECT tat, now, false FROM d WHERE NOT d.ok`

// batchSQL decides lone token-bucket checks of one rule, one per key of
// $1, as bucketSQL decides one: $2 cost times interval (ns), $3 burst
// times interval, $4 test clock or NULL. r reads the committed rows, then
// c the clock: a check denied there is final and writes nothing. The
// others are upserted in $1's order (sorted by the caller, so that
// statements lock rows in one order and never deadlock); on a conflict
// the update reads the clock again once it holds that row's lock. A lock
// waited for longer than 50 ms (lock_timeout) fails the statement, which
// writes nothing then: its decisions are made again alone, so that a row
// held for long holds up only its own. It returns three arrays in $1's
// order: the outcome (1 admitted, 0 denied, 2 the locked row denied what
// the committed one admitted: decide again), tat, and the clock reading
// of the answer. $1 goes through a subquery so that the planner sizes it
// alike with and without its value; otherwise it plans each execution
// anew for the array's length, which costs more than the decisions.
const batchSQL = `WITH r AS MATERIALIZED (
  SELECT u.i, u.k, (SELECT t.tat FROM {{T}} t WHERE t.key = u.k AND t.kind = 1) AS tat
  FROM (SELECT $1::bytea[] AS a OFFSET 0) p, unnest(p.a) WITH ORDINALITY AS u(k, i)
), c AS MATERIALIZED (
  SELECT coalesce($4::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000) AS now,
    set_config('synchronous_commit', 'off', true) AS sc, set_config('lock_timeout', '50ms', true) AS lt
  FROM (SELECT count(*) FROM r) n
), ins AS (
  INSERT INTO {{T}} AS s (key, kind, tat, at, expires_at)
  SELECT r.k, 1, greatest(r.tat, c.now) + $2, c.now, {{expiry}}(0, greatest(r.tat, c.now) + $2)
  FROM r, c WHERE coalesce(r.tat, 0) + $2 - $3 <= c.now ORDER BY r.i
  ON CONFLICT (key, kind) DO UPDATE SET (tat, at, expires_at) = (
    SELECT greatest(s.tat, n.now) + $2, n.now, {{expiry}}(s.expires_at, greatest(s.tat, n.now) + $2)
    FROM (SELECT coalesce($4::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000) AS now) n)
  WHERE coalesce(s.tat, 0) + $2 - $3 <= coalesce($4::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)
  RETURNING s.key, s.tat, s.at
), o AS (
  SELECT r.i, CASE WHEN ins.key IS NOT NULL THEN 1 WHEN coalesce(r.tat, 0) + $2 - $3 <= c.now THEN 2 ELSE 0 END AS v,
    coalesce(ins.tat, r.tat, 0) AS tat, coalesce(ins.at, c.now) AS now
  FROM r CROSS JOIN c LEFT JOIN ins ON ins.key = r.k
)
SELECT array_agg(v ORDER BY i), array_agg(tat ORDER BY i), array_agg(now ORDER BY i) FROM o`

// Outcomes of a lone bucket decision.
const (
	bucketDenied   = 0
	bucketAdmitted = 1
	bucketRace     = 2 // decide again with the function
	bucketAlone    = 3 // decide again with a statement of its own
	bucketFailed   = 4
)

// bucketCall is a lone token-bucket decision waiting for a batch, and its
// answer once the batch has run.
type bucketCall struct {
	key      []byte
	ci, cap  int64     // cost × interval, burst × interval (ns)
	deadline time.Time // zero: none

	state atomic.Int32  // callQueued, callTaken or callAbandoned
	done  chan struct{} // receives once the answer is written

	outcome  int
	tat, now int64
	err      error
}

const (
	callQueued int32 = iota
	callTaken
	callAbandoned
)

// answer hands the call its answer.
func (c *bucketCall) answer(outcome int, tat, now int64, err error) {
	c.outcome, c.tat, c.now, c.err = outcome, tat, now, err
	c.done <- struct{}{}
}

// decideBucket decides one token-bucket check that consumes. done is false
// when the locked row denied what the committed one admitted: the caller
// then decides with the function.
func (s *Store) decideBucket(ctx context.Context, c *driver.Check, res *driver.Result) (ok, done bool, err error) {
	iv := int64(c.Policy.Interval())
	cost := int64(max(c.Cost, 1))
	ci, capNs := cost*iv, int64(c.Policy.Burst)*iv
	key := storedKey(c.Key)
	outcome, tat, now := bucketAlone, int64(0), int64(0)
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if n > s.directMax && s.batchSize > 1 {
		outcome, tat, now, err = s.queueBucket(ctx, key, ci, capNs)
	}
	if outcome == bucketAlone && err == nil {
		outcome, tat, now, err = s.bucketOne(ctx, key, ci, capNs)
	}
	switch {
	case err != nil:
		return false, true, err
	case outcome == bucketRace:
		return false, false, nil
	}
	ok = outcome == bucketAdmitted
	d := max(tat-now, 0)
	*res = driver.Result{Allowed: ok, Limit: c.Policy.Burst, ResetAfter: time.Duration(d)}
	if capNs > d {
		res.Remaining = int((capNs - d) / iv)
	}
	if !ok {
		res.RetryAfter = time.Duration(d + ci - capNs)
	}
	return ok, true, nil
}

// bucketOne decides one lone bucket check with bucketSQL, on the caller's
// context.
func (s *Store) bucketOne(ctx context.Context, key []byte, ci, capNs int64) (outcome int, tat, now int64, err error) {
	var ok bool
	err = s.pool.QueryRow(ctx, s.q.bucket, key, ci, capNs, s.now()).Scan(&tat, &now, &ok)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return bucketRace, 0, 0, nil
	case err != nil:
		return bucketFailed, 0, 0, classify(fmt.Errorf("ratesync/pgstore: decide: %w", err))
	case ok:
		return bucketAdmitted, tat, now, nil
	}
	return bucketDenied, tat, now, nil
}

// queueBucket queues a lone bucket decision for a batch and waits for its
// answer, or for ctx. A batch runner is started when fewer than
// s.batchWorkers are running.
func (s *Store) queueBucket(ctx context.Context, key []byte, ci, capNs int64) (outcome int, tat, now int64, err error) {
	c := &bucketCall{key: key, ci: ci, cap: capNs, done: make(chan struct{}, 1)}
	c.deadline, _ = ctx.Deadline()
	s.batchMu.Lock()
	if s.batchClosed {
		s.batchMu.Unlock()
		return bucketFailed, 0, 0, driver.Unavailable(ErrClosed)
	}
	s.batchQueue = append(s.batchQueue, c)
	start := s.batchRunners < s.batchWorkers
	if start {
		s.batchRunners++
	}
	s.batchMu.Unlock()
	if start && !s.background(s.runBatches) {
		// Closed meanwhile: Close answers the queued calls.
		s.batchMu.Lock()
		s.batchRunners--
		s.batchMu.Unlock()
	}
	select {
	case <-c.done:
		return c.outcome, c.tat, c.now, c.err
	case <-ctx.Done():
		// Whether or not a batch has taken the call, the caller's
		// deadline comes first; a taken call's answer goes unread.
		c.state.CompareAndSwap(callQueued, callAbandoned)
		return bucketFailed, 0, 0, classify(fmt.Errorf("ratesync/pgstore: decide: %w", ctx.Err()))
	}
}

// runBatches runs batches until the queue is empty.
func (s *Store) runBatches() {
	batch := make([]*bucketCall, 0, s.batchSize)
	for {
		batch = s.takeBatch(batch[:0])
		if len(batch) == 0 {
			return
		}
		s.execBatch(batch)
	}
}

// takeBatch moves up to s.batchSize queued calls of one rule (the rule of
// the oldest call) into batch, in key order. A call on a key already in
// the batch is answered bucketAlone (one statement cannot update a row
// twice); a call past its deadline is dropped. With nothing left to take,
// the runner is counted out.
func (s *Store) takeBatch(batch []*bucketCall) []*bucketCall {
	now := time.Now()
	s.batchMu.Lock()
	defer s.batchMu.Unlock()
	q := s.batchQueue
	kept := q[:0]
	for _, c := range q {
		if len(batch) == s.batchSize || len(batch) > 0 && (c.ci != batch[0].ci || c.cap != batch[0].cap) {
			kept = append(kept, c)
			continue
		}
		if !c.deadline.IsZero() && !now.Before(c.deadline) {
			c.state.CompareAndSwap(callQueued, callAbandoned) // its caller is leaving
		}
		if !c.state.CompareAndSwap(callQueued, callTaken) {
			continue // abandoned
		}
		if slices.ContainsFunc(batch, func(b *bucketCall) bool { return bytes.Equal(b.key, c.key) }) {
			c.answer(bucketAlone, 0, 0, nil)
			continue
		}
		batch = append(batch, c)
	}
	clear(q[len(kept):])
	s.batchQueue = kept
	if len(batch) == 0 {
		s.batchRunners--
	}
	slices.SortFunc(batch, func(a, b *bucketCall) int { return bytes.Compare(a.key, b.key) })
	return batch
}

// execBatch decides batch in one statement, bounded by the latest of its
// callers' deadlines (and the statement timeout), and answers each call.
// A batch the server rejected was rolled back: each of its decisions is
// then made alone, so that one failing or held row fails or waits alone.
func (s *Store) execBatch(batch []*bucketCall) {
	keys := make([][]byte, len(batch))
	limit := time.Now().Add(s.bound)
	var deadline time.Time
	for i, c := range batch {
		keys[i] = c.key
		if c.deadline.IsZero() || c.deadline.After(limit) {
			deadline = limit
		} else if c.deadline.After(deadline) {
			deadline = c.deadline
		}
	}
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	var vs, tats, nows []int64
	err := s.pool.QueryRow(ctx, s.q.batch, keys, batch[0].ci, batch[0].cap, s.now()).Scan(&vs, &tats, &nows)
	cancel()
	if err == nil && (len(vs) != len(batch) || len(tats) != len(batch) || len(nows) != len(batch)) {
		err = fmt.Errorf("ratesync/pgstore: bucket statement returned %d answers for %d keys", len(vs), len(batch))
	}
	var pe *pgconn.PgError
	switch {
	case err == nil:
		for i, c := range batch {
			c.answer(int(vs[i]), tats[i], nows[i], nil)
		}
	case errors.As(err, &pe) && !s.closed.Load():
		for _, c := range batch {
			c.answer(bucketAlone, 0, 0, nil)
		}
	default:
		if s.closed.Load() {
			err = ErrClosed
		}
		err = classify(fmt.Errorf("ratesync/pgstore: decide: %w", err))
		for _, c := range batch {
			c.answer(bucketFailed, 0, 0, err)
		}
	}
}

// closeBatches answers the queued calls with ErrClosed and refuses new
// ones.
func (s *Store) closeBatches() {
	s.batchMu.Lock()
	s.batchClosed = true
	q := s.batchQueue
	s.batchQueue = nil
	s.batchMu.Unlock()
	for _, c := range q {
		if c.state.CompareAndSwap(callQueued, callTaken) {
			c.answer(bucketFailed, 0, 0, driver.Unavailable(ErrClosed))
		}
	}
}
