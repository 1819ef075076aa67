// Command ratesync works with rate-sync configuration files and the
// limiters they describe.
//
// Install it with:
//
//	go install github.com/rate-sync/ratesync-go/cmd/ratesync@latest
//
// Usage:
//
//	ratesync check [FILE]
//	ratesync state [--json] FILE LIMITER [ID...]
//	ratesync reset [--json] FILE LIMITER [ID...]
//	ratesync migrate [--print] [FILE]
//	ratesync serve [flags] [FILE]
//
// check validates a configuration (FILE, or the file the library would load:
// $RATE_SYNC_CONFIG, ./rate-sync.toml, ./config/rate-sync.toml), opens its
// stores without connecting, and prints its stores and limiters as a table
// with secrets redacted. It exits with status 1 and the error when the
// configuration is invalid.
//
// state prints what a limiter's store holds for one key, without consuming
// anything: for each policy, the limit, what remains, what is in use (for
// max_concurrent, the leases held), the time until a request could pass and
// until the quota is full again. The key is the limiter's, or its per-key
// limiter's for the identifiers given (ID... as in ratesync.For; an
// httplimit.ClientIP key is the address, or the /64 of an IPv6 client).
// reset removes that key's state (all its policies). Both exit with status
// 1 when the store cannot answer; --json prints one JSON object.
//
// serve runs the rate limit service (Envoy RLS v3 over gRPC, an HTTP JSON
// API, metrics and health); see docs/serve.md and `ratesync serve --help`.
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
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
	"github.com/rate-sync/ratesync-go/pgstore"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

const usage = `usage: ratesync check [FILE]
       ratesync state [--json] FILE LIMITER [ID...]
       ratesync reset [--json] FILE LIMITER [ID...]
       ratesync migrate [--print] [FILE]
       ratesync serve [flags] [FILE]

  check     validate a configuration file and print its stores and limiters
  state     print a limiter's state for a key, without consuming anything
            (the limiter's own key, or its per-key limiter's for ID...)
  reset     remove a limiter's state for a key
  migrate   create or upgrade the schema of its PostgreSQL stores
            (--print: print the SQL instead of running it)
  serve     serve the limiters to Envoy (gRPC) and over HTTP (ratesync serve --help)

  FILE defaults to $RATE_SYNC_CONFIG, ./rate-sync.toml, ./config/rate-sync.toml
`

// opTimeout bounds state and reset, so that an unreachable store answers
// with an error instead of a hang.
const opTimeout = 5 * time.Second

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
	cmd, rest := args[0], args[1:]
	if cmd == "serve" {
		return runServe(rest, stderr)
	}
	flags := map[string]bool{}
	var pos []string
	for _, a := range rest {
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags[strings.TrimLeft(a, "-")] = true
			continue
		}
		pos = append(pos, a)
	}
	known := map[string][]string{"check": nil, "migrate": {"print"}, "state": {"json"}, "reset": {"json"}}
	allowed, ok := known[cmd]
	if !ok {
		fmt.Fprintf(stderr, "ratesync: unknown command %q\n%s", cmd, usage)
		return 2
	}
	for f := range flags {
		if !slices.Contains(allowed, f) {
			fmt.Fprintf(stderr, "ratesync %s: unknown flag --%s\n%s", cmd, f, usage)
			return 2
		}
	}
	var err error
	switch cmd {
	case "check", "migrate":
		if len(pos) > 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		path := "" // empty: the default search order (see usage)
		if len(pos) == 1 {
			path = pos[0]
		}
		if cmd == "check" {
			err = check(path, stdout)
		} else {
			err = migrate(path, flags["print"], stdout)
		}
	case "state", "reset":
		if len(pos) < 2 {
			fmt.Fprintf(stderr, "ratesync %s: name the file and the limiter\n%s", cmd, usage)
			return 2
		}
		err = keyCommand(cmd, pos[0], pos[1], pos[2:], flags["json"], stdout, stderr)
	}
	if err != nil {
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
			schema, _ := sc.String("schema_name", pgstore.DefaultSchema)
			table, _ := sc.String("table_name", pgstore.DefaultTable)
			fmt.Fprintf(w, "-- stores.%s: ratesync PostgreSQL schema, version %d, in schema %q, table %q\n%s\n",
				sc.Name, pgstore.SchemaVersion, schema, table, withoutTemplateHeader(s.MigrationSQL()))
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

// withoutTemplateHeader drops the first comment paragraph of the SQL,
// which documents the template's placeholders (filled in, it reads
// half-written); the rest of the comments stay.
func withoutTemplateHeader(sql string) string {
	lines := strings.SplitAfter(sql, "\n")
	i := 0
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i < len(lines) && strings.HasPrefix(lines[i], "-- ratesync PostgreSQL schema") {
		for i < len(lines) && strings.HasPrefix(lines[i], "--") {
			i++
		}
	}
	return strings.Join(lines[i:], "")
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
		algorithm, rate, burst, limit, window := r.Algorithm.String(), "-", "-", "-", "-"
		if r.RatePerSecond == 0 && r.Algorithm != ratesync.SlidingWindow {
			algorithm = "-" // max_concurrent alone
		}
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, r.Store, algorithm, rate, burst, limit, window, conc, lease, timeout, failure)
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
