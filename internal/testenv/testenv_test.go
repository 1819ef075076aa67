package testenv

import "testing"

// TestServices proves the environment CI promises: with
// RATESYNC_TEST_REQUIRE_SERVICES=1 both servers must answer.
func TestServices(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		if RedisURL(t) == "" {
			t.Fatal("empty URL without skip")
		}
	})
	t.Run("postgres", func(t *testing.T) {
		if PostgresURL(t) == "" {
			t.Fatal("empty URL without skip")
		}
	})
}

func TestHostPort(t *testing.T) {
	tests := map[string]string{
		"redis://127.0.0.1:6379/0":                                "127.0.0.1:6379",
		"redis://:pw@localhost/0":                                 "localhost:6379",
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable": "127.0.0.1:5432",
		"postgres:///test":                                        "127.0.0.1:5432",
	}
	for in, want := range tests {
		def := "6379"
		if in[:8] == "postgres" {
			def = "5432"
		}
		if got, err := hostPort(in, def); err != nil || got != want {
			t.Errorf("hostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
