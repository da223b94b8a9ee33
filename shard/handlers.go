package shard

import "sync"

// handlerQueue runs Handler calls on one goroutine, in order, so that a slow
// Handler never holds up the node's loop (and with it the keep-alives).
type handlerQueue struct {
	h      Handler
	mu     sync.Mutex
	calls  []func(Handler)
	wake   chan struct{}
	closed bool
}

func newHandlerQueue(h Handler) *handlerQueue {
	return &handlerQueue{h: h, wake: make(chan struct{}, 1)}
}

// push queues a call; it never blocks. Calls pushed after close are dropped.
func (q *handlerQueue) push(call func(Handler)) {
	if q == nil || q.h == nil {
		return
	}
	q.mu.Lock()
	if !q.closed {
		q.calls = append(q.calls, call)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run makes the calls until close, then the ones still queued, and returns.
func (q *handlerQueue) run() {
	for {
		q.mu.Lock()
		calls, closed := q.calls, q.closed
		q.calls = nil
		q.mu.Unlock()
		for _, c := range calls {
			c(q.h)
		}
		if closed && len(calls) == 0 {
			return
		}
		if len(calls) == 0 {
			<-q.wake
		}
	}
}

func (q *handlerQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
