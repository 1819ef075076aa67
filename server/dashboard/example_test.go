package dashboard_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/server/dashboard"
)

// The dashboard mounted at the root and under /dashboard/, beside other
// handlers of the same mux.
func Example() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 10, Burst: 20})

	d := dashboard.New(reg)
	defer d.Close()
	mux := http.NewServeMux()
	mux.Handle("/", d)
	mux.Handle("/dashboard/", d)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

	srv := httptest.NewServer(mux)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/dashboard/api/state?limiter=api&id=alice")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	var st struct {
		Key       string
		Allowed   bool
		Remaining int
		Limit     int
	}
	json.NewDecoder(res.Body).Decode(&st)
	fmt.Println(res.Status, res.Header.Get("Content-Type"))
	fmt.Printf("%s: allowed %v, %d of %d left\n", st.Key, st.Allowed, st.Remaining, st.Limit)
	// Output:
	// 200 OK application/json
	// api:alice: allowed true, 20 of 20 left
}
