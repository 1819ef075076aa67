// Command login protects a login endpoint from brute force and credential
// stuffing: at most 5 attempts in 5 minutes per client IP and per account,
// both decided in one all-or-nothing call (Registry.Composite), so that a
// denied attempt consumes nothing from the other part.
//
//	go run ./examples/login                                        # memory
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/login
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/login
//
// It plays two attacks: one IP trying six accounts (stopped by the per-IP
// part at the 6th attempt) and a botnet of twenty IPs trying one account
// (stopped by the per-account part at the 6th). The limits are in
// rate-sync.toml beside this file (embedded).
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/examples/internal/storeenv"
	_ "github.com/rate-sync/ratesync-go/pgstore"    // engine = "postgres"
	_ "github.com/rate-sync/ratesync-go/redisstore" // engine = "redis"
)

//go:embed rate-sync.toml
var config []byte

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/login/rate-sync.toml", config); err != nil {
		return err
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())
	login, err := reg.Composite(map[string]string{"by_ip": "auth_ip", "by_account": "auth_credential"}, ratesync.AllMustPass)
	if err != nil {
		return err
	}
	start := time.Now()
	attempt := func(n int, ip, email string) (ratesync.CompositeResult, error) {
		res, err := login.Check(ctx, map[string]string{"by_ip": ip, "by_account": ratesync.HashIdentifier(email)})
		if err != nil {
			return res, err
		}
		res.Lease.Release(ctx)
		at := time.Since(start).Seconds()
		if res.Allowed {
			fmt.Fprintf(w, "  +%.3fs  #%-2d %-15s %-20s admitted (left: ip %d, account %d)\n", at, n, ip, email,
				res.Results["by_ip"].Remaining, res.Results["by_account"].Remaining)
		} else {
			fmt.Fprintf(w, "  +%.3fs  #%-2d %-15s %-20s denied by %s, retry in %v\n", at, n, ip, email,
				res.TriggeredBy, res.MostRestrictive.RetryAfter.Round(time.Second))
		}
		return res, nil
	}
	summary := func(what string, admitted int, deniedBy map[string]int) {
		fmt.Fprintf(w, "%s: %d admitted, %d denied by by_ip, %d denied by by_account\n\n", what, admitted, deniedBy["by_ip"], deniedBy["by_account"])
	}

	// Credential stuffing: one IP, a different account each time.
	fmt.Fprintln(w, "\ncredential stuffing: 6 attempts from 203.0.113.7, each on another account")
	admitted, deniedBy := 0, map[string]int{}
	for i := 1; i <= 6; i++ {
		res, err := attempt(i, "203.0.113.7", fmt.Sprintf("user%d@example.com", i))
		if err != nil {
			return err
		}
		if res.Allowed {
			admitted++
		} else {
			deniedBy[res.TriggeredBy]++
		}
	}
	summary("one IP", admitted, deniedBy)

	// A botnet: twenty IPs, one attempt each, all on alice's account.
	fmt.Fprintln(w, "botnet: 20 IPs, one attempt each on alice@example.com")
	admitted, deniedBy = 0, map[string]int{}
	for i := 1; i <= 20; i++ {
		res, err := attempt(i, fmt.Sprintf("198.51.100.%d", i), "alice@example.com")
		if err != nil {
			return err
		}
		if res.Allowed {
			admitted++
		} else {
			deniedBy[res.TriggeredBy]++
		}
	}
	summary("one account", admitted, deniedBy)

	// A denial consumed nothing from the other part: the 6th bot's IP was
	// refused for alice, yet it has all its own attempts left.
	fmt.Fprintln(w, "198.51.100.6 was denied for alice; its own IP quota was not touched:")
	res, err := attempt(1, "198.51.100.6", "bob@example.com")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "bob from 198.51.100.6: allowed=%v, ip attempts left %d of 5\n", res.Allowed, res.Results["by_ip"].Remaining)
	return nil
}
