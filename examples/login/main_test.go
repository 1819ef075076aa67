package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLogin(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("POSTGRES_URL", "")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"store: memory",
		"one IP: 5 admitted, 1 denied by by_ip, 0 denied by by_account\n",
		"one account: 5 admitted, 0 denied by by_ip, 15 denied by by_account\n",
		"bob from 198.51.100.6: allowed=true, ip attempts left 4 of 5\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// The 6th attempt of each attack is the first denied, with the window's wait.
	for _, want := range []string{"#6  203.0.113.7     user6@example.com    denied by by_ip, retry in 5m0s",
		"#6  198.51.100.6    alice@example.com    denied by by_account, retry in 5m0s",
		"#5  198.51.100.5    alice@example.com    admitted (left: ip 4, account 0)"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
