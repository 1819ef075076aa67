// Package dashboard serves the live dashboard of a ratesync.Registry: every
// limiter with its policy and store, admitted and denied requests per second
// over the last minutes as a chart, the circuit breaker state of each store,
// and a key inspector that reads a limiter's state for one identifier
// without consuming anything.
//
// The page, its script and its style are embedded in the binary and fetch
// nothing from elsewhere: a Content-Security-Policy header forbids every
// other origin. Mount the handler where it sees the full request path, at
// the root or under "/dashboard/":
//
//	d := dashboard.New(reg)
//	defer d.Close()
//	mux.Handle("/", d)           // the page
//	mux.Handle("/dashboard/", d) // the page again, its files and its JSON API
//
// The handler answers
//
//	GET /, /dashboard/            the page
//	GET /dashboard/static/...     its files
//	GET /dashboard/api/overview   limiters, stores and the latest rates
//	GET /dashboard/api/series     the rates of the last minutes (?limiter=NAME for one)
//	GET /dashboard/api/state      ?limiter=NAME[&id=IDENTIFIER]: State, never consuming
//
// and RFC 9457 problems for errors. The data comes from one sampler
// goroutine that reads the registry's counters (Registry.Limiters,
// Registry.Stores) once per interval into a bounded ring; a decision costs
// nothing more with a dashboard than without.
package dashboard

import (
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// Defaults of the options.
const (
	// DefaultInterval is how often the sampler reads the registry.
	DefaultInterval = time.Second
	// DefaultHistory is how far back the chart goes.
	DefaultHistory = 5 * time.Minute
	// DefaultStateTimeout bounds one key inspection's call to the store.
	DefaultStateTimeout = time.Second
	// DefaultMaxInspections is how many key inspections may wait for the
	// store at once.
	DefaultMaxInspections = 8
)

// MaxIdentifierLength is the longest identifier, in bytes, the key
// inspector accepts; a longer one is answered 400 without calling the
// store. Limiter names are bounded the same way.
const MaxIdentifierLength = 512

// maxSamples bounds the ring whatever the options say.
const maxSamples = 24 * 60 * 60

// ContentSecurityPolicy is the Content-Security-Policy of every response:
// the page may load scripts, styles, images and data from its own origin
// only, and may not be framed.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var staticFiles embed.FS

//go:embed index.html
var indexHTML string

var indexTemplate = template.Must(template.New("index").Parse(indexHTML))

// Option changes a Dashboard.
type Option func(*config)

type config struct {
	interval       time.Duration
	history        time.Duration
	stateTimeout   time.Duration
	maxInspections int
}

// WithInterval sets how often the sampler reads the registry's counters,
// the resolution of the chart (default DefaultInterval). Zero keeps the
// default.
func WithInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.interval = d
		}
	}
}

// WithHistory sets how far back the chart goes (default DefaultHistory):
// the ring keeps history/interval samples, at most one day's worth at one
// per second. Zero keeps the default.
func WithHistory(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.history = d
		}
	}
}

// WithStateTimeout bounds the store call of one key inspection (default
// DefaultStateTimeout); the request's own context still applies. Zero keeps
// the default.
func WithStateTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.stateTimeout = d
		}
	}
}

// WithMaxInspections sets how many key inspections may wait for the store
// at once (default DefaultMaxInspections); more are answered 429 at once,
// so that the page cannot be used to load the store. Zero keeps the
// default.
func WithMaxInspections(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxInspections = n
		}
	}
}

// Dashboard is the dashboard of one registry: an http.Handler and the
// sampler goroutine that feeds it. Create it with New and stop its sampler
// with Close. It is safe for concurrent use.
type Dashboard struct {
	reg      *ratesync.Registry
	cfg      config
	static   http.Handler
	inspects chan struct{} // one token per inspection in flight

	mu       sync.Mutex
	ring     *ring
	breakers map[string]breakerSeen // as the sampler last saw them

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New returns the dashboard of reg and starts its sampler, which reads
// reg's counters once per interval until Close.
func New(reg *ratesync.Registry, opts ...Option) *Dashboard {
	cfg := config{interval: DefaultInterval, history: DefaultHistory, stateTimeout: DefaultStateTimeout, maxInspections: DefaultMaxInspections}
	for _, o := range opts {
		o(&cfg)
	}
	n := int(min(cfg.history/cfg.interval, maxSamples))
	sub, _ := fs.Sub(staticFiles, "static")
	d := &Dashboard{
		reg:      reg,
		cfg:      cfg,
		static:   http.StripPrefix("/dashboard/static/", http.FileServerFS(sub)),
		inspects: make(chan struct{}, cfg.maxInspections),
		ring:     newRing(max(n, 2)),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	s := newSampler(reg)
	_, d.breakers = s.read(time.Now()) // the baseline: the first sample counts from here
	go d.run(s)
	return d
}

// Close stops the sampler and waits for it. The handler keeps serving the
// samples taken until then. Close is idempotent and returns nil.
func (d *Dashboard) Close() error {
	d.closeOnce.Do(func() { close(d.stop) })
	<-d.done
	return nil
}

func (d *Dashboard) run(s *sampler) {
	defer close(d.done)
	t := time.NewTicker(d.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case now := <-t.C:
			smp, breakers := s.read(now)
			d.mu.Lock()
			d.ring.add(smp)
			d.breakers = breakers
			d.mu.Unlock()
		}
	}
}

// ServeHTTP serves the page, its files and its JSON API (see the package
// documentation).
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		problem(w, http.StatusMethodNotAllowed, "The dashboard only answers GET and HEAD.")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/" || p == "/dashboard":
		d.index(w, "dashboard/")
	case p == "/dashboard/":
		d.index(w, "")
	case strings.HasPrefix(p, "/dashboard/static/") && !strings.HasSuffix(p, "/"):
		h.Set("Cache-Control", "no-cache")
		d.static.ServeHTTP(w, r)
	case p == "/dashboard/api/overview":
		d.overview(w, r)
	case p == "/dashboard/api/series":
		d.series(w, r)
	case p == "/dashboard/api/state":
		d.state(w, r)
	default:
		problem(w, http.StatusNotFound, "No such page.")
	}
}

// index writes the page; base leads from the page's URL to /dashboard/, so
// that the page also works under a prefix stripped by http.StripPrefix.
func (d *Dashboard) index(w http.ResponseWriter, base string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	indexTemplate.Execute(w, struct{ Base string }{base})
}

func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Cache-Control", "no-store")
	httplimit.WriteProblem(w, httplimit.Problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	})
}
