package memstore

import (
	"testing"
	"unsafe"
)

// The entry's layout keeps the bucket on its own cache line (see entry).
func TestEntryLayout(t *testing.T) {
	var e entry
	if size := unsafe.Sizeof(e); size != 192 {
		t.Errorf("entry is %d bytes, want 192 (a size class of 64-byte aligned objects)", size)
	}
	if off := unsafe.Offsetof(e.tat); off != 64 {
		t.Errorf("entry.tat at offset %d, want 64", off)
	}
}
