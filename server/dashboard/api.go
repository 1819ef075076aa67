package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rate-sync/ratesync-go"
)

type rates struct {
	Admitted float64 `json:"admitted"`
	Denied   float64 `json:"denied"`
	Shadow   float64 `json:"shadow"`
	Errors   float64 `json:"errors"`
}

func perSecond(c counts, dt time.Duration) rates {
	if dt <= 0 {
		return rates{}
	}
	s := dt.Seconds()
	r := func(n int64) float64 { return math.Round(float64(n)/s*1000) / 1000 }
	return rates{r(c.admitted), r(c.denied), r(c.shadow), r(c.errors)}
}

// totalsJSON are a limiter's counters in this process since it was
// configured. Denied counts enforced denials: a shadow rule's would-be
// denials are in ShadowDenials only.
type totalsJSON struct {
	Admitted      int64 `json:"admitted"`
	Denied        int64 `json:"denied"`
	Timeouts      int64 `json:"timeouts"`
	ShadowDenials int64 `json:"shadow_denials"`
	Errors        int64 `json:"errors"`
	Fallbacks     int64 `json:"fallbacks"`
	Waiting       int64 `json:"waiting"`
	Concurrent    int64 `json:"concurrent"`
}

type limiterJSON struct {
	Name          string     `json:"name"`
	Store         string     `json:"store"`
	Engine        string     `json:"engine"`
	Policy        string     `json:"policy"`
	Algorithm     string     `json:"algorithm,omitempty"`
	RatePerSecond float64    `json:"rate_per_second,omitempty"`
	Burst         int        `json:"burst,omitempty"`
	Limit         int        `json:"limit,omitempty"`
	WindowSeconds float64    `json:"window_seconds,omitempty"`
	MaxConcurrent int        `json:"max_concurrent,omitempty"`
	Shadow        bool       `json:"shadow"`
	OnStoreError  string     `json:"on_store_error"`
	Rate          rates      `json:"rate"` // over the last interval, per second
	Totals        totalsJSON `json:"totals"`
}

type storeJSON struct {
	Name    string `json:"name"`
	Engine  string `json:"engine"`
	Breaker string `json:"breaker"`
	// Since is when the sampler first saw the breaker in this state (Unix
	// milliseconds), 0 when it has not yet.
	Since int64 `json:"since"`
}

type overviewJSON struct {
	Now             int64         `json:"now"`
	IntervalSeconds float64       `json:"interval_seconds"`
	HistorySeconds  float64       `json:"history_seconds"`
	Limiters        []limiterJSON `json:"limiters"`
	Stores          []storeJSON   `json:"stores"`
}

// policy describes a rule in a few words.
func policy(r ratesync.Rule) string {
	var parts []string
	switch {
	case r.Algorithm == ratesync.SlidingWindow:
		parts = append(parts, strconv.Itoa(r.Limit)+" per "+seconds(r.Window)+" window")
	case r.RatePerSecond > 0:
		parts = append(parts, strconv.FormatFloat(r.RatePerSecond, 'g', 6, 64)+"/s, burst "+strconv.Itoa(max(r.Burst, 1)))
	}
	if r.MaxConcurrent > 0 {
		parts = append(parts, strconv.Itoa(r.MaxConcurrent)+" concurrent")
	}
	if r.Shadow {
		parts = append(parts, "shadow")
	}
	return strings.Join(parts, ", ")
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'g', 6, 64) + " s"
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request) {
	infos := d.reg.Limiters()
	stores := d.reg.Stores()
	engines := make(map[string]string, len(stores))
	out := overviewJSON{
		Now:             time.Now().UnixMilli(),
		IntervalSeconds: d.cfg.interval.Seconds(),
		HistorySeconds:  d.cfg.history.Seconds(),
		Limiters:        make([]limiterJSON, 0, len(infos)),
		Stores:          make([]storeJSON, 0, len(stores)),
	}
	d.mu.Lock()
	last := d.ring.last()
	for _, st := range stores {
		engines[st.Name] = st.Engine
		sj := storeJSON{Name: st.Name, Engine: st.Engine, Breaker: string(st.Breaker)}
		if b, ok := d.breakers[st.Name]; ok && b.state == st.Breaker {
			sj.Since = b.since.UnixMilli()
		}
		out.Stores = append(out.Stores, sj)
	}
	for _, li := range infos {
		ru, m := li.Rule, li.Metrics
		lj := limiterJSON{
			Name:          li.Name,
			Store:         ru.Store,
			Engine:        engines[ru.Store],
			Policy:        policy(ru),
			RatePerSecond: ru.RatePerSecond,
			MaxConcurrent: ru.MaxConcurrent,
			Shadow:        ru.Shadow,
			OnStoreError:  string(ru.OnStoreError),
			Totals: totalsJSON{
				Admitted: m.Acquisitions, Denied: m.Denials - m.ShadowDenials, Timeouts: m.Timeouts, ShadowDenials: m.ShadowDenials,
				Errors: m.Errors, Fallbacks: m.Fallbacks, Waiting: m.Waiting, Concurrent: m.CurrentConcurrent,
			},
		}
		switch {
		case ru.Algorithm == ratesync.SlidingWindow:
			lj.Algorithm, lj.Limit, lj.WindowSeconds = ru.Algorithm.String(), ru.Limit, ru.Window.Seconds()
		case ru.RatePerSecond > 0:
			lj.Algorithm, lj.Burst = ru.Algorithm.String(), max(ru.Burst, 1)
		}
		if lj.OnStoreError == "" {
			lj.OnStoreError = string(ratesync.Local)
		}
		if last != nil {
			if c, ok := last.of(li.Name); ok {
				lj.Rate = perSecond(c, last.dt)
			}
		}
		out.Limiters = append(out.Limiters, lj)
	}
	d.mu.Unlock()
	writeJSON(w, out)
}

