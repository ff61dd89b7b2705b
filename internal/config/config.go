// Package config reads the daemon's TOML configuration and turns it into
// the values the daemon runs on: listener settings, timeouts and a policy.
//
// It validates everything up front and names the line of each problem, so
// that a broken file is rejected before it replaces a working one. It must
// not open sockets or change the process; resolving user and group names
// (os/user) is its only lookup.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/sockfactory/sockfactory/internal/clearwater"
	"github.com/sockfactory/sockfactory/internal/netns"
	"github.com/sockfactory/sockfactory/internal/paths"
	"github.com/sockfactory/sockfactory/internal/policy"
)

// Limits bound what callers can make the daemon hold. Zero means no
// limit.
type Limits struct {
	// Connections and ConnectionsPerUID bound native client connections.
	Connections, ConnectionsPerUID int
	// Sockets and SocketsPerUID bound held bound-socket references.
	Sockets, SocketsPerUID int
	// Tokens and TokensPerUID bound pending tokens.
	Tokens, TokensPerUID int
	// IdleTimeout closes connections that hold nothing and ask nothing.
	IdleTimeout time.Duration
}

// DefaultLimits are the limits when the configuration sets none.
var DefaultLimits = Limits{
	Connections: 4096, ConnectionsPerUID: 256,
	Sockets: 65536, SocketsPerUID: 4096,
	Tokens: 4096, TokensPerUID: 256,
	IdleTimeout: 10 * time.Minute,
}

// AllBindOptions are the socket option names bind_options may list.
var AllBindOptions = []string{"reuseaddr", "reuseport", "v6only", "freebind", "transparent", "rcvbuf", "sndbuf", "bind_to_device", "pmtud_off", "fastopen", "defer_accept", "backlog", "listen"}

// Defaults.
const (
	DefaultSocketMode     os.FileMode = 0o660
	DefaultConnectTimeout             = 10 * time.Second
	DefaultMinAttempt                 = 2 * time.Second
	DefaultMaxInFlight                = 64
	DefaultTokenTTL                   = 30 * time.Second
	DefaultUpgradeTimeout             = 30 * time.Second
	DefaultStopTimeout                = 10 * time.Second
	DefaultReclaimGrace               = 30 * time.Second
)

// Config is a validated configuration.
type Config struct {
	// Socket is the native protocol's socket path.
	Socket string
	// SocketMode is the socket file's permission bits.
	SocketMode os.FileMode
	// SocketGID is the socket file's group, or -1 to leave it as created.
	SocketGID int
	// LogJSON selects JSON logs instead of text.
	LogJSON bool
	// LogLevel is the least level logged.
	LogLevel slog.Level
	// ConnectTimeout bounds a connect request when the client asks for no
	// shorter time.
	ConnectTimeout time.Duration
	// MinAttempt is the least time one address gets when several share the
	// connect budget.
	MinAttempt time.Duration
	// ResolverServers, when not empty, are the DNS servers (ip:port) the
	// daemon queries instead of the system's.
	ResolverServers []string
	// ResolverNetns are DNS servers (ip:port) per network namespace name
	// ([resolver.netns]), used instead of the namespace's resolv.conf
	// name servers for names resolved in it.
	ResolverNetns map[string][]string
	// NetnsDir holds the named network namespaces ([netns] dir, default
	// /run/netns); NetnsEtcDir their resolv.conf and hosts files, one
	// directory per name ([netns] etc_dir, default /etc/netns).
	NetnsDir, NetnsEtcDir string
	// MaxInFlight is the most requests one connection may have in flight.
	MaxInFlight int
	// TokenTTL is how long a token-only bind may be picked up.
	TokenTTL time.Duration
	// ReclaimGrace is how long, after a restart from systemd's fd store,
	// a reference whose connection was lost waits to be reclaimed.
	ReclaimGrace time.Duration
	// UpgradeTimeout bounds a live upgrade; StopTimeout how long a stop
	// waits for requests in flight.
	UpgradeTimeout, StopTimeout time.Duration
	// FDStore says whether to keep cached sockets in systemd's fd store
	// ([daemon] fd_store); nil: when systemd says it has one ($FDSTORE).
	FDStore *bool
	// Limits bound what callers can make the daemon hold.
	Limits Limits
	// User, when set and the daemon starts as root, is the account the
	// daemon drops to after opening its listeners, keeping only the
	// capabilities its rules need. UID and GID are its IDs: the account's,
	// or for a decimal uid with no passwd entry that number for both; GID
	// is [daemon] group's when that is set.
	User     string
	UID, GID int
	// Groups are the supplementary groups the dropped daemon keeps
	// ([daemon] supplementary_groups); empty: none.
	Groups []int
	// Policy holds the rules.
	Policy *policy.Policy
	// Clearwater lists the Clearwater-compatible listeners.
	Clearwater []Clearwater
	// MetricsListen is where Prometheus metrics are served ([metrics]
	// listen): a TCP ip:port, or an absolute path for a UNIX socket; ""
	// serves none (see docs/metrics.md).
	MetricsListen string
	// Source names where the configuration came from, for logs.
	Source string
}

