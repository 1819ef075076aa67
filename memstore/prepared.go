package memstore

import (
	"context"

	"github.com/rate-sync/ratesync-go/driver"
)

// InProcess marks the store as deciding in the calling process (see
// driver.InProcess).
func (s *Store) InProcess() {}

// Prepare returns p prepared for keys named name, deciding through
// DecidePrepared: it implements driver.Preparer.
func (s *Store) Prepare(name string, p driver.Policy) driver.Prepared {
	return &prepared{s: s, p: Prepare(name, p)}
}

type prepared struct {
	s *Store
	p *Prepared
}

func (p *prepared) Decide(ctx context.Context, id string, cost int) (driver.Result, error) {
	return p.s.DecidePrepared(ctx, p.p, id, cost)
}
