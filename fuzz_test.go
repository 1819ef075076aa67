package ratesync

import (
	"strings"
	"testing"
)

// The fuzz targets check that bad input is an error with a message, never
// a panic. Run one with, for example:
//
//	go test -run '^$' -fuzz FuzzParseConfig -fuzztime 30s .
//
// Inputs the fuzzer finds failing are kept in testdata/fuzz as regression
// seeds and run by every `go test`.

func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"[stores.main]\nengine = \"memory\"\n[limiters.api]\nstore = \"main\"\nrate_per_second = 10.0\n",
		"[limiters.login]\nstore = \"m\"\nalgorithm = \"sliding_window\"\nlimit = 5\nwindow_seconds = 300\n",
		"[stores.r]\nengine = \"${ENGINE:-memory}\"\n[http]\ntrusted_proxy_networks = [\"10.0.0.0/8\"]\n",
		"[limiters.x]\nstore = \"m\"\nmax_concurrent = 3\nlease_seconds = 0.5\ntimeout = 1e309\n",
		"[limiters]\nx = 1\n",
		"= \"",
		"[stores.\"a.b\"]\nengine = \"memory\"\nsweep_interval_seconds = -1\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz.toml", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		r := NewRegistry()
		defer r.Close()
		if err := r.ApplyConfig(cfg); err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

func FuzzExpandEnv(f *testing.F) {
	t0 := f
	t0.Setenv("RATESYNC_FUZZ_SET", "value")
	for _, seed := range []string{"plain", "${RATESYNC_FUZZ_SET}", "${RATESYNC_FUZZ_UNSET:-d}", "$$", "${", "${:-}", "a$b${RATESYNC_FUZZ_UNSET}", "${X:-${Y}}"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := expandEnv(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if !strings.Contains(s, "$") && out != s {
			t.Fatalf("expandEnv(%q) = %q: text without '$' must be unchanged", s, out)
		}
	})
}

func FuzzTemplate(f *testing.F) {
	for _, seed := range [][2]string{
		{"api:{user_id}", "u1"},
		{"api:{tenant_id}:{user_id}", "a:b"},
		{"api:x{user_id}y", "%"},
		{"{api}", ""},
		{"api:{", "}"},
		{"api:{a}{a}", "z"},
	} {
		f.Add(seed[0], seed[1])
	}
	r := NewRegistry()
	f.Cleanup(func() { r.Close() })
	if err := r.ConfigureStore("m", "memory", nil); err != nil {
		f.Fatal(err)
	}
	if err := r.ConfigureLimiter("api", Rule{Store: "m", RatePerSecond: 1e6, Burst: 1}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tmpl, value string) {
		tp, err := r.Template(tmpl)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		values := Values{}
		for _, p := range tp.Placeholders() {
			values[p] = value
		}
		l, err := tp.Resolve(values)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if l.Key() == "" {
			t.Fatal("empty key")
		}
	})
}

// Key building: escaping is reversible and leaves no separator, so two
// different identifiers never build the same key.
func FuzzKeyComponent(f *testing.F) {
	for _, seed := range []string{"", "user", "a:b", "%3A", "%", "::", "ü:%25"} {
		f.Add(seed, "x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ea := escapeComponent(a)
		if strings.ContainsRune(ea, ':') {
			t.Fatalf("escapeComponent(%q) = %q keeps a ':'", a, ea)
		}
		if got := unescapeComponent(ea); got != a {
			t.Fatalf("unescape(escape(%q)) = %q", a, got)
		}
		if a != b && ea == escapeComponent(b) {
			t.Fatalf("%q and %q escape alike", a, b)
		}
	})
}

// FuzzNeedsEscape checks the word-at-a-time scan against the plain one.
func FuzzNeedsEscape(f *testing.F) {
	for _, s := range []string{"", "user-12345", "a:b", "12345678%", "abcdefgh:", "\x80\xff:\x00", "%%%%%%%%%%%%%%%%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := needsEscape(s), s == "" || strings.ContainsAny(s, ":%"); got != want {
			t.Fatalf("needsEscape(%q) = %v, want %v", s, got, want)
		}
	})
}
