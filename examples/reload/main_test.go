package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestReloadExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out, t.TempDir()); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"api, tenant:alice                  3 of 5 admitted (limit 3)",
		"api, tenant:acme (override)        10 of 12 admitted (limit 10)",
		"search, tenant:alice (shadow)      5 of 5 admitted (limit 2, 3 only because the rule is in shadow mode)",
		"search would have denied 3 (Metrics.Denials), admitted them anyway (ShadowDenials 3)",
		"api, tenant:alice (3 already used) 2 of 5 admitted (limit 5)",
		"configuration rejected",
		"api, tenant:bob (limit 5 stays)    5 of 7 admitted (limit 5)",
		"reloads applied 2, rejected 1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
