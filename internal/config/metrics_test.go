package config

import (
	"strings"
	"testing"
)

// TestParseMetrics: [metrics] listen takes a numeric ip:port or an
// absolute path; anything else is refused, on its line, saying what to
// write.
func TestParseMetrics(t *testing.T) {
	good := []struct{ doc, want string }{
		{"", ""},
		{"[metrics]\nlisten = \"127.0.0.1:9477\"\n", "127.0.0.1:9477"},
		{"[metrics]\nlisten = \"[::1]:9477\"\n", "[::1]:9477"},
		{"[metrics]\nlisten = \":9477\"\n", ":9477"},
		{"metrics.listen = \"/run/sockfactory/metrics.sock\"\n", "/run/sockfactory/metrics.sock"},
	}
	for _, tc := range good {
		c, err := Parse("test.toml", []byte(tc.doc))
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.doc, err)
		}
		if c.MetricsListen != tc.want {
			t.Errorf("Parse(%q): MetricsListen = %q; want %q", tc.doc, c.MetricsListen, tc.want)
		}
	}
	bad := []struct{ name, doc, want string }{
		{"no port", "[metrics]\n\nlisten = \"127.0.0.1\"\n", `test.toml:3: [metrics] listen: "127.0.0.1": want a TCP address such as "127.0.0.1:9477"`},
		{"name", "[metrics]\nlisten = \"localhost:9477\"\n", `test.toml:2: [metrics] listen: "localhost:9477": host "localhost" must be a numeric IP address`},
		{"port 0", "[metrics]\nlisten = \"127.0.0.1:0\"\n", `test.toml:2: [metrics] listen: "127.0.0.1:0": port "0" must be a number from 1 to 65535`},
		{"port too big", "[metrics]\nlisten = \"127.0.0.1:65536\"\n", `port "65536" must be a number from 1 to 65535`},
		{"port name", "[metrics]\nlisten = \"127.0.0.1:http\"\n", `port "http" must be a number`},
		{"relative path", "[metrics]\nlisten = \"metrics.sock\"\n", `or an absolute path for a UNIX socket`},
		{"unclean path", "[metrics]\nlisten = \"/run//m.sock\"\n", `write the socket's path plainly`},
		{"native socket", "[daemon]\nsocket = \"/run/sf.sock\"\n[metrics]\nlisten = \"/run/sf.sock\"\n", `test.toml:4: [metrics] listen: "/run/sf.sock" is also the native socket`},
		{"clearwater socket", "[metrics]\nlisten = \"/tmp/cw\"\n[[clearwater]]\nsocket = \"/tmp/cw\"\nallowed_hosts = [\"a.example\"]\n", `is also a clearwater socket`},
		{"unknown key", "[metrics]\naddress = \"127.0.0.1:9477\"\n", `unknown setting "metrics.address"`},
		{"not a string", "[metrics]\nlisten = 9477\n", `test.toml:2:`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("test.toml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse:\n got  %v\n want one containing %s", err, tc.want)
			}
		})
	}
}
