package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/paths"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// skipOrFail skips a test that needs a standard user or group this system
// lacks, and fails it instead under SOCKFACTORY_REQUIRE_ROOT=1 (CI has
// them).
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	testnet.SkipOrFail(t, why)
}

// uidOf and gidOf look up the IDs a name should resolve to, so that the tests
// do not assume one distribution's numbering.
func uidOf(t *testing.T, name string) uint32 {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		skipOrFail(t, fmt.Sprintf("user %q does not exist here: %v", name, err))
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		t.Fatalf("uid of %q: %v", name, err)
	}
	return uint32(n)
}

func gidOf(t *testing.T, name string) uint32 {
	t.Helper()
	g, err := user.LookupGroup(name)
	if err != nil {
		skipOrFail(t, fmt.Sprintf("group %q does not exist here: %v", name, err))
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		t.Fatalf("gid of %q: %v", name, err)
	}
	return uint32(n)
}

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse("test.toml", []byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v\ndocument:\n%s", err, doc)
	}
	return c
}

// dests renders a rule's patterns in ParseDest's form.
func dests(r policy.Rule) []string {
	var s []string
	for _, d := range r.Connect {
		s = append(s, d.String())
	}
	return s
}

const fullDoc = `# A document setting everything.
[daemon]
socket = "/run/sf-test/sockfactory.sock"
socket_mode = "0600"
socket_group = "nogroup"
log_format = "json"
log_level = "debug"
max_in_flight = 8

[connect]
timeout = "3s"
min_attempt = "500ms"

[resolver]
servers = ["127.0.0.53:53", "[::1]:5353"]

[[rule]]
name = "admins"
users = ["root", 65534, "1"]
groups = ["daemon", 7, "65534"]
connect = [
  "192.0.2.10:443",
  "10.0.0.0/8:8000-8099",
  "[2001:db8::/32]:*",
  "SAS.Example.NET.:443",
  "*.example.org:*",
]

[[rule]]
groups = ["nogroup"]
`

func TestParseFull(t *testing.T) {
	nogroup, daemon, root := gidOf(t, "nogroup"), gidOf(t, "daemon"), uidOf(t, "root")
	c := mustParse(t, fullDoc)

	checks := []struct {
		name      string
		got, want any
	}{
		{"Socket", c.Socket, "/run/sf-test/sockfactory.sock"},
		{"SocketMode", c.SocketMode, os.FileMode(0o600)},
		{"SocketGID", c.SocketGID, int(nogroup)},
		{"LogJSON", c.LogJSON, true},
		{"LogLevel", c.LogLevel, slog.LevelDebug},
		{"MaxInFlight", c.MaxInFlight, 8},
		{"ConnectTimeout", c.ConnectTimeout, 3 * time.Second},
		{"MinAttempt", c.MinAttempt, 500 * time.Millisecond},
		{"ResolverServers", c.ResolverServers, []string{"127.0.0.53:53", "[::1]:5353"}},
		{"Source", c.Source, "test.toml"},
		{"rules", len(c.Policy.Rules), 2},
		{"rule 0 name", c.Policy.Rules[0].Name, "admins"},
		{"rule 0 UIDs", c.Policy.Rules[0].UIDs, []uint32{root, 65534, 1}},
		{"rule 0 GIDs", c.Policy.Rules[0].GIDs, []uint32{daemon, 7, 65534}},
		{"rule 0 connect", dests(c.Policy.Rules[0]), []string{
			"192.0.2.10:443", "10.0.0.0/8:8000-8099", "[2001:db8::/32]:*", "sas.example.net:443", "*.example.org:*",
		}},
		{"rule 1 name", c.Policy.Rules[1].Name, "rule[1]"},
		{"rule 1 UIDs", c.Policy.Rules[1].UIDs, []uint32(nil)},
		{"rule 1 GIDs", c.Policy.Rules[1].GIDs, []uint32{nogroup}},
		{"rule 1 connect", dests(c.Policy.Rules[1]), []string(nil)},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			if !equal(tc.got, tc.want) {
				t.Errorf("got %#v, want %#v", tc.got, tc.want)
			}
		})
	}
}

func equal(a, b any) bool {
	switch a := a.(type) {
	case []string:
		return slices.Equal(a, b.([]string))
	case []uint32:
		return slices.Equal(a, b.([]uint32))
	}
	return a == b
}

// TestParseFullDecisions checks that the parsed rules decide as written.
func TestParseFullDecisions(t *testing.T) {
	daemonMember := &policy.Caller{UID: 4242, GID: 4242, Groups: []uint32{gidOf(t, "daemon")}}
	gidOf(t, "nogroup")
	p := mustParse(t, fullDoc).Policy
	root := &policy.Caller{UID: 0, GID: 0}
	stranger := &policy.Caller{UID: 4242, GID: 4242}
	tests := []struct {
		name   string
		caller *policy.Caller
		host   string
		port   uint16
		want   string // the rule that allows, or "" for denied
	}{
		{"root ip", root, "192.0.2.10", 443, "admins"},
		{"root ip wrong port", root, "192.0.2.10", 80, ""},
		{"root cidr range", root, "10.1.2.3", 8099, "admins"},
		{"root cidr outside range", root, "10.1.2.3", 8100, ""},
		{"root ipv6 cidr any port", root, "2001:db8::1", 1, "admins"},
		{"root name case-insensitive", root, "sas.example.net", 443, "admins"},
		{"root wildcard", root, "a.b.example.org", 22, "admins"},
		{"root wildcard not apex", root, "example.org", 22, ""},
		{"supplementary group", daemonMember, "192.0.2.10", 443, "admins"},
		{"stranger", stranger, "192.0.2.10", 443, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d policy.Decision
			if a, err := netip.ParseAddr(tc.host); err == nil {
				d = p.ConnectIP(tc.caller, a, tc.port)
			} else {
				d = p.ConnectName(tc.caller, tc.host, tc.port)
			}
			if d.Rule != tc.want || d.Allowed != (tc.want != "") {
				t.Errorf("%s:%d: got %+v, want rule %q", tc.host, tc.port, d, tc.want)
			}
		})
	}
}

