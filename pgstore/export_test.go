package pgstore

import (
	"context"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// WithClock makes the store use now instead of the server's clock (tests).
var WithClock = withClock

// Hold creates (if missing) and locks the row of key and kind in its own
// transaction, as a decision would, until release: decisions on the row
// wait meanwhile.
func Hold(ctx context.Context, s *Store, key driver.Key, kind driver.Kind) (release func() error, err error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	T := quote(s.schema) + "." + quote(s.table)
	k := storedKey(key)
	if _, err := tx.Exec(ctx, "INSERT INTO "+T+" (key, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING", k, int16(kind)); err != nil {
		tx.Rollback(ctx)
		return nil, err
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM "+T+" WHERE key = $1 AND kind = $2 FOR UPDATE", k, int16(kind)); err != nil {
		tx.Rollback(ctx)
		return nil, err
	}
	return func() error { return tx.Commit(context.WithoutCancel(ctx)) }, nil
}

// StoredKey is the bytes that identify key's rows.
var StoredKey = storedKey

// SetListenPing sets how long the release listener waits for a
// notification before it checks its connection; call it before the first
// subscription.
func SetListenPing(s *Store, d time.Duration) { s.ping = d }

// Setting returns a server setting as the store's connections see it.
func Setting(ctx context.Context, s *Store, name string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
	return v, err
}

// WithAllBatched sends every lone token-bucket decision through a batch,
// however few are in flight, so that tests hold batchSQL to the same
// answers as bucketSQL.
func WithAllBatched() Option { return func(s *Store) { s.directMax = 0 } }

// Batching returns the store's batch workers and batch size.
func Batching(s *Store) (workers, size int) { return s.batchWorkers, s.batchSize }
