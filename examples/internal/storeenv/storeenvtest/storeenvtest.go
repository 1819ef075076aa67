// Package storeenvtest points a cookbook example's test at a Redis key
// prefix or a PostgreSQL schema of its own, through the environment that
// storeenv reads (and that the example's child processes inherit).
package storeenvtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/examples/internal/storeenv"
)

// Use sets REDIS_URL and POSTGRES_URL (empty for memory) and a random
// KEY_PREFIX / PG_SCHEMA starting with prefix for the rest of the test,
// and removes the keys or the schema when the test ends. config is the
// example's rate-sync.toml, whose store "redis" is reset.
func Use(t *testing.T, prefix, redisURL, pgURL string, config []byte) {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := prefix + hex.EncodeToString(b[:])
	t.Setenv("REDIS_URL", redisURL)
	t.Setenv("POSTGRES_URL", pgURL)
	t.Setenv("KEY_PREFIX", name)
	t.Setenv("PG_SCHEMA", name)
	switch {
	case redisURL != "":
		t.Cleanup(func() {
			reg := ratesync.NewRegistry()
			defer reg.Close()
			if err := storeenv.Apply(reg, "rate-sync.toml", config); err != nil {
				t.Error(err)
				return
			}
			if err := reg.ResetStore(context.Background(), "redis"); err != nil {
				t.Errorf("removing the keys under %s: %v", name, err)
			}
		})
	case pgURL != "":
		t.Cleanup(func() {
			p, err := pgxpool.New(context.Background(), pgURL)
			if err != nil {
				t.Error(err)
				return
			}
			defer p.Close()
			if _, err := p.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+name+`" CASCADE`); err != nil {
				t.Errorf("dropping schema %s: %v", name, err)
			}
		})
	}
}