// Clearwater configures one Clearwater-compatible listener.
type Clearwater struct {
	// Socket is the listener's path.
	Socket string
	// SocketMode is the socket file's permission bits (default 0660).
	SocketMode os.FileMode
	// SocketGID is the socket file's group, or -1.
	SocketGID int
	// AllowedHosts are host or host:port entries.
	AllowedHosts []string
	// AllowedHostsDirs are directories of files with one host per line.
	AllowedHostsDirs []string
	// IPv6 lets requests reach IPv6 destinations.
	IPv6 bool
	// ConnectTimeout bounds each request and is the socket's SO_SNDTIMEO
	// (default 30 s).
	ConnectTimeout time.Duration
	// ReadTimeout drops a client that sends no request in time (default
	// 10 s).
	ReadTimeout time.Duration
	// UIDs and GIDs, when not empty, restrict the callers served.
	UIDs, GIDs []uint32
	// Netns names the network namespace the listener's connections are
	// made in (a name under NetnsDir); "" means the daemon's own.
	Netns string
}

// Clearwater defaults.
const (
	DefaultClearwaterConnectTimeout = 30 * time.Second
	DefaultClearwaterReadTimeout    = 10 * time.Second
)

// NewClearwater returns a Clearwater listener configuration with the
// defaults, for listeners given on the command line.
func NewClearwater(socket string) Clearwater {
	return Clearwater{
		Socket:         socket,
		SocketMode:     DefaultSocketMode,
		SocketGID:      -1,
		ConnectTimeout: DefaultClearwaterConnectTimeout,
		ReadTimeout:    DefaultClearwaterReadTimeout,
	}
}

// AddClearwater validates a listener configuration (from the command line
// or a file) and adds it: its socket path must be absolute and not taken by
// the native socket or another listener.
func (c *Config) AddClearwater(cw Clearwater) error {
	if !strings.HasPrefix(cw.Socket, "/") {
		return fmt.Errorf("clearwater socket %q must be an absolute path", cw.Socket)
	}
	for _, h := range cw.AllowedHosts {
		if _, err := clearwater.ParseAllowed(h); err != nil {
			return err
		}
	}
	if cw.Socket == c.Socket {
		return fmt.Errorf("clearwater socket %q is also the native socket", cw.Socket)
	}
	for _, o := range c.Clearwater {
		if o.Socket == cw.Socket {
			return fmt.Errorf("clearwater socket %q is configured twice", cw.Socket)
		}
	}
	c.Clearwater = append(c.Clearwater, cw)
	return nil
}

// DefaultNetnsEtcDir is where `ip netns exec` finds a namespace's own
// resolv.conf and hosts (DefaultNetnsEtcDir/NAME/...).
const DefaultNetnsEtcDir = "/etc/netns"

// file mirrors the TOML document.
type file struct {
	Daemon struct {
		Socket      string `toml:"socket"`
		SocketMode  string `toml:"socket_mode"`
		SocketGroup string `toml:"socket_group"`
		LogFormat   string `toml:"log_format"`
		LogLevel    string `toml:"log_level"`
		MaxInFlight *int   `toml:"max_in_flight"`
		// Durations are parsed after decoding (see Connect).
		UpgradeTimeout *string `toml:"upgrade_timeout"`
		StopTimeout    *string `toml:"stop_timeout"`
		FDStore        *bool   `toml:"fd_store"`
		User           string  `toml:"user"`
		Group          string  `toml:"group"`
		// SupplementaryGroups holds names and numbers.
		SupplementaryGroups []any `toml:"supplementary_groups"`
	} `toml:"daemon"`
	Connect struct {
		// Durations are parsed after decoding, so that every error,
		// a wrong TOML type included, can name its line.
		Timeout    *string  `toml:"timeout"`
		MinAttempt *string  `toml:"min_attempt"`
		Deny       []string `toml:"deny"`
	} `toml:"connect"`
	Resolver struct {
		Servers []string            `toml:"servers"`
		Netns   map[string][]string `toml:"netns"`
	} `toml:"resolver"`
	Netns struct {
		Dir    string `toml:"dir"`
		EtcDir string `toml:"etc_dir"`
	} `toml:"netns"`
	Bind struct {
		TokenTTL     *string `toml:"token_ttl"`
		ReclaimGrace *string `toml:"reclaim_grace"`
	} `toml:"bind"`
	Limits struct {
		Connections       *int    `toml:"connections"`
		ConnectionsPerUID *int    `toml:"connections_per_uid"`
		Sockets           *int    `toml:"sockets"`
		SocketsPerUID     *int    `toml:"sockets_per_uid"`
		Tokens            *int    `toml:"tokens"`
		TokensPerUID      *int    `toml:"tokens_per_uid"`
		IdleTimeout       *string `toml:"idle_timeout"`
	} `toml:"limits"`
	Metrics struct {
		Listen string `toml:"listen"`
	} `toml:"metrics"`
	Rules      []ruleFile       `toml:"rule"`
	Clearwater []clearwaterFile `toml:"clearwater"`
}

