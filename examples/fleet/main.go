// Command fleet runs three instances of an HTTP service whose GET /api is
// limited to 100 requests per second per client by the rule "api", and a
// client that sends them as many requests as it can for a second, round
// robin. With REDIS_URL (or POSTGRES_URL) set, the instances are separate
// processes (this program again) that share the limit through the store:
// together they admit at most 100/s × the time + 1.
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/fleet
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/fleet
//	go run ./examples/fleet    # memory: three servers in one process, each counting alone
//
// On the memory store each instance counts alone (as separate processes
// would), so the fleet admits up to three times the limit: the example
// shows that too, and says why. KEY_PREFIX (Redis) and PG_SCHEMA
// (PostgreSQL) keep the example's state apart. The limits are in
// rate-sync.toml beside this file (embedded).
package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/examples/internal/storeenv"
	"github.com/rate-sync/ratesync-go/httplimit"
	_ "github.com/rate-sync/ratesync-go/pgstore"    // engine = "postgres"
	_ "github.com/rate-sync/ratesync-go/redisstore" // engine = "redis"
)

//go:embed rate-sync.toml
var config []byte

const (
	servers  = 3
	clients  = 6           // goroutines sending requests
	duration = time.Second // how long they send

	// serverEnv tells a process started by run that it is an instance: it
	// prints its address, serves until its stdin closes.
	serverEnv = "FLEET_EXAMPLE_SERVER"
)

func main() {
	if os.Getenv(serverEnv) != "" {
		if err := serveUntilEOF(); err != nil {
			fmt.Fprintln(os.Stderr, "instance:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// instance is one server of the fleet, with a registry (and so, on the
// memory store, counts) of its own.
type instance struct {
	reg *ratesync.Registry
	srv *http.Server
	ln  net.Listener
}

func start() (*instance, error) {
	reg := ratesync.NewRegistry()
	if err := storeenv.Apply(reg, "examples/fleet/rate-sync.toml", config); err != nil {
		reg.Close()
		return nil, err
	}
	api, err := reg.Get("api")
	if err != nil {
		reg.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api", httplimit.New(api, httplimit.ClientIP())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `{"ok":true}`)
	})))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		reg.Close()
		return nil, err
	}
	in := &instance{reg: reg, srv: &http.Server{Handler: mux}, ln: ln}
	go in.srv.Serve(ln)
	return in, nil
}

func (in *instance) url() string { return "http://" + in.ln.Addr().String() }

func (in *instance) stop() {
	in.srv.Shutdown(context.Background())
	in.reg.Close()
}

// serveUntilEOF is an instance process: it prints "listening URL" and
// serves until its stdin closes.
func serveUntilEOF() error {
	in, err := start()
	if err != nil {
		return err
	}
	defer in.stop()
	fmt.Printf("listening %s\n", in.url())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/fleet/rate-sync.toml", config); err != nil {
		return err
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())

	var urls []string
	if !storeenv.Shared() {
		fmt.Fprintf(w, "memory store: the %d instances run in this process, each with its own registry, as separate servers would\n", servers)
		for range servers {
			in, err := start()
			if err != nil {
				return err
			}
			defer in.stop()
			urls = append(urls, in.url())
		}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		var pids []int
		for i := 1; i <= servers; i++ {
			cmd := exec.CommandContext(ctx, exe)
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", serverEnv, i))
			cmd.Stderr = os.Stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				return err
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			if err := cmd.Start(); err != nil {
				return err
			}
			defer func() { stdin.Close(); cmd.Wait() }() // closing stdin stops the instance
			line, err := bufio.NewReader(stdout).ReadString('\n')
			url, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
			if err != nil || !ok {
				return fmt.Errorf("instance %d did not start: %q %v", i, line, err)
			}
			urls = append(urls, url)
			pids = append(pids, cmd.Process.Pid)
		}
		fmt.Fprintf(w, "started %d instances: this program again, pids %v\n", servers, pids)
	}

	// The client: as many requests as it can for a second, round robin.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var (
		mu         sync.Mutex
		ok, denied = make([]int, servers), make([]int, servers)
		lastOK     time.Time
		errs       []error
		wg         sync.WaitGroup
	)
	first := time.Now()
	until := first.Add(duration)
	for c := range clients {
		wg.Go(func() {
			for n := c; time.Now().Before(until); n++ {
				i := n % servers
				resp, err := client.Get(urls[i] + "/api")
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				switch resp.StatusCode {
				case http.StatusOK:
					ok[i]++
					lastOK = time.Now()
				case http.StatusTooManyRequests:
					denied[i]++
				default:
					errs = append(errs, fmt.Errorf("instance %d answered %s", i+1, resp.Status))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Every admission happened after the first request was sent and
	// before the last 200 came back.
	span := lastOK.Sub(first)
	allowed := 100*span.Seconds() + 1
	fmt.Fprintf(w, "%d clients, round robin over %d instances for %v, limit api = 100/s per client:\n", clients, servers, duration)
	total := 0
	for i := range servers {
		fmt.Fprintf(w, "  instance %d: %4d admitted (200), %5d denied (429)\n", i+1, ok[i], denied[i])
		total += ok[i]
	}
	fmt.Fprintf(w, "fleet: %d admitted in %.3fs; one shared limit allows at most 100/s × %.3fs + 1 = %.1f\n", total, span.Seconds(), span.Seconds(), allowed)
	if !storeenv.Shared() {
		fmt.Fprintf(w, "(in memory each instance counts alone, so the fleet may admit up to %d × %.1f: share the store with REDIS_URL)\n", servers, allowed)
	}
	return nil
}
