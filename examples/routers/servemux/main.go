// Command servemux limits an http.ServeMux route per client IP.
package main

import (
	"log"
	"net/http"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// newHandler returns the app: GET /hello, at most 2 requests per second
// per client IP (burst 2).
func newHandler(reg *ratesync.Registry) (http.Handler, error) {
	if err := reg.ConfigureStore("mem", "memory", nil); err != nil {
		return nil, err
	}
	if err := reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 2, Burst: 2}); err != nil {
		return nil, err
	}
	api, err := reg.Get("api")
	if err != nil {
		return nil, err
	}
	perIP := httplimit.New(api, httplimit.ClientIP(httplimit.FromConfig(reg)))
	mux := http.NewServeMux()
	mux.Handle("GET /hello", perIP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello\n"))
	})))
	return mux, nil
}

func main() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	h, err := newHandler(reg)
	if err != nil {
		log.Fatal(err)
	}
	log.Println("listening on 127.0.0.1:8080")
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", h))
}