type clearwaterFile struct {
	Socket           string   `toml:"socket"`
	SocketMode       string   `toml:"socket_mode"`
	SocketGroup      string   `toml:"socket_group"`
	AllowedHosts     []string `toml:"allowed_hosts"`
	AllowedHostsDirs []string `toml:"allowed_hosts_dirs"`
	IPv6             bool     `toml:"ipv6"`
	ConnectTimeout   *string  `toml:"connect_timeout"`
	ReadTimeout      *string  `toml:"read_timeout"`
	Users            []any    `toml:"users"`
	Groups           []any    `toml:"groups"`
	Netns            string   `toml:"netns"`
}

type ruleFile struct {
	Name        string   `toml:"name"`
	Users       []any    `toml:"users"`
	Groups      []any    `toml:"groups"`
	Connect     []string `toml:"connect"`
	Bind        []string `toml:"bind"`
	BindShares  []string `toml:"bind_shares"`
	BindOptions []string `toml:"bind_options"`
	Linger      *string  `toml:"linger"`
	Admin       bool     `toml:"admin"`
	Netns       []string `toml:"netns"`
}

func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: write e.g. \"10s\" or \"500ms\"", s)
	}
	if v <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return v, nil
}

// Error is a configuration problem at a place in the file.
type Error struct {
	// File is the file's name.
	File string
	// Line is the 1-based line, or 0 when the problem has no one place.
	Line int
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Default is the configuration used when none is given: the default socket,
// and one rule letting root and the daemon's own user connect to and bind
// loopback addresses only. Everyone else is denied.
func Default() *Config {
	uids := []uint32{0}
	if u := uint32(os.Getuid()); u != 0 {
		uids = append(uids, u)
	}
	var dests []policy.Dest
	for _, s := range []string{"127.0.0.0/8:*", "[::1]:*", "localhost:*"} {
		d, err := policy.ParseDest(s)
		if err != nil {
			panic(err) // a constant; covered by tests
		}
		dests = append(dests, d)
	}
	var binds []policy.BindGrant
	for _, s := range []string{"*:127.0.0.0/8:*", "*:[::1]:*"} {
		g, err := policy.ParseBindGrant(s)
		if err != nil {
			panic(err) // a constant; covered by tests
		}
		binds = append(binds, g)
	}
	return &Config{
		Socket:         paths.DaemonSocket(),
		SocketMode:     DefaultSocketMode,
		SocketGID:      -1,
		LogLevel:       slog.LevelInfo,
		ConnectTimeout: DefaultConnectTimeout,
		MinAttempt:     DefaultMinAttempt,
		MaxInFlight:    DefaultMaxInFlight,
		TokenTTL:       DefaultTokenTTL,
		ReclaimGrace:   DefaultReclaimGrace,
		UpgradeTimeout: DefaultUpgradeTimeout,
		StopTimeout:    DefaultStopTimeout,
		Limits:         DefaultLimits,
		NetnsDir:       netns.DefaultDir,
		NetnsEtcDir:    DefaultNetnsEtcDir,
		Policy:         &policy.Policy{Rules: []policy.Rule{{Name: "builtin-loopback", UIDs: uids, Connect: dests, Bind: binds}}, Deny: mustDeny(policy.DefaultDeny)},
		Source:         "built-in default",
	}
}

// mustDeny parses constant deny patterns.
func mustDeny(list []string) []policy.Dest {
	var out []policy.Dest
	for _, s := range list {
		d, err := policy.ParseDest(s)
		if err != nil {
			panic(err) // a constant; covered by tests
		}
		out = append(out, d)
	}
	return out
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a configuration document; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	var f file
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, tomlError(name, data, err)
	}
	p := &parser{name: name, data: data}
	c := &Config{
		Socket:          f.Daemon.Socket,
		SocketMode:      DefaultSocketMode,
		SocketGID:       -1,
		LogLevel:        slog.LevelInfo,
		ConnectTimeout:  DefaultConnectTimeout,
		MinAttempt:      DefaultMinAttempt,
		MaxInFlight:     DefaultMaxInFlight,
		TokenTTL:        DefaultTokenTTL,
		NetnsDir:        netns.DefaultDir,
		NetnsEtcDir:     DefaultNetnsEtcDir,
		ReclaimGrace:    DefaultReclaimGrace,
		UpgradeTimeout:  DefaultUpgradeTimeout,
		StopTimeout:     DefaultStopTimeout,
		Limits:          DefaultLimits,
		ResolverServers: f.Resolver.Servers,
		Source:          name,
	}
	if c.Socket == "" {
		c.Socket = paths.DaemonSocket()
	} else if !strings.HasPrefix(c.Socket, "/") {
		return nil, p.errAt("socket", "socket %q must be an absolute path", c.Socket)
	}
	if s := f.Daemon.SocketMode; s != "" {
		m, err := strconv.ParseUint(s, 8, 32)
		if err != nil || m > 0o777 {
			return nil, p.errAt("socket_mode", "socket_mode %q must be octal permission bits such as \"0660\"", s)
		}
		c.SocketMode = os.FileMode(m)
	}
	if u := f.Daemon.User; u != "" {
		uid, gid, err := lookupAccount(u)
		if err != nil {
			return nil, p.errAt("user", "user: %v", err)
		}
		c.User, c.UID, c.GID = u, uid, gid
	}
	if g := f.Daemon.Group; g != "" {
		if c.User == "" {
			return nil, p.errAt("group", "group %q is the group of [daemon] user: set user too, or remove group", g)
		}
		gid, err := lookupGroup(g)
		if err != nil {
			return nil, p.errAt("group", "group: %v", err)
		}
		c.GID = int(gid)
	}
	if len(f.Daemon.SupplementaryGroups) > 0 && c.User == "" {
		return nil, p.errAt("supplementary_groups", "supplementary_groups are those of [daemon] user: set user too, or remove supplementary_groups")
	}
	for _, g := range f.Daemon.SupplementaryGroups {
		gid, err := principal(g, lookupGroup)
		if err != nil {
			return nil, p.errAtValue("supplementary_groups", g, "supplementary_groups: %v", err)
		}
		c.Groups = append(c.Groups, int(gid))
	}
	if g := f.Daemon.SocketGroup; g != "" {
		gid, err := lookupGroup(g)
		if err != nil {
			return nil, p.errAt("socket_group", "socket_group: %v", err)
		}
		c.SocketGID = int(gid)
	}
	switch f.Daemon.LogFormat {
	case "", "text":
	case "json":
		c.LogJSON = true
	default:
		return nil, p.errAt("log_format", "log_format %q: want \"text\" or \"json\"", f.Daemon.LogFormat)
	}
	if s := f.Daemon.LogLevel; s != "" {
		if err := c.LogLevel.UnmarshalText([]byte(s)); err != nil {
			return nil, p.errAt("log_level", "log_level %q: want debug, info, warn or error", s)
		}
	}
	c.FDStore = f.Daemon.FDStore
	if n := f.Daemon.MaxInFlight; n != nil {
		if *n < 1 || *n > 4096 {
			return nil, p.errAt("max_in_flight", "max_in_flight %d: want 1 to 4096", *n)
		}
		c.MaxInFlight = *n
	}
	if s := f.Connect.Timeout; s != nil {
		d, err := parseDuration(*s)
		if err != nil {
			return nil, p.errAt("timeout", "timeout: %v", err)
		}
		c.ConnectTimeout = d
	}
	if s := f.Connect.MinAttempt; s != nil {
		d, err := parseDuration(*s)
		if err != nil {
			return nil, p.errAt("min_attempt", "min_attempt: %v", err)
		}
		c.MinAttempt = d
	}
	for key, v := range map[string]struct {
		src *int
		dst *int
	}{
		"connections":         {f.Limits.Connections, &c.Limits.Connections},
		"connections_per_uid": {f.Limits.ConnectionsPerUID, &c.Limits.ConnectionsPerUID},
		"sockets":             {f.Limits.Sockets, &c.Limits.Sockets},
		"sockets_per_uid":     {f.Limits.SocketsPerUID, &c.Limits.SocketsPerUID},
		"tokens":              {f.Limits.Tokens, &c.Limits.Tokens},
		"tokens_per_uid":      {f.Limits.TokensPerUID, &c.Limits.TokensPerUID},
	} {
		if v.src == nil {
			continue
		}
		if *v.src < 0 || *v.src > 1<<24 {
			return nil, p.errAt(key, "%s %d: want 0 (no limit) to %d", key, *v.src, 1<<24)
		}
		*v.dst = *v.src
	}
	if s := f.Limits.IdleTimeout; s != nil {
		if *s == "0" || *s == "0s" {
			c.Limits.IdleTimeout = 0
		} else {
			d, err := parseDuration(*s)
			if err != nil {
				return nil, p.errAt("idle_timeout", "idle_timeout: %v", err)
			}
			c.Limits.IdleTimeout = d
		}
	}
	for _, dur := range []struct {
		key string
		src *string
		dst *time.Duration
	}{
		{"token_ttl", f.Bind.TokenTTL, &c.TokenTTL},
		{"reclaim_grace", f.Bind.ReclaimGrace, &c.ReclaimGrace},
		{"upgrade_timeout", f.Daemon.UpgradeTimeout, &c.UpgradeTimeout},
		{"stop_timeout", f.Daemon.StopTimeout, &c.StopTimeout},
	} {
		if dur.src == nil {
			continue
		}
		d, err := parseDuration(*dur.src)
		if err != nil {
			return nil, p.errAt(dur.key, "%s: %v", dur.key, err)
		}
		*dur.dst = d
	}
	for _, s := range f.Resolver.Servers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			return nil, p.errAtValue("servers", s, "resolver server %q: want a numeric ip:port such as 127.0.0.53:53 or [::1]:53", s)
		}
	}
	for name, servers := range f.Resolver.Netns {
		if err := netns.CheckName(name); err != nil || name == netns.Caller || name == netns.Daemon {
			return nil, p.errAt(name, "[resolver.netns] %q: want the name of a namespace under [netns] dir (not %q or %q)", name, netns.Caller, netns.Daemon)
		}
		for _, s := range servers {
			if _, err := netip.ParseAddrPort(s); err != nil {
				return nil, p.errAtValue(name, s, "[resolver.netns] %s: server %q: want a numeric ip:port such as 10.0.0.53:53", name, s)
			}
		}
	}
	c.ResolverNetns = f.Resolver.Netns
	for _, d := range []struct {
		key string
		src string
		dst *string
	}{{"dir", f.Netns.Dir, &c.NetnsDir}, {"etc_dir", f.Netns.EtcDir, &c.NetnsEtcDir}} {
		if d.src == "" {
			continue
		}
		if !strings.HasPrefix(d.src, "/") {
			return nil, p.errAtValue(d.key, d.src, "[netns] %s %q: must be an absolute path", d.key, d.src)
		}
		*d.dst = filepath.Clean(d.src)
	}
	pol := &policy.Policy{Deny: mustDeny(policy.DefaultDeny)}
	if f.Connect.Deny != nil {
		pol.Deny = nil
		for _, s := range f.Connect.Deny {
			d, err := policy.ParseDest(s)
			if err == nil && !d.IsIP() {
				err = errors.New("the deny list takes IP addresses and CIDRs, not names")
			}
			if err != nil {
				if what, why, ok := addrProblem(patternHost(s, false)); ok {
					return nil, p.errAtValue("deny", s, "bad %s %q in deny: %s", what, patternHost(s, false), why)
				}
				return nil, p.errAtValue("deny", s, "deny: %v", err)
			}
			pol.Deny = append(pol.Deny, d)
		}
	}
	for i, rf := range f.Rules {
		r, err := p.rule(i, rf)
		if err != nil {
			return nil, err
		}
		pol.Rules = append(pol.Rules, r)
	}
	c.Policy = pol
	for i, cf := range f.Clearwater {
		if err := p.clearwater(c, i, cf); err != nil {
			return nil, err
		}
	}
	if l := f.Metrics.Listen; l != "" {
		if err := c.checkMetricsListen(l); err != nil {
			return nil, p.errAtValue("listen", l, "[metrics] listen: %v", err)
		}
		c.MetricsListen = l
	}
	return c, nil
}

