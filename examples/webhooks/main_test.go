package main

import (
	"bytes"
	"context"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWebhooks(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, ep := range []struct {
		name string
		rate float64
	}{{"A", 10}, {"B", 4}, {"C", 2}} {
		m := regexp.MustCompile(`endpoint ` + ep.name + ` \(([\d.]+)/s\): arrivals at(.*)\n`).FindStringSubmatch(got)
		s := regexp.MustCompile(`endpoint ` + ep.name + ` \([\d.]+/s\): (\d+) delivered, (\d+) given up`).FindStringSubmatch(got)
		if m == nil || s == nil {
			t.Fatalf("no lines for endpoint %s:\n%s", ep.name, got)
		}
		if m[1] != strconv.FormatFloat(ep.rate, 'g', -1, 64) {
			t.Errorf("endpoint %s paced at %s/s, want %v", ep.name, m[1], ep.rate)
		}
		delivered, _ := strconv.Atoi(s[1])
		gaveUp, _ := strconv.Atoi(s[2])
		// Within the budget an endpoint can take its first event at once and
		// one more per 1/rate: A all 8, B at most 5, C at most 3.
		most := min(events, 1+int(math.Floor(budget.Seconds()*ep.rate)))
		if delivered+gaveUp != events || delivered < 1 || delivered > most {
			t.Errorf("endpoint %s: %d delivered, %d given up; want %d in all, 1 to %d delivered", ep.name, delivered, gaveUp, events, most)
		}
		arrivals := strings.Fields(m[2])
		if len(arrivals) != delivered {
			t.Errorf("endpoint %s: %d arrivals printed, %d delivered", ep.name, len(arrivals), delivered)
		}
		// The k-th arrival (from 0) comes no sooner than k/rate after the
		// burst began: the endpoint's pace, whatever the scheduling (1ms for
		// the printed rounding).
		for k, a := range arrivals {
			at, _ := strconv.ParseFloat(strings.TrimPrefix(a, "+"), 64)
			if at < float64(k)/ep.rate-0.001 {
				t.Errorf("endpoint %s: delivery %d arrived at +%vs, before %vs", ep.name, k+1, at, float64(k)/ep.rate)
			}
		}
	}
}
