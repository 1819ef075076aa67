package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTenants(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	var out bytes.Buffer
	start := time.Now()
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	got := out.String()
	// A burst admits the tenant's burst, plus what its rate refilled while
	// the burst was sent (nothing on a quick machine; at most rate x the
	// run's duration).
	for _, c := range []struct {
		id          string
		sent        int
		rate, burst float64
	}{{"acme", 50, 10, 10}, {"globex", 3, 10, 10}, {"initech", 60, 50, 50}} {
		m := regexp.MustCompile(`tenant ` + c.id + ` +\(\d+/s, burst +\d+\) sent +(\d+): +(\d+) admitted, +(\d+) denied`).FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("no burst line for %s:\n%s", c.id, got)
		}
		sent, _ := strconv.Atoi(m[1])
		admitted, _ := strconv.Atoi(m[2])
		denied, _ := strconv.Atoi(m[3])
		most := min(float64(c.sent), c.burst+c.rate*elapsed.Seconds())
		if sent != c.sent || admitted+denied != sent || float64(admitted) < min(c.burst, float64(c.sent)) || float64(admitted) > most {
			t.Errorf("%s: sent %d, admitted %d, denied %d; want %d sent, admitted from %v to %v", c.id, sent, admitted, denied, c.sent, min(c.burst, float64(c.sent)), most)
		}
	}
	// acme, drained at +0, gets its 15th request no sooner than 15 <= 10/s * t
	// + 10 allows: 0.5s after its first. globex passes every time: acme's
	// waits take nothing from it.
	acme := regexp.MustCompile(`\+(\d+\.\d+)s  acme   acquire 5 admitted`).FindStringSubmatch(got)
	if acme == nil {
		t.Fatalf("no 5th acquire of acme:\n%s", got)
	}
	if at, _ := strconv.ParseFloat(acme[1], 64); at < 0.499 {
		t.Errorf("acme's 15th request admitted at +%vs, before the 0.5s its rate allows", at)
	}
	if n := strings.Count(got, "globex try       allowed=true"); n != 5 {
		t.Errorf("globex allowed %d times of 5:\n%s", n, got)
	}
}
