package memstore

import (
	"testing"
	"unsafe"
)

// An entry fills one cache line (see entry).
func TestEntryLayout(t *testing.T) {
	if size := unsafe.Sizeof(entry{}); size != 64 {
		t.Errorf("entry is %d bytes, want 64: one cache line, a size class of aligned objects", size)
	}
}
