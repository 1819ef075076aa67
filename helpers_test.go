package ratesync_test

import (
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

type ratesyncStore = driver.Store

func newMem() driver.Store { return memstore.New() }
