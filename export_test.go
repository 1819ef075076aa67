package ratesync

// ResetDefault forgets the default registry, so a test can exercise the
// automatic configuration loading again.
func ResetDefault() {
	std.mu.Lock()
	defer std.mu.Unlock()
	if std.reg != nil {
		std.reg.Close()
	}
	std.reg, std.loaded, std.err = nil, false, nil
}
