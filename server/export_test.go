package server

// SetMaxPageBytes bounds ListShards pages to n bytes of entries, and an
// unpaged listing to unpaged bytes, until the returned function restores
// the defaults.
func SetMaxPageBytes(n, unpaged int) (restore func()) {
	old, oldUnpaged := maxPageBytes, maxUnpagedBytes
	maxPageBytes, maxUnpagedBytes = n, unpaged
	return func() { maxPageBytes, maxUnpagedBytes = old, oldUnpaged }
}
