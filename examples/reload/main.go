// Command reload shows how a running program changes its limits without a
// deploy: it follows its rate-sync.toml (ratesync.Registry.WatchConfig),
// raises a limit with the usage already counted kept, gives one tenant its
// own limit (overrides), measures a new limit before enforcing it (shadow
// mode), and survives an invalid edit.
//
//	go run ./examples/reload
//
// It writes its configuration to a temporary directory and edits it as an
// operator would; the memory store keeps the counts across the reloads
// (Redis and PostgreSQL stores do too).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rate-sync/ratesync-go"
)

const config = `[stores.main]
engine = "memory"

[limiters.api]               # per tenant, a minute
store = "main"
algorithm = "sliding_window"
limit = LIMIT
window_seconds = 60

[limiters.api.overrides]     # one tenant with a limit of its own
"tenant:acme" = { limit = 10 }

[limiters.search]            # a new limit, measured before it is enforced
store = "main"
algorithm = "sliding_window"
limit = 2
window_seconds = 60
shadow = true
`

func main() {
	dir, err := os.MkdirTemp("", "reload-example")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	if err := run(context.Background(), os.Stdout, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// lockedWriter serializes the writes of the program and of the
// registry's logger, which logs from WatchConfig's goroutine.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func run(ctx context.Context, out io.Writer, dir string) error {
	w := &lockedWriter{w: out}
	path := filepath.Join(dir, "rate-sync.toml")
	write := func(text string) error {
		tmp := path + ".tmp" // written whole, then renamed into place, as editors do
		if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, path)
	}
	if err := write(strings.Replace(config, "LIMIT", "3", 1)); err != nil {
		return err
	}
	// Rejected files are logged; here the log goes to the output.
	reg := ratesync.NewRegistry(ratesync.WithLogger(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))))
	defer reg.Close()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	watching := make(chan error, 1)
	go func() { watching <- reg.WatchConfig(ctx, path) }()
	start := time.Now()
	// waitReloads waits until the registry has applied (or rejected) n
	// versions of the file.
	waitReloads := func(applied, rejected int64) error {
		deadline := time.After(10 * time.Second)
		for {
			if s := reg.Reloads(); s.Succeeded >= applied && s.Failed >= rejected {
				return nil
			}
			select {
			case err := <-watching:
				return fmt.Errorf("watch config: %v", err)
			case <-deadline:
				return fmt.Errorf("the file was not reloaded: %+v", reg.Reloads())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	if err := waitReloads(1, 0); err != nil {
		return err
	}
	try := func(label, limiter, id string, n int) error {
		l, err := reg.For(limiter, id)
		if err != nil {
			return err
		}
		admitted, shadowed := 0, 0
		var last ratesync.Decision
		for range n {
			if last, err = l.Try(ctx); err != nil {
				return err
			}
			if last.Allowed {
				admitted++
			}
			if last.Shadow {
				shadowed++
			}
		}
		fmt.Fprintf(w, "  +%.3fs  %-34s %d of %d admitted (limit %d", time.Since(start).Seconds(), label, admitted, n, last.Limit)
		if shadowed > 0 {
			fmt.Fprintf(w, ", %d only because the rule is in shadow mode", shadowed)
		}
		fmt.Fprintln(w, ")")
		return nil
	}

	fmt.Fprintln(w, "limit = 3 per tenant; tenant:acme has an override of 10; search is in shadow mode")
	if err := try("api, tenant:alice", "api", "tenant:alice", 5); err != nil {
		return err
	}
	if err := try("api, tenant:acme (override)", "api", "tenant:acme", 12); err != nil {
		return err
	}
	if err := try("search, tenant:alice (shadow)", "search", "tenant:alice", 5); err != nil {
		return err
	}
	search, _ := reg.Get("search")
	m := search.Metrics()
	fmt.Fprintf(w, "  search would have denied %d (Metrics.Denials), admitted them anyway (ShadowDenials %d)\n", m.Denials, m.ShadowDenials)

	fmt.Fprintln(w, "\nthe operator raises the limit to 5 and saves the file:")
	if err := write(strings.Replace(config, "LIMIT", "5", 1)); err != nil {
		return err
	}
	if err := waitReloads(2, 0); err != nil {
		return err
	}
	if err := try("api, tenant:alice (3 already used)", "api", "tenant:alice", 5); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nthe operator saves a mistake (limit = 0):")
	if err := write(strings.Replace(config, "LIMIT", "0", 1)); err != nil {
		return err
	}
	if err := waitReloads(2, 1); err != nil {
		return err
	}
	if err := try("api, tenant:bob (limit 5 stays)", "api", "tenant:bob", 7); err != nil {
		return err
	}
	s := reg.Reloads()
	fmt.Fprintf(w, "\nreloads applied %d, rejected %d; last error: %v\n", s.Succeeded, s.Failed, s.LastError)
	stop()
	return <-watching
}
