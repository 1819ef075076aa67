package main

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUploads(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	checkUploads(t, out.String())
}

// checkUploads checks what the example printed: every upload ran, never
// more than 10 at once, each upload past the 10th started only after
// enough others had finished, and the two waits behaved.
func checkUploads(t *testing.T, got string) {
	t.Helper()
	lines := regexp.MustCompile(`upload +(\d+) +arrived \+(\S+)s +started \+(\S+)s +done \+(\S+)s`).FindAllStringSubmatch(got, -1)
	if len(lines) != uploads {
		t.Fatalf("%d uploads printed, want %d:\n%s", len(lines), uploads, got)
	}
	var starts, ends []float64
	for _, m := range lines {
		s, _ := strconv.ParseFloat(m[3], 64)
		e, _ := strconv.ParseFloat(m[4], 64)
		starts, ends = append(starts, s), append(ends, e)
	}
	slices.Sort(starts)
	for i, s := range starts {
		finished := 0
		for _, e := range ends {
			if e <= s {
				finished++
			}
		}
		if i+1 > 10+finished { // started, counting this one, minus finished
			t.Errorf("upload started at +%vs was number %d to start while only %d had finished: more than 10 at once", s, i+1, finished)
		}
	}
	m := regexp.MustCompile(`(\d+) uploads done in (\S+)s; peak in flight (\d+) \(max_concurrent 10\)`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no summary:\n%s", got)
	}
	// 25 uploads of 200ms, 10 at a time, take three rounds at least.
	if el, _ := strconv.ParseFloat(m[2], 64); m[1] != "25" || el < 0.6 {
		t.Errorf("summary %q: want 25 uploads in at least 0.6s", m[0])
	}
	if peak, _ := strconv.Atoi(m[3]); peak < 1 || peak > 10 {
		t.Errorf("peak in flight %d, want 1 to 10", peak)
	}
	for _, want := range []string{"10 uploads in progress (state: 10 in use, 0 free)", "an upload with a 100ms budget: gave up after"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// The waiting upload cannot have its slot before the release at 150ms.
	w := regexp.MustCompile(`the waiting upload got its slot after (\S+)\n`).FindStringSubmatch(got)
	if w == nil {
		t.Fatalf("no waiting upload:\n%s", got)
	}
	if d, err := time.ParseDuration(w[1]); err != nil || d < 150*time.Millisecond {
		t.Errorf("the waiting upload got its slot after %s, before the release at 150ms", w[1])
	}
}
