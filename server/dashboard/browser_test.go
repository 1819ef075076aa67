package dashboard_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/server/dashboard"
)

// chromium returns the browser the test drives: $RATESYNC_CHROMIUM, else
// /usr/bin/chromium (Debian's package, which .ci/run installs). Without
// it the test skips, or fails under RATESYNC_TEST_REQUIRE_SERVICES=1.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("RATESYNC_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		if testenv.Required() {
			t.Fatalf("no browser for the dashboard test: %v (RATESYNC_TEST_REQUIRE_SERVICES=1)", err)
		}
		t.Skipf("no browser for the dashboard test: %v (apt-get install chromium, or set RATESYNC_CHROMIUM)", err)
	}
	return path
}

// browser starts a headless Chromium with a fresh profile and returns the
// context of one tab; the browser stops when the test ends (or after
// limit, whichever comes first).
func browser(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	parent, cancelAll := context.WithTimeout(context.Background(), limit)
	alloc, cancelAlloc := chromedp.NewExecAllocator(parent,
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(t.TempDir()),
	)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
		cancelAll()
	})
	return tab
}

// watch records what the page writes to its console (calls, uncaught
// exceptions, browser log entries such as CSP violations and failed loads)
// and every URL it requests, until stop.
type watch struct {
	mu       sync.Mutex
	console  []chromedp.ConsoleMessage
	requests []string
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

func watchTab(tab context.Context) *watch {
	ctx, cancel := context.WithCancel(tab)
	w := &watch{cancel: cancel}
	console := chromedp.Console(ctx)
	requests := chromedp.Events(ctx, network.RequestWillBeSent)
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		for m, err := range console {
			if err != nil {
				return
			}
			w.mu.Lock()
			w.console = append(w.console, m)
			w.mu.Unlock()
		}
	}()
	go func() {
		defer w.wg.Done()
		for ev, err := range requests {
			if err != nil {
				return
			}
			w.mu.Lock()
			w.requests = append(w.requests, ev.Request.URL)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *watch) stop() {
	w.cancel()
	w.wg.Wait()
}

func run[T any](t *testing.T, tab context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(tab, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// poll waits, up to 20 s, for a JavaScript expression to be truthy,
// checking it 10 times a second.
func poll(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(tab, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("waiting until %s (%s): %v", what, expr, err)
	}
}

func eval[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	return run(t, tab, expr, chromedp.Evaluate[T](expr))
}

// screenshot writes the page as PNG to docs/img/name when
// RATESYNC_UPDATE_SCREENSHOT=1, else to the test's temporary directory.
func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	png := run(t, tab, "screenshot", chromedp.FullScreenshot(100))
	dir := t.TempDir()
	if os.Getenv("RATESYNC_UPDATE_SCREENSHOT") == "1" {
		dir = filepath.Join("..", "..", "docs", "img")
		must(t, os.MkdirAll(dir, 0o755))
	}
	path := filepath.Join(dir, name)
	must(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// TestBrowser loads the dashboard in headless Chromium: no console error,
// the configured limiters listed, the chart moving with traffic, the key
// inspector reading a state without consuming it, and no horizontal
// overflow on a 375 px wide phone.
func TestBrowser(t *testing.T) {
	start := time.Now()
	tab := browser(t, 2*time.Minute)

	reg := ratesync.NewRegistry()
	defer reg.Close()
	must(t, reg.ConfigureStore("main", "memory", nil))
	must(t, reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 0.01, Burst: 40}))
	must(t, reg.ConfigureLimiter("login", ratesync.Rule{Store: "main", Limit: 5, Window: time.Minute}))
	must(t, reg.ConfigureLimiter("exports", ratesync.Rule{Store: "main", MaxConcurrent: 2, RatePerSecond: 5, Burst: 5}))
	must(t, reg.ConfigureLimiter("search", ratesync.Rule{Store: "main", RatePerSecond: 0.01, Burst: 10, Shadow: true}))
	d := dashboard.New(reg)
	defer d.Close()
	srv := httptest.NewServer(d) // 127.0.0.1
	defer srv.Close()

	w := watchTab(tab)
	run(t, tab, "open the page", chromedp.Steps(
		chromedp.EmulateViewport(1200, 800),
		chromedp.Navigate(srv.URL+"/"),
	))

	t.Logf("%v: page loaded", time.Since(start).Round(time.Millisecond))

	// The configured limiters and the store are listed.
	poll(t, tab, "the limiters are listed", `document.querySelectorAll("#limiter-list .card").length === 4`)
	names := eval[[]string](t, tab, `[...document.querySelectorAll("#limiter-list .card h3")].map(e => e.textContent)`)
	if want := []string{"api", "exports", "login", "search"}; !slices.Equal(names, want) {
		t.Errorf("limiters listed: %q, want %q", names, want)
	}
	policies := eval[[]string](t, tab, `[...document.querySelectorAll("#limiter-list .policy")].map(e => e.textContent)`)
	if want := []string{"0.01/s, burst 40", "5/s, burst 5, 2 concurrent", "5 per 60 s window", "0.01/s, burst 10, shadow"}; !slices.Equal(policies, want) {
		t.Errorf("policies shown: %q, want %q", policies, want)
	}
	stores := eval[string](t, tab, `document.getElementById("store-list").textContent`)
	if !strings.Contains(stores, "main") || !strings.Contains(stores, "memory") || !strings.Contains(stores, "breaker closed") {
		t.Errorf("stores shown: %q, want main, memory, breaker closed", stores)
	}

	t.Logf("%v: limiters listed", time.Since(start).Round(time.Millisecond))

	// The chart has drawn nothing but zeros, then moves with traffic.
	before := eval[map[string]string](t, tab, `({...document.getElementById("chart").dataset})`)
	if before["admitted"] != "0" || before["denied"] != "0" {
		t.Fatalf("chart before any traffic: %v, want zeros", before)
	}
	const admitted, denied = 40 + 5 + 10, 20 + 5 // api, login, search; the shadow rule's 5 are shown apart
	for i := range 60 {
		reg.Try(ctx, "api")
		if i < 10 {
			reg.Try(ctx, "login")
		}
		if i < 15 {
			reg.Try(ctx, "search")
		}
	}
	poll(t, tab, "the chart shows the traffic",
		fmt.Sprintf(`(d => Number(d.admitted) >= %v && Number(d.denied) >= %v)(document.getElementById("chart").dataset)`, 0.95*admitted, 0.95*denied))
	after := eval[map[string]string](t, tab, `({...document.getElementById("chart").dataset})`)
	var a, dn float64
	fmt.Sscan(after["admitted"], &a)
	fmt.Sscan(after["denied"], &dn)
	// Rates are counts over the sampler's measured interval, about 1 s.
	if a > 1.05*admitted || dn > 1.05*denied {
		t.Errorf("chart after traffic: %v; want about %d admitted and %d denied", after, admitted, denied)
	}
	poll(t, tab, "the shadow legend appears", `!document.getElementById("legend-shadow").hidden`)
	poll(t, tab, "the api card counts", `document.querySelector('#limiter-list .card[data-name="api"] .t-denied').textContent === "20"`)

	t.Logf("%v: the chart moved", time.Since(start).Round(time.Millisecond))

	// One limiter's chart, and back to all.
	run(t, tab, "pick login", chromedp.Click(`#limiter-list .card[data-name="login"]`))
	poll(t, tab, "login's chart", `(d => Math.abs(Number(d.admitted) - 5) < 0.3 && Math.abs(Number(d.denied) - 5) < 0.3)(document.getElementById("chart").dataset)`)
	run(t, tab, "unpick login", chromedp.Click(`#limiter-list .card[data-name="login"]`))
	poll(t, tab, "all limiters' chart", `document.getElementById("series-limiter").value === "" && Number(document.getElementById("chart").dataset.admitted) > 50`)

	// A few more seconds of traffic, one wave per sample, for the picture.
	for i := range 4 {
		n := eval[int](t, tab, `Number(document.getElementById("chart").dataset.samples)`)
		for j := range 12 * (i + 1) {
			reg.Try(ctx, "api") // denied: api's own key is spent
			login, _ := reg.For("login", fmt.Sprint("user", j%6))
			login.Try(ctx)
			if search, _ := reg.For("search", fmt.Sprint("client", i)); j < 14 {
				search.Try(ctx)
			}
		}
		poll(t, tab, "the next sample", fmt.Sprintf(`Number(document.getElementById("chart").dataset.samples) > %d`, n))
	}
	t.Logf("%v: traffic sent", time.Since(start).Round(time.Millisecond))

	// The key inspector reads alice's state and consumes nothing.
	alice, _ := reg.For("api", "alice")
	alice.Try(ctx)
	run(t, tab, "inspect alice", chromedp.Steps(
		chromedp.SetValue(`#inspect-limiter`, "api"),
		chromedp.SendKeys(`#inspect-id`, "alice"),
		chromedp.Click(`#inspect-form button`),
	))
	poll(t, tab, "the inspector shows a state", `document.querySelector("#inspect-result .st-remaining") !== null`)
	shown := eval[string](t, tab, `document.getElementById("inspect-result").textContent`)
	if !strings.Contains(shown, "39 of 40") || !strings.Contains(shown, "would be admitted") || !strings.Contains(shown, "api:alice") {
		t.Errorf("inspector shows %q, want api:alice with 39 of 40 left, admitted", shown)
	}
	if st, err := alice.State(ctx); err != nil || st.Remaining != 39 {
		t.Errorf("alice after the inspection: %+v, %v; want 39 left (nothing consumed)", st, err)
	}
	screenshot(t, tab, "dashboard.png")

	// A phone: 375 px wide, nothing wider than the screen.
	run(t, tab, "phone viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	poll(t, tab, "the chart is redrawn for the phone", `(c => c.clientWidth < 375 && c.width === Math.round(c.clientWidth * devicePixelRatio))(document.getElementById("chart"))`)
	overflow := eval[struct {
		Scroll, Width float64
		Wide          []string
	}](t, tab, `(() => {
		const width = document.documentElement.clientWidth;
		const wide = [...document.querySelectorAll("body *")]
			.filter(e => e.getBoundingClientRect().right > width + 0.5)
			.map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : ""));
		return {scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 10)};
	})()`)
	if overflow.Width != 375 || overflow.Scroll > overflow.Width || len(overflow.Wide) > 0 {
		t.Errorf("at 375 px: page %v px wide in a %v px viewport; wider elements: %v", overflow.Scroll, overflow.Width, overflow.Wide)
	}
	screenshot(t, tab, "dashboard-phone.png")

	// The same page under /dashboard/, where its links are relative to
	// another base.
	run(t, tab, "open /dashboard/", chromedp.Navigate(srv.URL+"/dashboard/"))
	poll(t, tab, "the limiters are listed under /dashboard/", `document.querySelectorAll("#limiter-list .card").length === 4 && Number(document.getElementById("chart").dataset.samples) > 0`)

	// Nothing in the console, nothing fetched from elsewhere.
	w.stop()
	for _, m := range w.console {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			t.Errorf("console: %s (%s:%d)", m, m.URL, m.Line)
		}
	}
	origin, _ := url.Parse(srv.URL)
	if len(w.requests) < 4 {
		t.Errorf("requests seen: %q, want the page, its files and API calls", w.requests)
	}
	for _, r := range w.requests {
		u, err := url.Parse(r)
		if err != nil || u.Host != origin.Host {
			t.Errorf("the page fetched %q, outside its origin %s", r, origin.Host)
		}
	}
	t.Logf("%d requests, %d console messages; test took %v", len(w.requests), len(w.console), time.Since(start).Round(time.Millisecond))
}
