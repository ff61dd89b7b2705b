package privdrop

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Capabilities the daemon may keep, by number (linux/capability.h).
const (
	CapNetBindService uintptr = 10
	CapNetAdmin       uintptr = 12
	CapSysAdmin       uintptr = 21
	CapSysPtrace      uintptr = 19
	CapKill           uintptr = 5
)

// CapName returns a capability's name, such as "CAP_NET_BIND_SERVICE".
func CapName(c uintptr) string {
	switch c {
	case CapNetBindService:
		return "CAP_NET_BIND_SERVICE"
	case CapNetAdmin:
		return "CAP_NET_ADMIN"
	case CapSysAdmin:
		return "CAP_SYS_ADMIN"
	case CapSysPtrace:
		return "CAP_SYS_PTRACE"
	case CapKill:
		return "CAP_KILL"
	}
	return "capability " + strconv.FormatUint(uint64(c), 10)
}

// Effective returns this process's effective capability set, one bit per
// capability number.
func Effective() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("reading capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("reading capabilities: CapEff in /proc/self/status: %w", err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading capabilities: %w", err)
	}
	return 0, errors.New("reading capabilities: no CapEff line in /proc/self/status")
}
