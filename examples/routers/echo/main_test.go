package main

import (
	"testing"

	"github.com/rate-sync/ratesync-go/examples/routers/internal/routertest"
)

// The example serves hello twice per client and then answers 429 with the
// rate limit fields.
func TestExample(t *testing.T) { routertest.Check(t, newHandler) }
