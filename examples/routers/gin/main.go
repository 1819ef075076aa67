// Command gin limits a gin route per client IP.
package main

import (
	"log"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// limit adapts net/http middleware to gin: the chain goes on only when the
// middleware calls the next handler.
func limit(mw func(http.Handler) http.Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		passed := false
		mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			passed = true
			c.Request = r
			c.Next()
		})).ServeHTTP(c.Writer, c.Request)
		if !passed {
			c.Abort()
		}
	}
}

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
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/hello", limit(httplimit.New(api, httplimit.ClientIP())), func(c *gin.Context) {
		c.String(http.StatusOK, "hello\n")
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
