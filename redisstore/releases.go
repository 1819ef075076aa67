package redisstore

import (
	"context"

	"github.com/rate-sync/ratesync-go/driver"
)

// SubscribeReleases implements driver.ReleaseNotifier. All subscribers of
// a store share one Redis subscription to the store's release channel,
// opened in the background: subscribing does no I/O on the caller's
// goroutine.
func (s *Store) SubscribeReleases(fn func(driver.Key)) func() { return s.hub.Subscribe(fn) }

// listen holds the store's subscription until ctx is done; go-redis
// resubscribes after reconnects.
func (s *Store) listen(ctx context.Context, deliver func(string)) {
	ps := s.c.Subscribe(ctx, s.channel)
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			deliver(m.Payload)
		}
	}
}