// TestParseDefaults checks what an empty document and each section's absent
// keys yield.
func TestParseDefaults(t *testing.T) {
	t.Setenv(paths.EnvSocket, "/tmp/sf-env/sockfactory.sock")
	for _, doc := range []string{"", "[daemon]\n[connect]\n[resolver]\n", "# only a comment\n"} {
		t.Run(strconv.Quote(doc), func(t *testing.T) {
			c := mustParse(t, doc)
			checks := []struct {
				name      string
				got, want any
			}{
				{"Socket", c.Socket, "/tmp/sf-env/sockfactory.sock"},
				{"SocketMode", c.SocketMode, DefaultSocketMode},
				{"SocketGID", c.SocketGID, -1},
				{"LogJSON", c.LogJSON, false},
				{"LogLevel", c.LogLevel, slog.LevelInfo},
				{"MaxInFlight", c.MaxInFlight, DefaultMaxInFlight},
				{"ConnectTimeout", c.ConnectTimeout, DefaultConnectTimeout},
				{"MinAttempt", c.MinAttempt, DefaultMinAttempt},
				{"ResolverServers", len(c.ResolverServers), 0},
				{"Policy set", c.Policy != nil, true},
			}
			for _, tc := range checks {
				if tc.got != tc.want {
					t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
				}
			}
			if c.Policy != nil && len(c.Policy.Rules) != 0 {
				t.Errorf("rules: got %d, want 0: a file without rules grants nothing", len(c.Policy.Rules))
			}
		})
	}
}

// TestParseValues covers each setting's accepted spellings.
func TestParseValues(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		get  func(*Config) any
		want any
	}{
		{"socket_group by name", "[daemon]\nsocket_group = \"root\"\n", func(c *Config) any { return c.SocketGID }, 0},
		{"socket_group by number", "[daemon]\nsocket_group = \"4242\"\n", func(c *Config) any { return c.SocketGID }, 4242},
		{"socket_mode without leading zero", "[daemon]\nsocket_mode = \"666\"\n", func(c *Config) any { return c.SocketMode }, os.FileMode(0o666)},
		{"socket_mode 0777", "[daemon]\nsocket_mode = \"0777\"\n", func(c *Config) any { return c.SocketMode }, os.FileMode(0o777)},
		{"socket_mode 0", "[daemon]\nsocket_mode = \"0\"\n", func(c *Config) any { return c.SocketMode }, os.FileMode(0)},
		{"log_format text", "[daemon]\nlog_format = \"text\"\n", func(c *Config) any { return c.LogJSON }, false},
		{"log_level warn", "[daemon]\nlog_level = \"warn\"\n", func(c *Config) any { return c.LogLevel }, slog.LevelWarn},
		{"log_level upper case", "[daemon]\nlog_level = \"ERROR\"\n", func(c *Config) any { return c.LogLevel }, slog.LevelError},
		{"max_in_flight 1", "[daemon]\nmax_in_flight = 1\n", func(c *Config) any { return c.MaxInFlight }, 1},
		{"max_in_flight 4096", "[daemon]\nmax_in_flight = 4096\n", func(c *Config) any { return c.MaxInFlight }, 4096},
		{"timeout in minutes", "[connect]\ntimeout = \"1m30s\"\n", func(c *Config) any { return c.ConnectTimeout }, 90 * time.Second},
		{"dotted key", "daemon.socket = \"/a/b.sock\"\n", func(c *Config) any { return c.Socket }, "/a/b.sock"},
		{"CRLF line ends", "[daemon]\r\nsocket = \"/a/b.sock\"\r\n", func(c *Config) any { return c.Socket }, "/a/b.sock"},
		{"user root by name", "[[rule]]\nusers = [\"root\"]\n", firstUID, uint32(0)},
		{"user 0 as integer", "[[rule]]\nusers = [0]\n", firstUID, uint32(0)},
		{"user 0 as string", "[[rule]]\nusers = [\"0\"]\n", firstUID, uint32(0)},
		{"user unknown number as integer", "[[rule]]\nusers = [123456]\n", firstUID, uint32(123456)},
		{"user unknown number as string", "[[rule]]\nusers = [\"123456\"]\n", firstUID, uint32(123456)},
		{"user largest", "[[rule]]\nusers = [4294967294]\n", firstUID, uint32(4294967294)},
		{"group root by name", "[[rule]]\ngroups = [\"root\"]\n", firstGID, uint32(0)},
		{"group as integer", "[[rule]]\ngroups = [990]\n", firstGID, uint32(990)},
		{"group as string", "[[rule]]\ngroups = [\"990\"]\n", firstGID, uint32(990)},
		{"rules as inline array", "rule = [{name = \"x\", users = [7]}]\n", firstUID, uint32(7)},
		{"rule name", "[[rule]]\nname = \"ops\"\nusers = [0]\n", func(c *Config) any { return c.Policy.Rules[0].Name }, "ops"},
		{"rule without connect", "[[rule]]\nusers = [0]\n", func(c *Config) any { return len(c.Policy.Rules[0].Connect) }, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.get(mustParse(t, tc.doc)); got != tc.want {
				t.Errorf("got %v (%T), want %v (%T)", got, got, tc.want, tc.want)
			}
		})
	}
}

