module github.com/rate-sync/ratesync-go/benchmarks

go 1.26.0

require (
	github.com/rate-sync/ratesync-go v0.0.0
	github.com/sethvargo/go-limiter v1.1.0
	github.com/ulule/limiter/v3 v3.11.2
	golang.org/x/time v0.16.0
)

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
)

replace github.com/rate-sync/ratesync-go => ../
