// Command ratesync works with rate-sync configuration files.
//
// Usage:
//
//	ratesync check [FILE]
//	ratesync migrate [--print] [FILE]
//
// check validates a configuration (FILE, or the file the library would load:
// $RATE_SYNC_CONFIG, ./rate-sync.toml, ./config/rate-sync.toml), opens its
// stores without connecting, and prints its stores and limiters as a table
// with secrets redacted. It exits with status 1 and the error when the
// configuration is invalid.
//
// migrate creates or upgrades the schema of every PostgreSQL store of the
// configuration (many processes may run it at once); with --print it
// prints the SQL instead, for a DBA to review, and connects to nothing.
package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
	"github.com/rate-sync/ratesync-go/pgstore"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

const usage = `usage: ratesync check [FILE]
       ratesync migrate [--print] [FILE]

  check     validate a configuration file and print its stores and limiters
  migrate   create or upgrade the schema of its PostgreSQL stores
            (--print: print the SQL instead of running it)

  FILE defaults to $RATE_SYNC_CONFIG, ./rate-sync.toml, ./config/rate-sync.toml
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	rest := args[1:]
	var do func(path string) error
	switch args[0] {
	case "check":
		do = func(path string) error { return check(path, stdout) }
	case "migrate":
		print := len(rest) > 0 && rest[0] == "--print"
		if print {
			rest = rest[1:]
		}
		do = func(path string) error { return migrate(path, print, stdout) }
	default:
		fmt.Fprintf(stderr, "ratesync: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if len(rest) > 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	path := "" // empty: the default search order (see usage)
	if len(rest) == 1 {
		path = rest[0]
	}
	if err := do(path); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func configPath(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	p, err := ratesync.FindConfig()
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", fmt.Errorf("ratesync: no configuration file: name one, set %s, or create ./rate-sync.toml", ratesync.ConfigEnv)
	}
	return p, nil
}

// migrate runs (or prints) the migrations of every postgres store.
func migrate(path string, print bool, w io.Writer) error {
	path, err := configPath(path)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("ratesync: read config: %w", err)
	}
	cfg, err := ratesync.ParseConfig(path, data)
	if err != nil {
		return err
	}
	n := 0
	for _, sc := range cfg.Stores {
		if sc.Engine != "postgres" {
			continue
		}
		n++
		s, err := pgstore.FromConfig(sc)
		if err != nil {
			return err
		}
		if print {
			fmt.Fprintf(w, "-- stores.%s\n%s\n", sc.Name, s.MigrationSQL())
			s.Close()
			continue
		}
		err = s.Migrate(context.Background())
		s.Close()
		if err != nil {
			return fmt.Errorf("stores.%s: %w", sc.Name, err)
		}
		fmt.Fprintf(w, "stores.%s: schema at version %d\n", sc.Name, pgstore.SchemaVersion)
	}
	if n == 0 {
		return fmt.Errorf("%s: no store with engine = \"postgres\"", path)
	}
	return nil
}

func check(path string, w io.Writer) error {
	path, err := configPath(path)
	if err != nil {
		return err
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := reg.LoadConfig(path); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: OK\n\n", path)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tENGINE\tOPTIONS")
	for _, s := range reg.Stores() {
		var opts []string
		for _, k := range sortedKeys(s.Options) {
			opts = append(opts, k+"="+s.Options[k])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Engine, dash(strings.Join(opts, " ")))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LIMITER\tSTORE\tALGORITHM\tRATE/S\tBURST\tLIMIT\tWINDOW\tMAX_CONCURRENT\tLEASE\tTIMEOUT\tON_STORE_ERROR")
	for _, l := range reg.Limiters() {
		r := l.Rule
		rate, burst, limit, window := "-", "-", "-", "-"
		if r.Algorithm == ratesync.SlidingWindow {
			limit, window = strconv.Itoa(r.Limit), r.Window.String()
		} else if r.RatePerSecond > 0 {
			rate, burst = strconv.FormatFloat(r.RatePerSecond, 'g', -1, 64), strconv.Itoa(r.Burst)
		}
		conc, lease := "-", "-"
		if r.MaxConcurrent > 0 {
			conc, lease = strconv.Itoa(r.MaxConcurrent), r.LeaseTTL.String()
		}
		timeout := "none"
		if r.Timeout > 0 {
			timeout = r.Timeout.String()
		}
		failure := string(r.OnStoreError)
		if r.OnStoreError == ratesync.Local {
			failure += "/" + strconv.Itoa(r.FallbackReplicas)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, r.Store, r.Algorithm, rate, burst, limit, window, conc, lease, timeout, failure)
	}
	tw.Flush()
	if reg.Section("http") != nil {
		h := httplimit.ConfigOf(reg)
		var nets []string
		for _, n := range h.TrustedProxyNetworks {
			nets = append(nets, n.String())
		}
		fmt.Fprintf(w, "\nhttp: trusted_proxy_networks=%s proxy_header=%s ipv4_prefix_length=%d ipv6_prefix_length=%d\n",
			dash(strings.Join(nets, ",")), h.ProxyHeader, h.IPv4PrefixLength, h.IPv6PrefixLength)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