func firstUID(c *Config) any { return c.Policy.Rules[0].UIDs[0] }
func firstGID(c *Config) any { return c.Policy.Rules[0].GIDs[0] }

// TestParseErrors checks that every error is an *Error naming the file and
// the line to fix. msg is a fragment that identifies which check fired.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		line int
		msg  string
	}{
		// Unknown keys, in each section.
		{"unknown top-level key", "# c\nbogus = 1\n", 2, `unknown setting "bogus"`},
		{"unknown table", "# c\n\n[bogus]\nx = 1\n", 3, `unknown setting "bogus"`},
		{"unknown key in daemon", "[daemon]\nsocket = \"/a\"\nsockett = \"/b\"\n", 3, `unknown setting "daemon.sockett"`},
		{"unknown key in connect", "[connect]\ntimeout = \"1s\"\n\nretries = 3\n", 4, `unknown setting "connect.retries"`},
		{"unknown key in resolver", "[resolver]\n\nserver = \"127.0.0.53:53\"\n", 3, `unknown setting "resolver.server"`},
		{"unknown key in second rule", "[[rule]]\nusers = [0]\nconnect = [\"a.example:1\"]\n\n[[rule]]\nusers = [0]\nallow = [\"a.example:1\"]\n", 7, `unknown setting "rule.allow"`},
		{"unknown key in inline rule", "rule = [\n  {users = [0]},\n  {users = [0], bogus = 1},\n]\n", 3, `unknown setting "bogus"`},

		// Network namespaces.
		{"rule netns bad name", "[[rule]]\nusers = [0]\n\nnetns = [\"ok\", \"../etc\"]\n", 4, `rule "rule[0]": netns: network namespace name "../etc"`},
		{"netns dir relative", "[netns]\n\ndir = \"run/netns\"\n", 3, `[netns] dir "run/netns": must be an absolute path`},
		{"netns etc_dir relative", "[netns]\netc_dir = \"etc\"\n", 2, `[netns] etc_dir "etc": must be an absolute path`},
		{"resolver.netns bad server", "[resolver.netns]\nsig = [\"10.0.0.53\"]\n", 2, `[resolver.netns] sig: server "10.0.0.53": want a numeric ip:port`},
		{"resolver.netns caller", "[resolver.netns]\ncaller = [\"10.0.0.53:53\"]\n", 2, `[resolver.netns] "caller": want the name of a namespace`},
		{"clearwater netns caller", "[[clearwater]]\nsocket = \"/run/cw.sock\"\nallowed_hosts = [\"10.0.0.1\"]\nnetns = \"caller\"\n", 4, `netns "caller": want the name of a namespace`},

		// Wrong TOML types.
		{"socket not a string", "[daemon]\n\nsocket = 1\n", 3, "cannot decode TOML integer"},
		{"socket_mode as integer", "[daemon]\nsocket_mode = 0o660\n", 2, `socket_mode must be a quoted octal string: socket_mode = "0660"`},
		{"socket_group as integer", "[daemon]\nsocket_group = 0\n", 2, "cannot decode TOML integer"},
		{"max_in_flight as string", "[daemon]\nmax_in_flight = \"8\"\n", 2, "cannot decode TOML string"},
		{"max_in_flight as float", "[daemon]\nmax_in_flight = 8.5\n", 2, "cannot decode TOML float"},
		{"timeout as integer", "[connect]\n\ntimeout = 10\n", 3, "cannot decode TOML integer"},
		{"min_attempt as boolean", "[connect]\nmin_attempt = true\n", 2, "cannot decode TOML boolean"},
		{"servers not an array", "[resolver]\nservers = \"127.0.0.53:53\"\n", 2, "cannot decode TOML string"},
		{"users not an array", "[[rule]]\nusers = \"root\"\n", 2, "cannot decode TOML string"},
		{"connect element not a string", "[[rule]]\nusers = [0]\nconnect = [\"a.example:1\", 2]\n", 3, "cannot decode TOML integer"},
		{"daemon not a table", "daemon = 1\n", 1, "cannot decode TOML integer"},
		{"user float", "[[rule]]\nname = \"r\"\nusers = [1.5]\n", 3, `user 1.5: want a name or a number`},
		{"group array", "[[rule]]\ngroups = [\n  0,\n  [1],\n]\n", 4, `want a name or a number`},

		// TOML syntax.
		{"duplicate key", "[daemon]\nsocket = \"/a\"\nsocket = \"/b\"\n", 3, "already defined"},
		{"duplicate table", "[daemon]\n[connect]\n[daemon]\n", 3, "already exists"},
		{"unclosed header", "# c\n\n[daemon\n", 3, "']'"},
		{"integer too large", "[daemon]\nmax_in_flight = 99999999999999999999\n", 2, "too large"},

		// Durations.
		{"timeout without unit", "[connect]\ntimeout = \"10\"\n", 2, `timeout: bad duration "10"`},
		{"min_attempt not a duration", "[connect]\ntimeout = \"1s\"\nmin_attempt = \"fast\"\n", 3, `min_attempt: bad duration "fast"`},
		{"timeout empty", "[connect]\ntimeout = \"\"\n", 2, `timeout: bad duration ""`},
		{"timeout zero", "[connect]\n# none\ntimeout = \"0s\"\n", 3, `timeout: duration "0s" must be positive`},
		{"min_attempt negative", "[connect]\nmin_attempt = \"-1s\"\n", 2, `min_attempt: duration "-1s" must be positive`},

		// [daemon] values.
		{"socket relative", "[daemon]\nlog_level = \"info\"\nsocket = \"run/sf.sock\"\n", 3, `socket "run/sf.sock" must be an absolute path`},
		{"socket relative, dotted key", "# c\ndaemon.socket = \"sf.sock\"\n", 2, "must be an absolute path"},
		{"socket relative, quoted key", "[daemon]\n\"socket\" = \"sf.sock\"\n", 2, "must be an absolute path"},
		{"socket relative, inline table", "# c\ndaemon = {log_level = \"info\", socket = \"sf.sock\"}\n", 2, "must be an absolute path"},
		{"timeout zero, inline table", "# c\n\nconnect = { min_attempt = \"1s\", timeout = \"0s\" }\n", 3, "must be positive"},
		{"socket relative after a commented key", "[daemon]\n# see daemon.socket = \"/run/x\"\nsocket = \"sf.sock\"\n", 3, "must be an absolute path"},
		{"socket_mode not octal", "[daemon]\nsocket_mode = \"0888\"\n", 2, `socket_mode "0888"`},
		{"socket_mode with prefix", "[daemon]\nsocket_mode = \"0o660\"\n", 2, `socket_mode "0o660"`},
		{"socket_mode setuid", "[daemon]\n\nsocket_mode = \"4755\"\n", 3, `socket_mode "4755"`},
		{"socket_mode words", "[daemon]\nsocket_mode = \"rw-rw----\"\n", 2, `socket_mode "rw-rw----"`},
		{"socket_group unknown", "[daemon]\nsocket_group = \"no-such-group-sf\"\n", 2, `socket_group: "no-such-group-sf": no such group`},
		{"log_format unknown", "[daemon]\nlog_format = \"yaml\"\n", 2, `log_format "yaml"`},
		{"log_level unknown", "[daemon]\n\n\nlog_level = \"verbose\"\n", 4, `log_level "verbose"`},
		{"max_in_flight zero", "[daemon]\nmax_in_flight = 0\n", 2, "max_in_flight 0: want 1 to 4096"},
		{"max_in_flight negative", "[daemon]\nmax_in_flight = -1\n", 2, "max_in_flight -1"},
		{"max_in_flight too large", "[daemon]\nmax_in_flight = 4097\n", 2, "max_in_flight 4097"},

		// [resolver].
		{"resolver server without port", "[resolver]\nservers = [\"127.0.0.53\"]\n", 2, `resolver server "127.0.0.53"`},
		{"resolver server by name", "[resolver]\nservers = [\n  \"127.0.0.53:53\",\n  \"dns.example:53\",\n]\n", 4, `resolver server "dns.example:53"`},
		{"resolver server unbracketed ipv6", "[resolver]\nservers = [\"::1:53\"]\n", 2, `resolver server "::1:53"`},
		{"resolver server after the same text elsewhere", "# servers = [\"10.0.0.1\"]\n[[rule]]\nname = \"10.0.0.1\"\nusers = [0]\n\n[resolver]\nservers = [\"10.0.0.1\"]\n", 7, `resolver server "10.0.0.1"`},

		// Rules.
		{"rule without principals", "[[rule]]\nusers = [0]\n\n[[rule]]\nname = \"empty\"\nconnect = [\"a.example:1\"]\n", 4, `rule "empty" names no users or groups`},
		{"rule with empty principals", "[[rule]]\nusers = []\ngroups = []\n", 1, `rule "rule[0]" names no users or groups`},
		{"third rule without principals, header with comment", "[[rule]]\nusers = [0]\n[[rule]]\nusers = [0]\n[[ rule ]] # ops\nname = \"ops\"\n", 5, `rule "ops" names no users or groups`},
		{"second rule without principals, quoted header", "[[rule]]\nusers = [0]\n\n[[ \"rule\" ]]\nconnect = []\n", 4, `rule "rule[1]" names no users or groups`},
		{"unknown user", "[[rule]]\nname = \"r\"\nusers = [\"root\", \"no-such-user-sf\"]\n", 3, `rule "r": user "no-such-user-sf": no such user`},
		{"unknown user named like the rule", "[[rule]]\nname = \"no-such-user-sf\"\nusers = [\"no-such-user-sf\"]\n", 3, `user "no-such-user-sf": no such user`},
		{"unknown group", "[[rule]]\nusers = [0]\ngroups = [\n  \"root\",\n  \"no-such-group-sf\",\n]\n", 5, `group "no-such-group-sf": no such group`},
		{"user negative", "[[rule]]\nusers = [-1]\n", 2, "user -1: out of range"},
		{"user 2^32-1", "[[rule]]\n\nusers = [4294967295]\n", 3, "user 4294967295: out of range"},
		{"group 2^32", "[[rule]]\ngroups = [4294967296]\n", 2, "group 4294967296: out of range"},
		{"user with NUL", "[[rule]]\nusers = [\"root\\u0000x\"]\n", 2, `user "root\x00x": no such user`},
		{"group with NUL", "[[rule]]\ngroups = [\"root\\u0000x\"]\n", 2, `group "root\x00x": no such group`},
		{"socket_group with NUL", "[daemon]\nsocket_group = \"root\\u0000x\"\n", 2, `socket_group: "root\x00x": no such group`},
		{"connect without port", "[[rule]]\nusers = [0]\nconnect = [\"mgmt.example.net\"]\n", 3, `rule "rule[0]": connect: destination "mgmt.example.net" has no port`},
		{
			"bad pattern in second rule, same text earlier in first",
			`# Earlier lines hold the same text; the error must name line 14.
[[rule]]
name = "ops"
users = [0]
# connect = ["10.0.0.1/8:*"] was refused: host bits
connect = ["10.0.0.0/8:*"]

[[rule]]
name = "10.0.0.1/8:*"
users = [0]
connect = [
  "192.0.2.1:80",
  "example.net:443",
  "10.0.0.1/8:*",
]
`, 14, `rule "10.0.0.1/8:*": connect: destination "10.0.0.1/8:*"`,
		},
		{"bad pattern short ipv4", "[[rule]]\nusers = [0]\nconnect = [\"127.1:80\"]\n", 3, `bad address "127.1" in rule "rule[0]" connect: an IPv4 address has four numbers`},
		{"bad pattern hex host", "[[rule]]\nusers = [0]\nconnect = [\"0x7f000001:80\"]\n", 3, "last label is numeric"},
		{"bad pattern unbracketed ipv6", "[[rule]]\nusers = [0]\nconnect = ['::1:80']\n", 3, "write IPv6 addresses in brackets"},
		{"bad pattern port range reversed", "[[rule]]\nusers = [0]\nconnect = [\n\"a.example:90-80\"]\n", 4, "is empty"},
		{"bad pattern wildcard alone", "[[rule]]\nusers = [0]\nconnect = [\"*:80\"]\n", 3, `contains '*'`},
		{"bad pattern in CRLF file", "[[rule]]\r\nusers = [0]\r\n\r\nconnect = [\"a..b:1\"]\r\n", 4, "empty label"},
		{"bad pattern in inline rules", "rule = [\n  {users = [0], connect = [\"a.example:1\"]},\n  {users = [0], connect = [\"a.example:x\"]},\n]\n", 3, `port "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("test.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("got %+v, want an error at line %d\ndocument:\n%s", c, tc.line, tc.doc)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %T %v, want *config.Error", err, err)
			}
			if e.File != "test.toml" || e.Line != tc.line {
				t.Errorf("got %s:%d, want test.toml:%d (error: %v)\ndocument:\n%s", e.File, e.Line, tc.line, err, tc.doc)
			}
			if !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got message %q, want it to contain %q", e.Msg, tc.msg)
			}
		})
	}
}

func TestParseNetns(t *testing.T) {
	c, err := Parse("test.toml", []byte(`
[netns]
dir = "/run/netns/"
etc_dir = "/srv/netns"
[resolver.netns]
signalling = ["10.1.0.53:53", "[fd00::53]:53"]
[[rule]]
name = "sip"
users = [0]
netns = ["signalling", "caller", "daemon"]
[[rule]]
name = "plain"
users = [0]
[[clearwater]]
socket = "/run/cw-sig.sock"
allowed_hosts = ["10.1.0.10"]
netns = "signalling"
[[clearwater]]
socket = "/run/cw-mgmt.sock"
allowed_hosts = ["10.0.0.10"]
netns = "daemon"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NetnsDir != "/run/netns" || c.NetnsEtcDir != "/srv/netns" {
		t.Errorf("dirs: %q, %q; want /run/netns, /srv/netns", c.NetnsDir, c.NetnsEtcDir)
	}
	if got := c.ResolverNetns["signalling"]; !slices.Equal(got, []string{"10.1.0.53:53", "[fd00::53]:53"}) {
		t.Errorf("resolver.netns signalling: %v", got)
	}
	if got := c.Policy.Rules[0].Netns; !slices.Equal(got, []string{"signalling", "caller", "daemon"}) {
		t.Errorf("rule netns: %v", got)
	}
	if c.Policy.Rules[1].Netns != nil {
		t.Errorf("a rule without netns: %v, want nil (the daemon's own only)", c.Policy.Rules[1].Netns)
	}
	if c.Clearwater[0].Netns != "signalling" || c.Clearwater[1].Netns != "" {
		t.Errorf("clearwater netns: %q, %q; want signalling and the daemon's own", c.Clearwater[0].Netns, c.Clearwater[1].Netns)
	}
	d, err := Parse("test.toml", []byte("[[rule]]\nusers = [0]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.NetnsDir != "/run/netns" || d.NetnsEtcDir != "/etc/netns" {
		t.Errorf("default dirs: %q, %q", d.NetnsDir, d.NetnsEtcDir)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		e    *Error
		want string
	}{
		{&Error{"a.toml", 3, "bad"}, "a.toml:3: bad"},
		{&Error{"a.toml", 0, "bad"}, "a.toml: bad"},
	}
	for _, tc := range tests {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(t.TempDir() + "/none.toml")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want an error wrapping fs.ErrNotExist", err)
		}
	})
	t.Run("error names the path", func(t *testing.T) {
		path := t.TempDir() + "/bad.toml"
		if err := os.WriteFile(path, []byte("[daemon]\nlog_format = \"xml\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		var e *Error
		if !errors.As(err, &e) || e.File != path || e.Line != 2 {
			t.Errorf("got %v, want a *config.Error at %s:2", err, path)
		}
	})
}

func TestDefault(t *testing.T) {
	t.Setenv(paths.EnvSocket, "")
	c := Default()
	self := uint32(os.Getuid())

	wantUIDs := []uint32{0}
	if self != 0 {
		wantUIDs = append(wantUIDs, self)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Socket", c.Socket, paths.DaemonSocket()},
		{"SocketMode", c.SocketMode, DefaultSocketMode},
		{"SocketGID", c.SocketGID, -1},
		{"LogJSON", c.LogJSON, false},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"MaxInFlight", c.MaxInFlight, DefaultMaxInFlight},
		{"ConnectTimeout", c.ConnectTimeout, DefaultConnectTimeout},
		{"MinAttempt", c.MinAttempt, DefaultMinAttempt},
		{"ResolverServers", c.ResolverServers, []string(nil)},
		{"Source", c.Source, "built-in default"},
		{"rules", len(c.Policy.Rules), 1},
		{"rule name", c.Policy.Rules[0].Name, "builtin-loopback"},
		{"rule UIDs", c.Policy.Rules[0].UIDs, wantUIDs},
		{"rule GIDs", c.Policy.Rules[0].GIDs, []uint32(nil)},
		{"rule connect", dests(c.Policy.Rules[0]), []string{"127.0.0.0/8:*", "[::1]:*", "localhost:*"}},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			if !equal(tc.got, tc.want) {
				t.Errorf("got %#v, want %#v", tc.got, tc.want)
			}
		})
	}
	if os.Geteuid() == 0 && c.Socket != paths.SystemSocket {
		t.Errorf("as root: socket %q, want %q", c.Socket, paths.SystemSocket)
	}
}