// checkMetricsListen validates a [metrics] listen value: a numeric
// ip:port with a port, or an absolute path no other socket of c uses.
func (c *Config) checkMetricsListen(l string) error {
	if strings.HasPrefix(l, "/") {
		if filepath.Clean(l) != l || strings.HasSuffix(l, "/") {
			return fmt.Errorf("%q: write the socket's path plainly, such as \"/run/sockfactory/metrics.sock\"", l)
		}
		if l == c.Socket {
			return fmt.Errorf("%q is also the native socket: choose another path", l)
		}
		for _, cw := range c.Clearwater {
			if cw.Socket == l {
				return fmt.Errorf("%q is also a clearwater socket: choose another path", l)
			}
		}
		return nil
	}
	host, port, err := net.SplitHostPort(l)
	if err != nil {
		return fmt.Errorf("%q: want a TCP address such as \"127.0.0.1:9477\" or \"[::1]:9477\", or an absolute path for a UNIX socket", l)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: host %q must be a numeric IP address (names are not resolved), such as 127.0.0.1, or empty for every address", l, host)
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("%q: port %q must be a number from 1 to 65535 (Prometheus must know it: 0 would pick one at random)", l, port)
	}
	return nil
}

// clearwater validates one [[clearwater]] table and adds it to c.
func (p *parser) clearwater(c *Config, i int, cf clearwaterFile) error {
	const table = "clearwater"
	errAt := func(key string, v any, format string, args ...any) error {
		return p.tableErr(table, i, key, v, format, args...)
	}
	cw := NewClearwater(cf.Socket)
	cw.AllowedHosts, cw.AllowedHostsDirs, cw.IPv6 = cf.AllowedHosts, cf.AllowedHostsDirs, cf.IPv6
	if cf.Socket == "" {
		return errAt("socket", "", "clearwater listener %d has no socket: add socket = \"/tmp/clearwater_management_namespace_socket\" or similar", i)
	}
	if s := cf.SocketMode; s != "" {
		m, err := strconv.ParseUint(s, 8, 32)
		if err != nil || m > 0o777 {
			return errAt("socket_mode", s, "socket_mode %q must be octal permission bits such as \"0660\"", s)
		}
		cw.SocketMode = os.FileMode(m)
	}
	if g := cf.SocketGroup; g != "" {
		gid, err := lookupGroup(g)
		if err != nil {
			return errAt("socket_group", g, "socket_group: %v", err)
		}
		cw.SocketGID = int(gid)
	}
	if len(cf.AllowedHosts) == 0 && len(cf.AllowedHostsDirs) == 0 {
		return errAt("socket", cf.Socket, "clearwater listener %s allows no hosts: add allowed_hosts or allowed_hosts_dirs", cf.Socket)
	}
	for _, h := range cf.AllowedHosts {
		if _, err := clearwater.ParseAllowed(h); err != nil {
			if what, why, ok := addrProblem(allowedHost(h)); ok {
				return errAt("allowed_hosts", h, "bad %s %q in clearwater %s allowed_hosts: %s", what, allowedHost(h), cf.Socket, why)
			}
			return errAt("allowed_hosts", h, "%v", err)
		}
	}
	for _, d := range cf.AllowedHostsDirs {
		if !strings.HasPrefix(d, "/") {
			return errAt("allowed_hosts_dirs", d, "allowed_hosts_dirs: %q must be an absolute path", d)
		}
	}
	optDuration := func(key string, src *string, dst *time.Duration) error {
		if src == nil {
			return nil
		}
		d, err := parseDuration(*src)
		if err != nil {
			return errAt(key, *src, "%s: %v", key, err)
		}
		*dst = d
		return nil
	}
	if err := optDuration("connect_timeout", cf.ConnectTimeout, &cw.ConnectTimeout); err != nil {
		return err
	}
	if err := optDuration("read_timeout", cf.ReadTimeout, &cw.ReadTimeout); err != nil {
		return err
	}
	for _, u := range cf.Users {
		uid, err := principal(u, lookupUser)
		if err != nil {
			return errAt("users", u, "clearwater %s: user %v", cf.Socket, err)
		}
		cw.UIDs = append(cw.UIDs, uid)
	}
	for _, g := range cf.Groups {
		gid, err := principal(g, lookupGroup)
		if err != nil {
			return errAt("groups", g, "clearwater %s: group %v", cf.Socket, err)
		}
		cw.GIDs = append(cw.GIDs, gid)
	}
	if n := cf.Netns; n != "" {
		if err := netns.CheckName(n); err != nil || n == netns.Caller {
			return errAt("netns", n, "clearwater %s: netns %q: want the name of a namespace under [netns] dir (a Clearwater client names none, so %q means nothing here)", cf.Socket, n, netns.Caller)
		}
		if n != netns.Daemon {
			cw.Netns = n
		}
	}
	if err := c.AddClearwater(cw); err != nil {
		return errAt("socket", cf.Socket, "%v", err)
	}
	return nil
}