type seriesJSON struct {
	Limiter         string  `json:"limiter"` // "" for all limiters together
	IntervalSeconds float64 `json:"interval_seconds"`
	HistorySeconds  float64 `json:"history_seconds"`
	// T holds the end of each interval (Unix milliseconds), oldest first;
	// the other slices hold the rates over those intervals, per second.
	T        []int64   `json:"t"`
	Admitted []float64 `json:"admitted"`
	Denied   []float64 `json:"denied"` // enforced denials and Acquire calls that gave up
	Shadow   []float64 `json:"shadow"` // requests a shadow rule would have denied, admitted anyway
	Errors   []float64 `json:"errors"`
}

func (d *Dashboard) series(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("limiter")
	if len(name) > MaxIdentifierLength {
		problem(w, http.StatusBadRequest, "The limiter name is longer than "+strconv.Itoa(MaxIdentifierLength)+" bytes.")
		return
	}
	out := seriesJSON{
		Limiter:         name,
		IntervalSeconds: d.cfg.interval.Seconds(),
		HistorySeconds:  d.cfg.history.Seconds(),
		T:               []int64{},
		Admitted:        []float64{},
		Denied:          []float64{},
		Shadow:          []float64{},
		Errors:          []float64{},
	}
	known := name == ""
	d.mu.Lock()
	d.ring.each(func(s *sample) {
		c, ok := s.of(name)
		known = known || ok
		rt := perSecond(c, s.dt)
		out.T = append(out.T, s.at.UnixMilli())
		out.Admitted = append(out.Admitted, rt.Admitted)
		out.Denied = append(out.Denied, rt.Denied)
		out.Shadow = append(out.Shadow, rt.Shadow)
		out.Errors = append(out.Errors, rt.Errors)
	})
	d.mu.Unlock()
	if !known {
		if _, err := d.reg.Get(name); err != nil {
			problem(w, http.StatusNotFound, "No limiter is named "+strconv.Quote(name)+".")
			return
		}
	}
	writeJSON(w, out)
}

type stateJSON struct {
	Limiter           string  `json:"limiter"`
	Identifier        *string `json:"identifier"` // null for the rule's own key
	Key               string  `json:"key"`
	Allowed           bool    `json:"allowed"`
	Remaining         int     `json:"remaining"`
	Limit             int     `json:"limit"`
	CurrentUsage      int     `json:"current_usage"`
	RetryAfterSeconds float64 `json:"retry_after_seconds"`
	ResetAt           int64   `json:"reset_at"` // Unix milliseconds
	ResetAfterSeconds float64 `json:"reset_after_seconds"`
	Concurrency       bool    `json:"concurrency"`
}

// state is the key inspector: Limiter.State for a limiter and, when the
// query has id, one identifier. It never consumes anything.
func (d *Dashboard) state(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("limiter")
	switch {
	case name == "":
		problem(w, http.StatusBadRequest, "Name a limiter: ?limiter=NAME, and optionally &id=IDENTIFIER.")
		return
	case len(name) > MaxIdentifierLength:
		problem(w, http.StatusBadRequest, "The limiter name is longer than "+strconv.Itoa(MaxIdentifierLength)+" bytes.")
		return
	case len(q.Get("id")) > MaxIdentifierLength:
		problem(w, http.StatusBadRequest, "The identifier is longer than "+strconv.Itoa(MaxIdentifierLength)+" bytes.")
		return
	}
	var (
		l   *ratesync.Limiter
		err error
		id  *string
	)
	if q.Has("id") {
		v := q.Get("id")
		id = &v
		l, err = d.reg.For(name, v)
	} else {
		l, err = d.reg.Get(name)
	}
	if errors.Is(err, ratesync.ErrLimiterNotFound) {
		problem(w, http.StatusNotFound, "No limiter is named "+strconv.Quote(name)+".")
		return
	}
	if err != nil {
		problem(w, http.StatusServiceUnavailable, "The limiter cannot be read now.")
		return
	}
	select {
	case d.inspects <- struct{}{}:
		defer func() { <-d.inspects }()
	default:
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusTooManyRequests, "Too many key inspections are waiting for the store; try again in a second.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.stateTimeout)
	defer cancel()
	st, err := l.State(ctx)
	if err != nil {
		if r.Context().Err() != nil {
			return // the caller is gone
		}
		// The store's error is not shown: it may name hosts of the network.
		status, detail := http.StatusServiceUnavailable, "The store cannot read the state now."
		switch {
		case errors.Is(err, ratesync.ErrCircuitOpen):
			detail = "The store's circuit breaker is open: the state cannot be read now."
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ratesync.ErrCallTimeout):
			status, detail = http.StatusGatewayTimeout, "The store did not answer in time."
		}
		problem(w, status, detail)
		return
	}
	resetAfter := max(time.Until(st.ResetAt), 0)
	writeJSON(w, stateJSON{
		Limiter:           name,
		Identifier:        id,
		Key:               l.Key(),
		Allowed:           st.Allowed,
		Remaining:         st.Remaining,
		Limit:             st.Limit,
		CurrentUsage:      st.CurrentUsage,
		RetryAfterSeconds: roundMs(st.RetryAfter),
		ResetAt:           st.ResetAt.UnixMilli(),
		ResetAfterSeconds: roundMs(resetAfter),
		Concurrency:       st.Concurrency,
	})
}

// roundMs returns d in seconds, to the millisecond.
func roundMs(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		problem(w, http.StatusInternalServerError, "The answer could not be encoded.")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.Write(append(body, '\n'))
}
