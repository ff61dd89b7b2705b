package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sockfactory/sockfactory"
)

// helperModes holds further helper modes, registered by other test files
// in init functions.
var helperModes = map[string]func(arg string) int{}

// helperMain runs when the test binary is re-executed as a client inside
// another namespace or as another user. mode "dial" checks that arg
// ("network address") is unreachable directly, then reaches it through the
// daemon with the Go Dialer and echoes a line. It prints one line and
// returns the exit code.
func helperMain(mode, arg string) int {
	if f := helperModes[mode]; f != nil {
		return f(arg)
	}
	network, address, _ := strings.Cut(arg, " ")
	switch mode {
	case "dial":
		direct, directErr := net.DialTimeout(network, address, 2*time.Second)
		if directErr == nil {
			direct.Close()
			fmt.Println("FAIL: direct dial succeeded: the namespace can reach the destination itself")
			return 3
		}
		d := &sockfactory.Dialer{}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			fmt.Println("FAIL: brokered dial:", err)
			return 4
		}
		defer c.Close()
		msg := "hello from another namespace\n"
		if _, err := io.WriteString(c, msg); err != nil {
			fmt.Println("FAIL: write:", err)
			return 5
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			fmt.Printf("FAIL: echo: got %q, %v\n", buf, err)
			return 6
		}
		fmt.Printf("OK direct dial failed as it should: %v\n", directErr)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}
