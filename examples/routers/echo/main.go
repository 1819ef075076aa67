// Command echo limits an echo route per client IP.
package main

import (
	"log"
	"net/http"

	"github.com/labstack/echo/v4"

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
	e := echo.New()
	e.HideBanner = true
	// echo.WrapMiddleware adapts func(http.Handler) http.Handler.
	e.GET("/hello", func(c echo.Context) error {
		return c.String(http.StatusOK, "hello\n")
	}, echo.WrapMiddleware(httplimit.New(api, httplimit.ClientIP())))
	return e, nil
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
