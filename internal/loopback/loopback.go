// Package loopback finds free loopback addresses for the processes that
// tests, the benchmark harness and the demo start.
package loopback

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
)

// FreeAddr returns a 127.0.0.1 address whose TCP and UDP ports are both
// free, chosen below the kernel's ephemeral range (20000–31999), so that
// no outgoing connection takes the port before a process binds it — or
// binds it again after a restart.
func FreeAddr() (string, error) {
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
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
		return addr, nil
	}
	return "", errors.New("loopback: no free TCP and UDP port in 20000-31999 after 200 tries")
}
