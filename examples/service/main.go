// Command service is a small HTTP service with the limits of a typical
// API: a token bucket per client on GET /items, two concurrent exports per
// client on GET /export, a login limited per IP and per account on POST
// /login, and Prometheus metrics on /metrics.
//
//	go run ./examples/service                  # memory store, 127.0.0.1:8080
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/service
//	curl -i localhost:8080/items
//
// The limits are in rate-sync.toml beside this file (embedded), or in the
// file RATE_SYNC_CONFIG names.
package main

import (
	_ "embed"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
	"github.com/rate-sync/ratesync-go/ratesyncprom"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

//go:embed rate-sync.toml
var defaultConfig []byte

func main() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	h, err := newService(reg)
	if err != nil {
		log.Fatal(err)
	}
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	log.Printf("listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, h))
}

// newService loads the configuration into reg and returns the service.
func newService(reg *ratesync.Registry) (http.Handler, error) {
	cfg, err := ratesync.ParseConfig("examples/service/rate-sync.toml", defaultConfig)
	if path := os.Getenv(ratesync.ConfigEnv); path != "" {
		var data []byte
		if data, err = os.ReadFile(path); err == nil {
			cfg, err = ratesync.ParseConfig(path, data)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := reg.ApplyConfig(cfg); err != nil {
		return nil, err
	}
	if url := os.Getenv("REDIS_URL"); url != "" {
		prefix := os.Getenv("KEY_PREFIX")
		if prefix == "" {
			prefix = "service"
		}
		if err := reg.ConfigureStore("main", "redis", map[string]any{"url": url, "key_prefix": prefix}); err != nil {
			return nil, err
		}
	}
	items, err := reg.Get("items")
	if err != nil {
		return nil, err
	}
	export, err := reg.Get("export")
	if err != nil {
		return nil, err
	}
	perIP := httplimit.ClientIP(httplimit.FromConfig(reg))
	login, err := httplimit.Composite(reg, ratesync.AllMustPass, []httplimit.Part{
		{Name: "by_ip", Limiter: "login_ip", Key: perIP},
		{Name: "by_account", Limiter: "login_account", Key: httplimit.Hashed(httplimit.FormField("email"))},
	})
	if err != nil {
		return nil, err
	}
	promReg := prometheus.NewRegistry()
	if err := ratesyncprom.Register(promReg, reg); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle("GET /items", httplimit.New(items, perIP, httplimit.LegacyHeaders())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `["apple","pear"]`)
	})))
	mux.Handle("GET /export", httplimit.New(export, perIP)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil {
			ms = 500
		}
		time.Sleep(time.Duration(ms) * time.Millisecond) // the export's work
		fmt.Fprintln(w, "exported")
	})))
	mux.Handle("POST /login", login(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "checking the password of", r.FormValue("email"))
	})))
	mux.Handle("GET /metrics", ratesyncprom.Handler(promReg))
	return mux, nil
}
