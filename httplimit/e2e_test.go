package httplimit_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/redisstore"
)

const (
	e2eKeys     = 5
	e2eLimit    = 100
	e2ePerKey   = 400
	e2eRoutines = 64
)

// TestEndToEnd starts a real server process (this test binary in server
// mode), loads it from 64 client goroutines over real TCP with 400
// requests on each of 5 keys, and checks that each key got exactly its
// limit of 200s and the rest 429s, on the memory and the Redis store.
func TestEndToEnd(t *testing.T) {
	if os.Getenv("HTTPLIMIT_E2E_SERVER") != "" {
		t.Skip("server process")
	}
	stores := map[string]string{"memory": ""}
	if os.Getenv("RATESYNC_TEST_REDIS_URL") != "" || testenv.Required() {
		stores["redis"] = testenv.RedisURL(t)
	}
	for engine, url := range stores {
		t.Run(engine, func(t *testing.T) {
			var b [6]byte
			rand.Read(b[:])
			prefix := "e2e-" + hex.EncodeToString(b[:])
			cmd := exec.Command(os.Args[0], "-test.run=^TestE2EServer$", "-test.count=1")
			cmd.Env = append(os.Environ(), "HTTPLIMIT_E2E_SERVER="+engine, "HTTPLIMIT_E2E_REDIS="+url, "HTTPLIMIT_E2E_PREFIX="+prefix)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cmd.Process.Kill() // our own child, started above
				cmd.Wait()
				if url != "" { // the killed server could not clean up its keys
					o, _ := redis.ParseURL(url)
					c := redis.NewClient(o)
					if s, err := redisstore.New(c, redisstore.WithKeyPrefix(prefix)); err == nil {
						s.ResetAll(context.Background())
						s.Close()
					}
					c.Close()
				}
			}()
			sc := bufio.NewScanner(stdout)
			addr := ""
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
					addr = a
					break
				}
			}
			if addr == "" {
				t.Fatal("the server process did not start")
			}
			go func() {
				for sc.Scan() {
				}
			}()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: e2eRoutines}}
			var admitted, denied [e2eKeys]atomic.Int64
			var next atomic.Int64
			var wg sync.WaitGroup
			var failure atomic.Value
			for range e2eRoutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= e2eKeys*e2ePerKey {
							return
						}
						k := int(i % e2eKeys)
						req, _ := http.NewRequest("GET", "http://"+addr+"/work", nil)
						req.Header.Set("X-Api-Key", fmt.Sprintf("key-%d", k))
						resp, err := client.Do(req)
						if err != nil {
							failure.CompareAndSwap(nil, err)
							return
						}
						resp.Body.Close()
						switch resp.StatusCode {
						case 200:
							admitted[k].Add(1)
						case 429:
							denied[k].Add(1)
						default:
							failure.CompareAndSwap(nil, fmt.Errorf("status %d", resp.StatusCode))
						}
					}
				}()
			}
			wg.Wait()
			if err, _ := failure.Load().(error); err != nil {
				t.Fatal(err)
			}
			for k := range e2eKeys {
				t.Logf("key-%d: %d admitted, %d denied", k, admitted[k].Load(), denied[k].Load())
				if admitted[k].Load() != e2eLimit || denied[k].Load() != e2ePerKey-e2eLimit {
					t.Errorf("key-%d: %d admitted and %d denied, want exactly %d and %d", k, admitted[k].Load(), denied[k].Load(), e2eLimit, e2ePerKey-e2eLimit)
				}
			}
		})
	}
}

// TestE2EServer is the server process of TestEndToEnd.
func TestE2EServer(t *testing.T) {
	engine := os.Getenv("HTTPLIMIT_E2E_SERVER")
	if engine == "" {
		t.Skip("runs only as a child of TestEndToEnd")
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	switch engine {
	case "memory":
		if err := reg.ConfigureStore("s", "memory", nil); err != nil {
			t.Fatal(err)
		}
	case "redis":
		o, err := redis.ParseURL(os.Getenv("HTTPLIMIT_E2E_REDIS"))
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(o)
		defer c.Close()
		s, err := redisstore.New(c, redisstore.WithKeyPrefix(os.Getenv("HTTPLIMIT_E2E_PREFIX")))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { s.ResetAll(context.Background()); s.Close() }()
		// Exactness is about the store: a call slowed by a loaded machine
		// must not be answered by the in-process fallback, which admits on
		// its own (101 to 200 admitted per key, with the defaults).
		reg.AddStore("s", s, ratesync.WithCallTimeout(30*time.Second))
	}
	if err := reg.ConfigureLimiter("api", ratesync.Rule{Store: "s", Algorithm: ratesync.SlidingWindow, Limit: e2eLimit, Window: time.Hour, OnStoreError: ratesync.Deny}); err != nil {
		t.Fatal(err)
	}
	api, _ := reg.Get("api")
	mw := httplimit.New(api, httplimit.Header("X-Api-Key"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	srv := &http.Server{Handler: mw(ok)}
	// Serves until the parent kills the process; bounded by the test timeout.
	srv.Serve(ln)
}
