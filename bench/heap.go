package main

import (
	"runtime"
	"sync"
	"time"
)

// heapSampler records the largest Go heap (HeapAlloc) of this process,
// read every 100 ms until stop.
type heapSampler struct {
	mu   sync.Mutex
	max  uint64
	done chan struct{}
	once sync.Once
}

func sampleHeap() *heapSampler {
	h := &heapSampler{done: make(chan struct{})}
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			h.sample()
			select {
			case <-t.C:
			case <-h.done:
				return
			}
		}
	}()
	return h
}

func (h *heapSampler) sample() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	h.mu.Lock()
	h.max = max(h.max, m.HeapAlloc)
	h.mu.Unlock()
}

// maxMB returns the largest heap seen so far, in MiB.
func (h *heapSampler) maxMB() float64 {
	h.sample()
	h.mu.Lock()
	defer h.mu.Unlock()
	return float64(h.max) / (1 << 20)
}

func (h *heapSampler) stop() { h.once.Do(func() { close(h.done) }) }