func TestDefaultSocketEnv(t *testing.T) {
	t.Setenv(paths.EnvSocket, "/tmp/sf-override/s.sock")
	if got, want := Default().Socket, "/tmp/sf-override/s.sock"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestDefaultDecisions checks that the built-in policy grants root and the
// daemon's own user loopback and nothing else, and nobody else anything.
func TestDefaultDecisions(t *testing.T) {
	p := Default().Policy
	callers := map[string]*policy.Caller{
		"root": {UID: 0, GID: 0},
		"self": {UID: uint32(os.Getuid()), GID: uint32(os.Getgid())},
	}
	tests := []struct {
		host string
		port uint16
		want bool
	}{
		{"127.0.0.1", 80, true},
		{"127.0.0.1", 1, true},
		{"127.255.255.254", 65535, true},
		{"::1", 443, true},
		{"::ffff:127.0.0.1", 443, true},
		{"localhost", 5432, true},
		{"LOCALHOST.", 5432, true},
		{"192.0.2.1", 80, false},
		{"128.0.0.1", 80, false},
		{"::2", 80, false},
		{"::ffff:192.0.2.1", 80, false},
		{"example.net", 80, false},
		{"a.localhost", 80, false},
		{"127.1", 80, false},
		{"0x7f000001", 80, false},
	}
	for who, c := range callers {
		for _, tc := range tests {
			t.Run(who+" "+tc.host, func(t *testing.T) {
				var d policy.Decision
				if a, err := netip.ParseAddr(tc.host); err == nil {
					d = p.ConnectIP(c, a, tc.port)
				} else {
					d = p.ConnectName(c, tc.host, tc.port)
				}
				if d.Allowed != tc.want {
					t.Errorf("%s:%d: got %+v, want allowed=%v", tc.host, tc.port, d, tc.want)
				}
				if d.Allowed && d.Rule != "builtin-loopback" {
					t.Errorf("rule: got %q, want builtin-loopback", d.Rule)
				}
			})
		}
	}
	t.Run("nobody", func(t *testing.T) {
		// Any uid but root and the tests' own: the default grants those.
		uid := uint32(65534)
		if os.Getuid() == 65534 {
			uid = 65533
		}
		c := &policy.Caller{UID: uid, GID: 65534, Groups: []uint32{0}}
		if p.Known(c) {
			t.Errorf("Known(uid 65534) = true, want false")
		}
		if d := p.ConnectIP(c, netip.MustParseAddr("127.0.0.1"), 80); d.Allowed {
			t.Errorf("uid 65534 to 127.0.0.1:80: got %+v, want denied", d)
		}
		if p.ConnectAnyIP(c, 80) {
			t.Errorf("ConnectAnyIP(uid 65534) = true, want false")
		}
	})
}

const examplePath = "../../examples/sockfactoryd.toml"

// TestExample checks that the shipped example loads, sets every default it
// claims to, and grants what its comments say.
func TestExample(t *testing.T) {
	t.Setenv(paths.EnvSocket, "/tmp/sf-example/s.sock")
	c, err := Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	def := mustParse(t, "")
	checks := []struct {
		name      string
		got, want any
	}{
		{"Socket", c.Socket, def.Socket},
		{"SocketMode", c.SocketMode, def.SocketMode},
		{"SocketGID", c.SocketGID, def.SocketGID},
		{"LogJSON", c.LogJSON, def.LogJSON},
		{"LogLevel", c.LogLevel, def.LogLevel},
		{"MaxInFlight", c.MaxInFlight, def.MaxInFlight},
		{"ConnectTimeout", c.ConnectTimeout, def.ConnectTimeout},
		{"MinAttempt", c.MinAttempt, def.MinAttempt},
		{"ResolverServers", len(c.ResolverServers), 0},
		{"rules", len(c.Policy.Rules), 3},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want the default %v", tc.name, tc.got, tc.want)
		}
	}

	p := c.Policy
	sip := &policy.Caller{UID: uidOf(t, "daemon"), GID: 4242}
	monitor := &policy.Caller{UID: 4242, GID: 4242, Groups: []uint32{990}}
	root := &policy.Caller{UID: 0, GID: 0}
	tests := []struct {
		name   string
		caller *policy.Caller
		host   string
		port   uint16
		want   string
	}{
		{"sip to SAS by name", sip, "sas.mgmt.example.net", 6761, "sip-to-management"},
		{"sip to SAS other port", sip, "sas.mgmt.example.net", 22, ""},
		{"sip to management subnet", sip, "10.20.0.7", 8080, "sip-to-management"},
		{"sip to management subnet ssh", sip, "10.20.0.7", 22, ""},
		{"sip to management v6", sip, "2001:db8:20::7", 8000, "sip-to-management"},
		{"sip to other subnet", sip, "10.21.0.7", 8080, ""},
		{"sip to loopback", sip, "127.0.0.1", 8080, ""},
		{"monitor to node", monitor, "node1.mon.example.net", 9100, "monitoring"},
		{"monitor to apex", monitor, "mon.example.net", 9100, ""},
		{"monitor to SAS", monitor, "sas.mgmt.example.net", 6761, ""},
		{"root to loopback", root, "127.0.0.1", 9, "local-admin"},
		{"root to localhost", root, "localhost", 9, "local-admin"},
		{"root to management", root, "10.20.0.7", 8080, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d policy.Decision
			if a, err := netip.ParseAddr(tc.host); err == nil {
				d = p.ConnectIP(tc.caller, a, tc.port)
			} else {
				d = p.ConnectName(tc.caller, tc.host, tc.port)
			}
			if d.Rule != tc.want || d.Allowed != (tc.want != "") {
				t.Errorf("%s:%d: got %+v, want rule %q", tc.host, tc.port, d, tc.want)
			}
		})
	}
}

