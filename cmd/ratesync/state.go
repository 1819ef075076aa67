package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// policyState is one policy's state of a key, as state prints it.
type policyState struct {
	Policy    string  `json:"policy"` // token_bucket, sliding_window or concurrency
	Limit     int     `json:"limit"`
	Remaining int     `json:"remaining"`
	InUse     int     `json:"in_use"`              // tokens spent, window admissions, leases held
	Retry     float64 `json:"retry_after_seconds"` // for concurrency, until the earliest lease expires
	Reset     float64 `json:"reset_after_seconds"`
}

type keyReport struct {
	Limiter  string        `json:"limiter"`
	IDs      []string      `json:"ids"`
	Key      string        `json:"key"`
	Store    string        `json:"store"`
	Engine   string        `json:"engine"`
	Allowed  *bool         `json:"allowed,omitempty"`
	Policies []policyState `json:"policies,omitempty"`
	Reset    bool          `json:"reset,omitempty"`
}

// keyCommand runs state or reset for one key of a limiter of the file.
func keyCommand(cmd, path, name string, ids []string, asJSON bool, stdout, stderr io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := reg.LoadConfig(path); err != nil {
		return err
	}
	l, err := reg.For(name, ids...)
	if err != nil {
		return err
	}
	rule := l.Rule()
	rep := keyReport{Limiter: name, IDs: ids, Key: l.Key(), Store: rule.Store}
	if rep.IDs == nil {
		rep.IDs = []string{}
	}
	for _, s := range reg.Stores() {
		if s.Name == rule.Store {
			rep.Engine = s.Engine
		}
	}
	if rep.Engine == "memory" {
		// A memory store's state lives in the process that uses it.
		if cmd == "reset" {
			return fmt.Errorf("ratesync reset: store %q is in memory: its state lives in the process that uses it; there is nothing to reset from here", rule.Store)
		}
		fmt.Fprintf(stderr, "note: store %q is in memory: its state lives in the process that uses it; this is a fresh one\n", rule.Store)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if cmd == "reset" {
		if err := l.Reset(ctx); err != nil {
			return err
		}
		rep.Reset = true
		if asJSON {
			return writeJSON(stdout, rep)
		}
		fmt.Fprintf(stdout, "reset limiter %s, key %s, on store %s (%s)\n", name, strconv.Quote(rep.Key), rep.Store, rep.Engine)
		return nil
	}
	allowed := true
	// Each policy alone: a rule of the same name, store and key with one
	// of the limiter's policies, read without consuming.
	for _, part := range splitRule(rule) {
		if err := reg.ConfigureLimiter(name, part.rule); err != nil {
			return err
		}
		pl, err := reg.For(name, ids...)
		if err != nil {
			return err
		}
		st, err := pl.State(ctx)
		if err != nil {
			return err
		}
		allowed = allowed && st.Allowed
		rep.Policies = append(rep.Policies, policyState{Policy: part.kind, Limit: st.Limit, Remaining: st.Remaining, InUse: st.CurrentUsage,
			Retry: st.RetryAfter.Seconds(), Reset: max(time.Until(st.ResetAt), 0).Seconds()})
	}
	rep.Allowed = &allowed
	if asJSON {
		return writeJSON(stdout, rep)
	}
	fmt.Fprintf(stdout, "limiter %s, key %s, on store %s (%s): %s\n\n", name, strconv.Quote(rep.Key), rep.Store, rep.Engine,
		map[bool]string{true: "a request would be admitted now", false: "a request would be denied now"}[allowed])
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tLIMIT\tREMAINING\tIN USE\tRETRY AFTER\tFULL AGAIN IN")
	full := false
	for _, p := range rep.Policies {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", p.Policy, p.Limit, p.Remaining, p.InUse, seconds(p.Retry), seconds(p.Reset))
		full = full || p.Policy == "concurrency" && p.Retry > 0
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if full {
		fmt.Fprintln(stdout, "\n(concurrency: the retry is when the earliest lease expires; a release frees a slot sooner)")
	}
	return nil
}

type rulePart struct {
	kind string
	rule ratesync.Rule
}

// splitRule returns a rule with each of r's policies alone: its rate or
// window, and its concurrency limit.
func splitRule(r ratesync.Rule) []rulePart {
	var out []rulePart
	if r.Algorithm == ratesync.SlidingWindow || r.RatePerSecond > 0 {
		rate := r
		rate.MaxConcurrent, rate.LeaseTTL = 0, 0
		out = append(out, rulePart{r.Algorithm.String(), rate})
	}
	if r.MaxConcurrent > 0 {
		out = append(out, rulePart{"concurrency", ratesync.Rule{Store: r.Store, MaxConcurrent: r.MaxConcurrent, LeaseTTL: r.LeaseTTL,
			OnStoreError: r.OnStoreError, FallbackReplicas: r.FallbackReplicas}})
	}
	return out
}

func seconds(s float64) string {
	if s == 0 {
		return "0s"
	}
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
