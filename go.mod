module github.com/rate-sync/ratesync-go

go 1.25

require (
	github.com/BurntSushi/toml v1.6.0
	go.uber.org/goleak v1.3.0
)
