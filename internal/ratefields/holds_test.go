package ratefields

import (
	"testing"
	"time"
)

func TestHoldTimesEstimate(t *testing.T) {
	var h holdTimes
	if got := h.estimate(30*time.Second, 30*time.Second, 2); got != time.Second {
		t.Fatalf("nothing observed: %v, want 1s (ask again soon)", got)
	}
	for range 50 {
		h.observe(4 * time.Second)
	}
	tests := []struct {
		upper, ttl time.Duration
		slots      int
		want       time.Duration
	}{
		{30 * time.Second, 30 * time.Second, 2, 2 * time.Second}, // one of 2 holders of 4 s ends about every 2 s
		{30 * time.Second, 30 * time.Second, 8, 500 * time.Millisecond},
		{700 * time.Millisecond, 30 * time.Second, 1, 700 * time.Millisecond}, // the earliest lease expires first
		{0, 3 * time.Second, 1, 3 * time.Second},                              // no store bound: the lease TTL
		{time.Hour, 3 * time.Second, 1, 3 * time.Second},
	}
	for _, tt := range tests {
		if got := h.estimate(tt.upper, tt.ttl, tt.slots); got != tt.want {
			t.Errorf("mean 4s, upper %v, TTL %v, %d slots: %v, want %v", tt.upper, tt.ttl, tt.slots, got, tt.want)
		}
	}
	// The mean follows a change within a few dozen requests.
	for range 40 {
		h.observe(100 * time.Millisecond)
	}
	if got := h.estimate(time.Minute, time.Minute, 1); got > 200*time.Millisecond {
		t.Fatalf("after 40 holds of 100 ms: %v", got)
	}
}