type parser struct {
	name string
	data []byte
}

func (p *parser) rule(i int, rf ruleFile) (policy.Rule, error) {
	r := policy.Rule{Name: rf.Name}
	if r.Name == "" {
		r.Name = fmt.Sprintf("rule[%d]", i)
	}
	at := p.ruleLine(i)
	if len(rf.Users) == 0 && len(rf.Groups) == 0 {
		return r, &Error{p.name, at, fmt.Sprintf("rule %q names no users or groups: add users = [...] or groups = [...]", r.Name)}
	}
	for _, u := range rf.Users {
		uid, err := principal(u, lookupUser)
		if err != nil {
			return r, p.ruleErr(i, "users", u, "rule %q: user %v", r.Name, err)
		}
		r.UIDs = append(r.UIDs, uid)
	}
	for _, g := range rf.Groups {
		gid, err := principal(g, lookupGroup)
		if err != nil {
			return r, p.ruleErr(i, "groups", g, "rule %q: group %v", r.Name, err)
		}
		r.GIDs = append(r.GIDs, gid)
	}
	for _, s := range rf.Connect {
		d, err := policy.ParseDest(s)
		if err != nil {
			if what, why, ok := addrProblem(patternHost(s, false)); ok {
				return r, p.ruleErr(i, "connect", s, "bad %s %q in rule %q connect: %s", what, patternHost(s, false), r.Name, why)
			}
			return r, p.ruleErr(i, "connect", s, "rule %q: connect: %v", r.Name, err)
		}
		r.Connect = append(r.Connect, d)
	}
	for _, s := range rf.Bind {
		g, err := policy.ParseBindGrant(s)
		if err != nil {
			if what, why, ok := addrProblem(patternHost(s, true)); ok {
				return r, p.ruleErr(i, "bind", s, "bad %s %q in rule %q bind: %s", what, patternHost(s, true), r.Name, why)
			}
			return r, p.ruleErr(i, "bind", s, "rule %q: bind: %v", r.Name, err)
		}
		r.Bind = append(r.Bind, g)
	}
	if rf.BindShares != nil {
		r.BindShares = []string{}
		for _, s := range rf.BindShares {
			if !slices.Contains(policy.DefaultBindShares, s) {
				return r, p.ruleErr(i, "bind_shares", s, "rule %q: bind_shares: unknown share mode %q: want none, same-name or any", r.Name, s)
			}
			r.BindShares = append(r.BindShares, s)
		}
	}
	if rf.BindOptions != nil {
		r.BindOptions = []string{}
		for _, s := range rf.BindOptions {
			if !slices.Contains(AllBindOptions, s) {
				return r, p.ruleErr(i, "bind_options", s, "rule %q: bind_options: unknown option %q: want some of %s", r.Name, s, strings.Join(AllBindOptions, ", "))
			}
			r.BindOptions = append(r.BindOptions, s)
		}
	}
	if s := rf.Linger; s != nil {
		d, err := parseDuration(*s)
		if err != nil {
			return r, p.ruleErr(i, "linger", *s, "rule %q: linger: %v", r.Name, err)
		}
		r.Linger = d
	}
	r.Admin = rf.Admin
	if rf.Netns != nil {
		r.Netns = []string{}
		for _, s := range rf.Netns {
			if err := netns.CheckName(s); err != nil {
				return r, p.ruleErr(i, "netns", s, "rule %q: netns: %v", r.Name, err)
			}
			r.Netns = append(r.Netns, s)
		}
	}
	return r, nil
}

