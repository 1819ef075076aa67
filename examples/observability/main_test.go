package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestObservability(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	// 8 then 45 requests on a quota of 50 a minute: 42 left, then 42 of 45
	// admitted, then an Acquire that gives up. The metrics and Prometheus
	// agree: 50 admitted, 3 denied, 1 timeout.
	for _, want := range []string{
		`State: allowed=true remaining=42 limit=50 in use=8 retry after 0s, reset in (59s|1m0s)`,
		`  42 admitted, 3 denied\n`,
		`State: allowed=false remaining=0 limit=50 in use=50 retry after (59s|1m0s), reset in (59s|1m0s)`,
		`Metrics: acquisitions=50 denials=3 timeouts=1 errors=0 fallbacks=0 waiting=0`,
		`ratesync_acquisitions_total\{engine="memory",group_id="api"\} 50\n`,
		`ratesync_acquisition_duration_seconds_count\{engine="memory",group_id="api"\} 50\n`,
		`ratesync_decisions_total\{group_id="api",result="allowed"\} 50\n`,
		`ratesync_decisions_total\{group_id="api",result="denied"\} 3\n`,
		`ratesync_decisions_total\{group_id="api",result="timeout"\} 1\n`,
		`ratesync_timeouts_total\{engine="memory",group_id="api"\} 1\n`,
	} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
