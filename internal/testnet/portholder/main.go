// Command portholder holds the ports a careless test might want: it binds
// UDP and listens on TCP at 127.0.0.1 and [::1], ports 53, 80 and 443, so
// that a test suite run beside it proves it depends on no host port being
// free. It prints "holding" once every port is bound and then waits until
// it is killed. It exits non-zero, naming the port, if any bind fails.
// Only CI (.ci/run) runs it; it must not do anything but hold ports.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var held []interface{ Close() error }
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, port := range []string{"53", "80", "443"} {
			addr := net.JoinHostPort(host, port)
			l, err := net.Listen("tcp", addr)
			if err != nil {
				fmt.Fprintf(os.Stderr, "portholder: listening on tcp %s: %v (run as root, with nothing else on the port)\n", addr, err)
				os.Exit(1)
			}
			held = append(held, l)
			c, err := net.ListenPacket("udp", addr)
			if err != nil {
				fmt.Fprintf(os.Stderr, "portholder: binding udp %s: %v (run as root, with nothing else on the port)\n", addr, err)
				os.Exit(1)
			}
			held = append(held, c)
		}
	}
	fmt.Println("holding")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, h := range held {
		h.Close()
	}
}