// principal turns a name or number into an ID.
func principal(v any, lookup func(string) (uint32, error)) (uint32, error) {
	switch v := v.(type) {
	case int64:
		if v < 0 || v > 1<<32-2 {
			return 0, fmt.Errorf("%d: out of range", v)
		}
		return uint32(v), nil
	case string:
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			return uint32(n), nil
		}
		return lookup(v)
	}
	return 0, fmt.Errorf("%v: want a name or a number", v)
}

// lookupUser and lookupGroup refuse names holding a NUL: the C library
// would read "root\x00x" as "root".
func lookupUser(name string) (uint32, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return 0, fmt.Errorf("%q: no such user", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("%q: no such user", name)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err
}

// lookupAccount returns a user's uid and primary gid. A decimal uid that
// names no account in the passwd database is taken as it is, with the gid
// of the same number.
func lookupAccount(name string) (int, int, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return 0, 0, fmt.Errorf("%q: no such user", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			n, perr := strconv.ParseUint(name, 10, 32)
			var unknown user.UnknownUserIdError
			if perr == nil && n != 1<<32-1 && errors.As(err, &unknown) {
				return int(n), int(n), nil
			}
			return 0, 0, fmt.Errorf("%q: no such user: give a user name or a decimal uid", name)
		}
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, err
	}
	gid, err := strconv.Atoi(u.Gid)
	return uid, gid, err
}

func lookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	if strings.IndexByte(name, 0) >= 0 {
		return 0, fmt.Errorf("%q: no such group", name)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("%q: no such group", name)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(n), err
}

// tomlError turns a go-toml error into an *Error with a line.
func tomlError(name string, data []byte, err error) error {
	var se *toml.StrictMissingError
	if errors.As(err, &se) && len(se.Errors) > 0 {
		e := &se.Errors[0]
		row, _ := e.Position()
		if k := suggestKey(e.Key()); k != "" {
			return &Error{name, row, fmt.Sprintf("unknown setting %q: did you mean %q? (see docs/configuration.md)", strings.Join(e.Key(), "."), k)}
		}
		return &Error{name, row, fmt.Sprintf("unknown setting %q (see docs/configuration.md)", strings.Join(e.Key(), "."))}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		if unquotedSocketMode(data, row) {
			return &Error{name, row, socketModeHint}
		}
		return &Error{name, row, de.Error()}
	}
	return &Error{name, 0, err.Error()}
}

// errAt locates a key's line.
func (p *parser) errAt(key, format string, args ...any) error {
	return &Error{p.name, p.keyLine(key, 0, len(p.data)), fmt.Sprintf(format, args...)}
}

// errAtValue locates value v of key (see valueAfterKey).
func (p *parser) errAtValue(key string, v any, format string, args ...any) error {
	return &Error{p.name, p.valueAfterKey(key, v, 0, len(p.data)), fmt.Sprintf(format, args...)}
}

