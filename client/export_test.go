package client

// SetShardsPageSize makes Shards ask for pages of n entries until the
// returned function restores the default.
func SetShardsPageSize(n int32) (restore func()) {
	old := shardsPageSize
	shardsPageSize = n
	return func() { shardsPageSize = old }
}
