package memstore

// InProcess marks the store as deciding in the calling process (see
// driver.InProcess).
func (s *Store) InProcess() {}