// ruleErr locates value v of key inside the i-th [[rule]] table, else the
// table's first line.
func (p *parser) ruleErr(i int, key string, v any, format string, args ...any) error {
	return p.tableErr("rule", i, key, v, format, args...)
}

// tableErr locates value v of key inside the i-th [[table]], else the
// table's first line.
func (p *parser) tableErr(table string, i int, key string, v any, format string, args ...any) error {
	start, end := p.tableSpan(table, i)
	line := p.valueAfterKey(key, v, start, end)
	if line == 0 {
		line = lineOf(p.data, start)
	}
	return &Error{p.name, line, fmt.Sprintf(format, args...)}
}

func (p *parser) ruleLine(i int) int {
	start, _ := p.tableSpan("rule", i)
	return lineOf(p.data, start)
}

// headerName drops the blanks and quotes a table header may hold.
var headerName = strings.NewReplacer(" ", "", "\t", "", `"`, "", "'", "")

// tableSpan returns the byte span of the i-th [[table]] table. Tables
// written as an inline array (rule = [...]) have no headers: the span then
// starts at the key.
func (p *parser) tableSpan(table string, i int) (int, int) {
	var starts []int
	off := 0
	for _, l := range bytes.SplitAfter(p.data, []byte("\n")) {
		// A table header is "[...]" alone on its line, but for a comment;
		// "[1]," is an element of a multi-line array.
		t, _, _ := bytes.Cut(l, []byte("#"))
		t = bytes.TrimSpace(t)
		if bytes.HasPrefix(t, []byte("[")) && bytes.HasSuffix(t, []byte("]")) {
			if headerName.Replace(string(t)) == "[["+table+"]]" {
				starts = append(starts, off)
			} else if len(starts) > 0 && len(starts)-1 == i {
				return starts[i], off
			}
		}
		off += len(l)
	}
	if i < len(starts) {
		return starts[i], len(p.data)
	}
	if k := p.keyOffset(table, 0, len(p.data)); k >= 0 {
		return k, len(p.data)
	}
	return 0, len(p.data)
}

// valueAfterKey returns the line of the first occurrence of v at or after
// key's line in data[start:end] (so that a rule's name or an earlier key
// holding the same text is not taken for it), else key's line. When key is
// not found it returns the first line holding v, or 0.
func (p *parser) valueAfterKey(key string, v any, start, end int) int {
	k := p.keyOffset(key, start, end)
	if k < 0 {
		return p.valueLine(fmt.Sprint(v), start, end)
	}
	if line := p.valueLine(fmt.Sprint(v), k, end); line > 0 {
		return line
	}
	return lineOf(p.data, k)
}

func (p *parser) keyLine(key string, start, end int) int {
	if off := p.keyOffset(key, start, end); off >= 0 {
		return lineOf(p.data, off)
	}
	return 0
}

// keyOffset returns the offset of the first line in data[start:end] that
// assigns key, bare, quoted, as the last part of a dotted key
// (daemon.socket) or in an inline table (daemon = {socket = ...}), or -1.
func (p *parser) keyOffset(key string, start, end int) int {
	off := start
	for _, l := range bytes.SplitAfter(p.data[start:end], []byte("\n")) {
		t := bytes.TrimSpace(l)
		if !bytes.HasPrefix(t, []byte("#")) {
			for _, seg := range bytes.FieldsFunc(t, func(r rune) bool { return r == '{' || r == ',' }) {
				k, _, ok := bytes.Cut(seg, []byte("="))
				if !ok {
					continue
				}
				if i := bytes.LastIndexByte(k, '.'); i >= 0 {
					k = k[i+1:]
				}
				if string(bytes.Trim(bytes.TrimSpace(k), `"'`)) == key {
					return off
				}
			}
		}
		off += len(l)
	}
	return -1
}

func (p *parser) valueLine(v string, start, end int) int {
	for _, q := range []string{`"` + v + `"`, `'` + v + `'`, v} {
		if i := bytes.Index(p.data[start:end], []byte(q)); i >= 0 {
			return lineOf(p.data, start+i)
		}
	}
	return 0
}

func lineOf(data []byte, off int) int {
	return bytes.Count(data[:off], []byte("\n")) + 1
}
