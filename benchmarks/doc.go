// Package benchmarks compares ratesync with other Go rate limiters in one
// run on one machine. It is a module of its own so that users of ratesync
// never download the peers.
//
//	cd benchmarks && go test -run '^$' -bench . -benchmem -cpu 1,2
package benchmarks
