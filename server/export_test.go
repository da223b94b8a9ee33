package server

// SetMaxPageBytes bounds ListShards pages to n bytes of entries until the
// returned function restores the default.
func SetMaxPageBytes(n int) (restore func()) {
	old := maxPageBytes
	maxPageBytes = n
	return func() { maxPageBytes = old }
}
