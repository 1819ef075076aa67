package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestTenants(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		`tenant acme     \(10/s, burst 10\) sent 50: 10 admitted, 40 denied \(retry in \d+ms\)`,
		`tenant globex   \(10/s, burst 10\) sent  3:  3 admitted,  0 denied\n`,
		`tenant initech  \(50/s, burst 50\) sent 60: 50 admitted, 10 denied \(retry in \d+ms\)`,
	} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("output lacks %q:\n%s", want, got)
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
