package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte(`
[stores.main]
engine = "memory"

[limiters.api]
store = "main"
rate_per_second = 10.0

[limiters.login]
store = "main"
algorithm = "sliding_window"
limit = 5
window_seconds = 300
max_concurrent = 2
fail_closed = true

[http]
trusted_proxy_networks = ["10.0.0.0/8"]
`), 0o600)
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[stores.main]\nengine = \"memory\"\n[limiters.api]\nstore = \"main\"\nalgorithm = \"leaky\"\nrate_per_second = 1.0\n"), 0o600)

	redis := filepath.Join(dir, "redis.toml")
	os.WriteFile(redis, []byte(`
[stores.shared]
engine = "redis"
url = "redis://:hunter2@127.0.0.1:6399/2"
key_prefix = "myapp"

[stores.ha]
engine = "redis"
sentinel_master = "mymaster"
sentinel_nodes = ["127.0.0.1:26379"]
password = "s3cret-pw"

[limiters.api]
store = "shared"
rate_per_second = 100.0
`), 0o600)
	margin := filepath.Join(dir, "margin.toml")
	os.WriteFile(margin, []byte("[stores.r]\nengine = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\ntiming_margin_ms = 10.0\n"), 0o600)

	tests := []struct {
		name     string
		args     []string
		code     int
		out, err []string
	}{
		{"valid", []string{"check", good}, 0, []string{"good.toml: OK", "main", "memory", "api", "token_bucket", "10", "login", "sliding_window", "5m0s", "deny", "10.0.0.0/8", "ipv6_prefix_length=64"}, nil},
		{"invalid", []string{"check", bad}, 1, nil, []string{"bad.toml:5", "[limiters.api] algorithm", `unknown algorithm "leaky"`}},
		{"redis, secrets hidden", []string{"check", redis}, 0, []string{"shared", "redis", "key_prefix=myapp", "127.0.0.1:6399", "ha", "mymaster"}, nil},
		{"redis timing margin", []string{"check", margin}, 1, nil, []string{"margin.toml:4", "timing_margin_ms", "remove the key"}},
		{"missing file", []string{"check", filepath.Join(dir, "nope.toml")}, 1, nil, []string{"nope.toml"}},
		{"no args", nil, 2, nil, []string{"usage"}},
		{"unknown command", []string{"serv"}, 2, nil, []string{`unknown command "serv"`}},
		{"unknown flag", []string{"check", "--jsn", good}, 2, nil, []string{"unknown flag --jsn"}},
		{"state without a limiter", []string{"state", good}, 2, nil, []string{"name the file and the limiter"}},
		{"state of an unknown limiter", []string{"state", good, "nope"}, 1, nil, []string{`limiter not found: "nope"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, errb.String())
			}
			for _, w := range tt.out {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
			for _, secret := range []string{"hunter2", "s3cret-pw"} {
				if strings.Contains(out.String()+errb.String(), secret) {
					t.Errorf("output shows the password %q:\n%s%s", secret, out.String(), errb.String())
				}
			}
			for _, w := range tt.err {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
		})
	}
}

func TestCheckFindsDefaultFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("RATE_SYNC_CONFIG", "")
	var out, errb bytes.Buffer
	if code := run([]string{"check"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no configuration file") {
		t.Fatalf("no file: exit %d, %s", code, errb.String())
	}
	os.MkdirAll(filepath.Join(dir, "config"), 0o755)
	os.WriteFile(filepath.Join(dir, "config", "rate-sync.toml"), []byte("[stores.s]\nengine = \"memory\"\n[limiters.x]\nstore = \"s\"\nmax_concurrent = 3\n"), 0o600)
	out.Reset()
	if code := run([]string{"check"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "config/rate-sync.toml: OK") {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
}

func TestMigrate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pg.toml")
	schema := fmt.Sprintf("rstest_cli_%d", time.Now().UnixNano())
	url := os.Getenv("RATESYNC_TEST_POSTGRES_URL")
	if url == "" {
		url = "postgres://nobody@127.0.0.1:1/none"
	}
	os.WriteFile(file, []byte(fmt.Sprintf(`
[stores.db]
engine = "postgres"
url = %q
schema_name = %q
table_name = "limits"
`, url, schema)), 0o600)

	var out, errb bytes.Buffer
	if code := run([]string{"migrate", "--print", file}, &out, &errb); code != 0 {
		t.Fatalf("migrate --print: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"-- stores.db: ratesync PostgreSQL schema, version 2, in schema \"" + schema + "\", table \"limits\"\n",
		`CREATE TABLE IF NOT EXISTS "` + schema + `"."limits"`, `"` + schema + `"."limits_decide"`, `"limits_version"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed SQL lacks %q", want)
		}
	}
	// The template's notes on its placeholders, half filled in, are not
	// printed.
	for _, bad := range []string{"{{", "is the quoted schema", "a string literal,"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("printed SQL has %q:\n%.600s", bad, out.String())
		}
	}
	if u := testenv.PostgresURL(t); u == "" {
		return
	}
	t.Cleanup(func() {
		cfg, _ := pgxpool.ParseConfig(url)
		p, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err == nil {
			p.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`)
			p.Close()
		}
	})
	out.Reset()
	if code := run([]string{"migrate", file}, &out, &errb); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errb.String())
	}
	if want := fmt.Sprintf("stores.db: schema at version %d", pgstore.SchemaVersion); !strings.Contains(out.String(), want) {
		t.Fatalf("migrate printed %q", out.String())
	}
	// Twice is fine.
	if code := run([]string{"migrate", file}, &out, &errb); code != 0 {
		t.Fatalf("second migrate: exit %d: %s", code, errb.String())
	}
}

// A rule with max_concurrent alone has no rate algorithm to show.
func TestCheckConcurrencyOnly(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(file, []byte("[stores.s]\nengine = \"memory\"\n[limiters.upload]\nstore = \"s\"\nmax_concurrent = 10\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"check", file}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "upload") && (strings.Contains(line, "token_bucket") || !strings.Contains(line, " 10 ")) {
			t.Fatalf("max_concurrent alone shown as %q", line)
		}
	}
}

// state reads what a Redis store holds for a key without consuming, and
// reset removes it: what someone on call reaches for first.
func TestStateAndReset(t *testing.T) {
	url := testenv.RedisURL(t)
	file := filepath.Join(t.TempDir(), "r.toml")
	os.WriteFile(file, []byte(fmt.Sprintf(`
[stores.redis]
engine = "redis"
url = %q
key_prefix = "rstest-cli-%d"

[limiters.api]
store = "redis"
rate_per_second = 0.001
burst = 5
max_concurrent = 3
`, url, time.Now().UnixNano())), 0o600)
	svc := ratesync.NewRegistry() // the service
	defer svc.Close()
	if err := svc.LoadConfig(file); err != nil {
		t.Fatal(err)
	}
	defer svc.ResetStore(context.Background(), "redis")
	api, _ := svc.For("api", "203.0.113.5")
	for range 2 {
		if _, err := api.Acquire(context.Background()); err != nil { // held: not released
			t.Fatal(err)
		}
	}
	state := func(args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(append([]string{"state"}, args...), &out, &errb); code != 0 {
			t.Fatalf("state %v: exit %d: %s", args, code, errb.String())
		}
		return out.String(), errb.String()
	}
	out, _ := state(file, "api", "203.0.113.5")
	for _, want := range []string{`key "api:203.0.113.5"`, "admitted now", "token_bucket  5      3          2", "concurrency   3      1          2"} {
		if !strings.Contains(out, want) {
			t.Errorf("state lacks %q:\n%s", want, out)
		}
	}
	out, _ = state("--json", file, "api", "203.0.113.5")
	var rep struct {
		Key      string
		Allowed  bool
		Policies []struct {
			Policy           string
			Limit, Remaining int
			InUse            int     `json:"in_use"`
			Reset            float64 `json:"reset_after_seconds"`
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if rep.Key != "api:203.0.113.5" || !rep.Allowed || len(rep.Policies) != 2 || rep.Policies[1].Policy != "concurrency" ||
		rep.Policies[1].InUse != 2 || rep.Policies[1].Remaining != 1 || rep.Policies[0].InUse != 2 || rep.Policies[1].Reset < 200 {
		t.Fatalf("JSON state %+v", rep)
	}
	// Reading consumed nothing.
	if again, _ := state(file, "api", "203.0.113.5"); again != out && !strings.Contains(again, "token_bucket  5      3          2") {
		t.Fatalf("a second state differs:\n%s", again)
	}
	var o, e bytes.Buffer
	if code := run([]string{"reset", file, "api", "203.0.113.5"}, &o, &e); code != 0 || !strings.Contains(o.String(), `reset limiter api, key "api:203.0.113.5"`) {
		t.Fatalf("reset: exit %d: %s %s", code, o.String(), e.String())
	}
	out, _ = state(file, "api", "203.0.113.5")
	if !strings.Contains(out, "token_bucket  5      5          0") || !strings.Contains(out, "concurrency   3      3          0") {
		t.Fatalf("after reset:\n%s", out)
	}
}

func TestStateOfAMemoryStore(t *testing.T) {
	file := filepath.Join(t.TempDir(), "m.toml")
	os.WriteFile(file, []byte("[stores.s]\nengine = \"memory\"\n[limiters.api]\nstore = \"s\"\nrate_per_second = 1.0\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"state", file, "api"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "in memory") {
		t.Fatalf("state: exit %d, stderr %q", code, errb.String())
	}
	if code := run([]string{"reset", file, "api"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "nothing to reset") {
		t.Fatalf("reset: exit %d, stderr %q", code, errb.String())
	}
}