// FuzzParse checks that no document makes Parse panic, that every error is an
// *Error whose line is in the document, and that every accepted document
// yields a configuration the daemon can run on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(fullDoc))
	if b, err := os.ReadFile(examplePath); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %T %v, want *config.Error", err, err)
			}
			if lines := bytes.Count(data, []byte("\n")) + 1; e.Line < 0 || e.Line > lines {
				t.Fatalf("line %d outside the document's %d lines: %v", e.Line, lines, err)
			}
			return
		}
		switch {
		case c.Policy == nil:
			t.Fatal("nil policy")
		case !strings.HasPrefix(c.Socket, "/") && c.Socket != paths.DaemonSocket():
			t.Fatalf("socket %q is not absolute", c.Socket)
		case c.SocketMode&^0o777 != 0:
			t.Fatalf("socket mode %o has bits beyond 0777", c.SocketMode)
		case c.SocketGID < -1:
			t.Fatalf("socket gid %d", c.SocketGID)
		case c.ConnectTimeout <= 0 || c.MinAttempt <= 0:
			t.Fatalf("durations %v, %v not positive", c.ConnectTimeout, c.MinAttempt)
		case c.MaxInFlight < 1 || c.MaxInFlight > 4096:
			t.Fatalf("max_in_flight %d", c.MaxInFlight)
		}
		for _, s := range c.ResolverServers {
			if _, err := netip.ParseAddrPort(s); err != nil {
				t.Fatalf("resolver server %q accepted: %v", s, err)
			}
		}
		for _, r := range c.Policy.Rules {
			if len(r.UIDs) == 0 && len(r.GIDs) == 0 {
				t.Fatalf("rule %q has no principals", r.Name)
			}
			for _, d := range r.Connect {
				if _, err := policy.ParseDest(d.String()); err != nil {
					t.Fatalf("rule %q: pattern %q does not parse again: %v", r.Name, d, err)
				}
			}
		}
	})
}

