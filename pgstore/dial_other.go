//go:build !linux

package pgstore

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist; TCP
// keepalive still applies.
func setUserTimeout(uintptr, int) error { return nil }
