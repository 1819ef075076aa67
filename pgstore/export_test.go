package pgstore

// WithClock makes the store use now instead of the server's clock (tests).
var WithClock = withClock