// TestParseErrorMessages: the exact text of errors that used to come from a
// library (issue 11.4): go-toml's "integers cannot have leading zeroes" or a
// dump of the Go struct for an unquoted socket_mode; netip's function names
// for a bad CIDR or address. Unknown keys suggest the nearest known one.
func TestParseErrorMessages(t *testing.T) {
	const rule = "[[rule]]\nname = \"x\"\nusers = [0]\n"
	tests := []struct {
		name, doc, want string
	}{
		{"socket_mode leading zero", "[daemon]\nsocket_mode = 0660\n", `test.toml:2: socket_mode must be a quoted octal string: socket_mode = "0660"`},
		{"socket_mode integer", "[daemon]\n\nsocket_mode = 660 # rw-rw----\n", `test.toml:3: socket_mode must be a quoted octal string: socket_mode = "0660"`},
		{"socket_mode octal integer", "daemon.socket_mode = 0o660\n", `test.toml:1: socket_mode must be a quoted octal string: socket_mode = "0660"`},
		{"clearwater socket_mode leading zero", "[[clearwater]]\nsocket = \"/tmp/cw\"\nallowed_hosts = [\"a.example\"]\nsocket_mode = 0666\n", `test.toml:4: socket_mode must be a quoted octal string: socket_mode = "0660"`},
		{"other leading zero", "[daemon]\nmax_in_flight = 08\n", `test.toml:2: toml: integers cannot have leading zeroes`},
		{"CIDR too long", rule + "connect = [\"10.0.0.0/33:80\"]\n", `test.toml:4: bad CIDR "10.0.0.0/33" in rule "x" connect: prefix length must be 0-32 for IPv4`},
		{"IPv6 CIDR too long", rule + "connect = [\"[2001:db8::/129]:443\"]\n", `test.toml:4: bad CIDR "2001:db8::/129" in rule "x" connect: prefix length must be 0-128 for IPv6`},
		{"CIDR length not a number", rule + "connect = [\"10.0.0.0/x:80\"]\n", `test.toml:4: bad CIDR "10.0.0.0/x" in rule "x" connect: prefix length must be 0-32 for IPv4`},
		{"CIDR bad address", rule + "connect = [\"10.0.0.300/8:80\"]\n", `test.toml:4: bad CIDR "10.0.0.300/8" in rule "x" connect: each of the four numbers of an IPv4 address must be 0-255, without leading zeros`},
		{"address out of range", rule + "connect = [\"10.0.0.256:80\"]\n", `test.toml:4: bad address "10.0.0.256" in rule "x" connect: each of the four numbers of an IPv4 address must be 0-255, without leading zeros`},
		{"bad IPv6 address", rule + "connect = [\"[2001:db8::g]:80\"]\n", `test.toml:4: bad address "2001:db8::g" in rule "x" connect: not an IPv4 or IPv6 address`},
		{"host bits", rule + "connect = [\"10.0.0.1/8:80\"]\n", `test.toml:4: rule "x": connect: destination "10.0.0.1/8:80": CIDR "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`},
		{"bind CIDR too long", rule + "bind = [\"udp:10.0.0.0/33:53\"]\n", `test.toml:4: bad CIDR "10.0.0.0/33" in rule "x" bind: prefix length must be 0-32 for IPv4`},
		{"deny CIDR too long", "[connect]\ndeny = [\"0.0.0.0/8:*\", \"10.0.0.0/40:*\"]\n", `test.toml:2: bad CIDR "10.0.0.0/40" in deny: prefix length must be 0-32 for IPv4`},
		{"clearwater CIDR too long", "[[clearwater]]\nsocket = \"/tmp/cw\"\nallowed_hosts = [\"10.0.0.0/33\"]\n", `test.toml:3: bad CIDR "10.0.0.0/33" in clearwater /tmp/cw allowed_hosts: prefix length must be 0-32 for IPv4`},
		{"clearwater bare IPv6 CIDR too long", "[[clearwater]]\nsocket = \"/tmp/cw\"\nallowed_hosts = [\"2001:db8::/129\"]\n", `test.toml:3: bad CIDR "2001:db8::/129" in clearwater /tmp/cw allowed_hosts: prefix length must be 0-128 for IPv6`},
		{"name, not an address", rule + "connect = [\"bad_host!:80\"]\n", `test.toml:4: rule "x": connect: destination "bad_host!:80": host name "bad_host!" contains '!': only letters, digits, '-', '_' and '.' are allowed`},
		{"misspelled daemon key", "[daemon]\nsockt_mode = \"0660\"\n", `test.toml:2: unknown setting "daemon.sockt_mode": did you mean "socket_mode"? (see docs/configuration.md)`},
		{"misspelled rule key", rule + "conect = [\"a.example:1\"]\n", `test.toml:4: unknown setting "rule.conect": did you mean "connect"? (see docs/configuration.md)`},
		{"misspelled table", "[limts]\nsockets = 1\n", `test.toml:1: unknown setting "limts": did you mean "limits"? (see docs/configuration.md)`},
		{"misspelled clearwater key", "[[clearwater]]\nsocket = \"/tmp/cw\"\nallowed_host = [\"a.example\"]\n", `test.toml:3: unknown setting "clearwater.allowed_host": did you mean "allowed_hosts"? (see docs/configuration.md)`},
		{"misspelled limits key", "[limits]\nconnection_per_uid = 1\n", `test.toml:2: unknown setting "limits.connection_per_uid": did you mean "connections_per_uid"? (see docs/configuration.md)`},
		{"nothing close", "[daemon]\nbogus = 1\n", `test.toml:2: unknown setting "daemon.bogus" (see docs/configuration.md)`},
		{"short key, nothing close", "x = 1\n", `test.toml:1: unknown setting "x" (see docs/configuration.md)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("test.toml", []byte(tc.doc))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Parse:\n got  %v\n want %s\ndocument:\n%s", err, tc.want, tc.doc)
			}
		})
	}
}

func TestLevenshtein(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"socket_mode", "sockt_mode", 1}, {"limits", "limts", 1}, {"abc", "abc", 0}, {"ab", "ba", 2},
	} {
		if got := levenshtein(tc.a, tc.b); got != tc.want {
			t.Errorf("levenshtein(%q, %q) = %d; want %d", tc.a, tc.b, got, tc.want)
		}
		if got := levenshtein(tc.b, tc.a); got != tc.want {
			t.Errorf("levenshtein(%q, %q) = %d; want %d", tc.b, tc.a, got, tc.want)
		}
	}
}
