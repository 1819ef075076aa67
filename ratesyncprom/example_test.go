package ratesyncprom_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/ratesyncprom"
)

// Prometheus for the limiters of a configuration file: one Register call
// on your Prometheus registry. In a program that uses the package-level
// functions, ratesyncprom.Register(promReg) collects ratesync.Default(),
// the registry they load from rate-sync.toml. Here a registry of its own,
// with a login composite: each part counts under its own rule.
func ExampleRegister() {
	cfg, err := ratesync.ParseConfig("rate-sync.toml", []byte(`
[stores.main]
engine = "memory"

[limiters.login_ip]
store = "main"
algorithm = "sliding_window"
limit = 5
window_seconds = 900

[limiters.login_account]
store = "main"
algorithm = "sliding_window"
limit = 3
window_seconds = 900
`))
	if err != nil {
		panic(err)
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := reg.ApplyConfig(cfg); err != nil {
		panic(err)
	}
	promReg := prometheus.NewRegistry()
	if err := ratesyncprom.Register(promReg, reg); err != nil {
		panic(err)
	}
	metrics := httptest.NewServer(ratesyncprom.Handler(promReg)) // serve it as /metrics
	defer metrics.Close()

	login, _ := reg.Composite(map[string]string{"by_ip": "login_ip", "by_account": "login_account"}, ratesync.AllMustPass)
	for range 5 { // five attempts on one account: 3 admitted, 2 denied by the account
		login.Check(context.Background(), map[string]string{"by_ip": "198.51.100.7", "by_account": ratesync.HashIdentifier("alice@example.com")})
	}

	resp, err := metrics.Client().Get(metrics.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "ratesync_decisions_total") || strings.HasPrefix(line, "ratesync_acquisition_duration_seconds_count") {
			fmt.Println(line)
		}
	}
	// Output:
	// ratesync_acquisition_duration_seconds_count{engine="memory",group_id="login_account"} 3
	// ratesync_acquisition_duration_seconds_count{engine="memory",group_id="login_ip"} 3
	// ratesync_decisions_total{group_id="login_account",result="allowed"} 3
	// ratesync_decisions_total{group_id="login_account",result="denied"} 2
	// ratesync_decisions_total{group_id="login_account",result="timeout"} 0
	// ratesync_decisions_total{group_id="login_ip",result="allowed"} 3
	// ratesync_decisions_total{group_id="login_ip",result="denied"} 0
	// ratesync_decisions_total{group_id="login_ip",result="timeout"} 0
}
