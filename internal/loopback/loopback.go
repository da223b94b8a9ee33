// Package loopback finds free loopback addresses for the processes that
// tests, the benchmark harness and the demo start.
package loopback

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// given holds the ports FreeAddr returned in this process: a port is free
// until its process binds it, so without this two calls could return the
// same one (a ledger test once listed a voter's address twice).
var given = struct {
	sync.Mutex
	ports map[int]bool
}{ports: make(map[int]bool)}

// FreeAddr returns a 127.0.0.1 address whose TCP and UDP ports are both
// free, chosen below the kernel's ephemeral range (20000–31999), so that
// no outgoing connection takes the port before a process binds it — or
// binds it again after a restart. It never returns the same port twice in
// one process.
func FreeAddr() (string, error) {
	given.Lock()
	defer given.Unlock()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if given.ports[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		given.ports[port] = true
		return addr, nil
	}
	return "", errors.New("loopback: no free TCP and UDP port in 20000-31999 after 200 tries")
}
