// Package storeenv puts the stores of the cookbook's examples where the
// environment says, so that each example's rate-sync.toml can keep the
// description's store = "redis" and still run anywhere:
//
//	REDIS_URL set      Redis at that URL, keys under KEY_PREFIX (default "ratesync-examples")
//	POSTGRES_URL set   PostgreSQL at that URL, tables in schema PG_SCHEMA (default "ratesync_examples")
//	neither            memory: in this process only
//
// The examples import the engines themselves (_ ".../redisstore",
// _ ".../pgstore"), as any program naming them in a configuration does.
package storeenv

import (
	"cmp"
	"context"
	"fmt"
	"os"

	"github.com/rate-sync/ratesync-go"
)

// Engine returns the engine the examples' shared stores use: "redis" when
// REDIS_URL is set, else "postgres" when POSTGRES_URL is set, else "memory".
func Engine() string {
	switch {
	case os.Getenv("REDIS_URL") != "":
		return "redis"
	case os.Getenv("POSTGRES_URL") != "":
		return "postgres"
	}
	return "memory"
}

// Shared reports whether the stores are shared by processes (Redis or
// PostgreSQL), rather than kept in one process's memory.
func Shared() bool { return Engine() != "memory" }

// Apply parses data, an example's rate-sync.toml (file names it in errors),
// moves every store whose engine is "redis" or "postgres" to Engine() with
// the options of the environment, and applies the result to reg.
func Apply(reg *ratesync.Registry, file string, data []byte) error {
	cfg, err := ratesync.ParseConfig(file, data)
	if err != nil {
		return err
	}
	for _, sc := range cfg.Stores {
		if sc.Engine != "redis" && sc.Engine != "postgres" {
			continue
		}
		sc.Engine = Engine()
		switch sc.Engine {
		case "redis":
			sc.Options = map[string]any{"url": os.Getenv("REDIS_URL"), "key_prefix": prefix()}
		case "postgres":
			// The first call creates the schema, which takes longer than
			// the default call timeout (0.25 s).
			sc.Options = map[string]any{"url": os.Getenv("POSTGRES_URL"), "schema_name": schema(), "call_timeout_seconds": 5}
		default:
			sc.Options = map[string]any{}
		}
	}
	return reg.ApplyConfig(cfg)
}

// Reset removes the state of every store of reg, so that an example run
// twice on Redis or PostgreSQL starts afresh: only the examples' keys
// (KEY_PREFIX) or tables (PG_SCHEMA) are touched.
func Reset(ctx context.Context, reg *ratesync.Registry) error {
	for _, s := range reg.Stores() {
		if err := reg.ResetStore(ctx, s.Name); err != nil {
			return err
		}
	}
	return nil
}

// Describe says where the stores are, without secrets, for an example's
// first line of output.
func Describe() string {
	switch Engine() {
	case "redis":
		return fmt.Sprintf("store: Redis at $REDIS_URL, keys under %q", prefix())
	case "postgres":
		return fmt.Sprintf("store: PostgreSQL at $POSTGRES_URL, schema %q", schema())
	}
	return "store: memory (this process only; set REDIS_URL or POSTGRES_URL to share it)"
}

func prefix() string { return cmp.Or(os.Getenv("KEY_PREFIX"), "ratesync-examples") }
func schema() string { return cmp.Or(os.Getenv("PG_SCHEMA"), "ratesync_examples") }
