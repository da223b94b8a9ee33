package voter

import (
	"context"
	"sync"
)

// FailNextBarrier makes the next wait for s's store fail with err, as a
// failed commit would, after the records are in fact durable: the store
// itself keeps working, so any later refusal comes from the Server.
func FailNextBarrier(s *Server, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store = &faultyStore{store: s.store, err: err}
}

type faultyStore struct {
	store
	once sync.Once
	err  error
}

func (f *faultyStore) Barrier(ctx context.Context) error {
	if err := f.store.Barrier(ctx); err != nil {
		return err
	}
	var err error
	f.once.Do(func() { err = f.err })
	return err
}

// HoldBarriers makes every later wait for s's store first signal on
// entered, then block until release is called. Tests use it to observe a
// call that has handled its request and is about to wait for durability.
func HoldBarriers(s *Server) (entered <-chan struct{}, release func()) {
	g := &gatedStore{entered: make(chan struct{}, 64), gate: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	g.store = s.store
	s.store = g
	var once sync.Once
	return g.entered, func() { once.Do(func() { close(g.gate) }) }
}

type gatedStore struct {
	store
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) Barrier(ctx context.Context) error {
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.store.Barrier(ctx)
}

// HoldLock takes s's lock, as a long request would, and makes every later
// call signal on waiting just before it waits for the lock. release gives
// the lock back.
func HoldLock(s *Server) (waiting <-chan struct{}, release func()) {
	w := make(chan struct{}, 64)
	s.mu.Lock()
	s.beforeLock = func() { w <- struct{}{} }
	var once sync.Once
	return w, func() { once.Do(s.mu.Unlock) }
}

// SetMaxWaiting sets how many calls may wait for s's lock.
func SetMaxWaiting(s *Server, n int64) { s.maxWaiting = n }
