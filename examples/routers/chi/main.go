// Command chi limits a chi route per client IP.
package main

import (
	"log"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

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
	r := chi.NewRouter()
	// httplimit middleware is func(http.Handler) http.Handler: chi takes it as is.
	r.With(httplimit.New(api, httplimit.ClientIP())).Get("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello\n"))
	})
	return r, nil
}

func main() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	h, err := newHandler(reg)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", h))
}
