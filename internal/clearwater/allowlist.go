package clearwater

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sockfactory/sockfactory/internal/policy"
)

// AllowList is where a listener's allowed hosts come from: entries given
// directly (config or command line) and directories of files with one host
// per line, as Clearwater deployments keep them
// (/etc/clearwater-socket-factory/<namespace>.d/*).
type AllowList struct {
	// Hosts are entries given directly.
	Hosts []string
	// Dirs are directories whose regular files each list hosts, one per
	// line; '#' starts a comment; blank lines are ignored. Files whose names
	// start with '.' or end with '~' are skipped (editor leftovers).
	Dirs []string
}

// Load reads every source and returns the destination patterns. An entry
// "host" allows any port on host (as the original); "host:port" only that
// port. Hosts are IP addresses (IPv6 bare or in brackets) or DNS names,
// compared case-insensitively. Problems are returned alongside the patterns
// that did parse, so that one bad line does not disable a whole list; a
// missing directory is a problem, not a failure.
func (a *AllowList) Load() ([]policy.Dest, []error) {
	var (
		dests []policy.Dest
		probs []error
	)
	add := func(where, entry string) {
		d, err := ParseAllowed(entry)
		if err != nil {
			probs = append(probs, fmt.Errorf("%s: %w", where, err))
			return
		}
		dests = append(dests, d)
	}
	for _, h := range a.Hosts {
		add("allowed host", h)
	}
	for _, dir := range a.Dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			probs = append(probs, fmt.Errorf("reading allowed-hosts directory: %w", err))
			continue
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
				continue
			}
			path := filepath.Join(dir, name)
			if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := readHostsFile(path, add); err != nil {
				probs = append(probs, err)
			}
		}
	}
	return dests, probs
}

// stamp summarizes the sources' state: each directory's entries with their
// sizes and modification times. Equal stamps mean nothing to re-read.
func (a *AllowList) stamp() string {
	var b strings.Builder
	for _, dir := range a.Dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintf(&b, "%s:!%v;", dir, err)
			continue
		}
		for _, e := range ents {
			if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
				fmt.Fprintf(&b, "%s/%s:%d:%d;", dir, e.Name(), fi.Size(), fi.ModTime().UnixNano())
			}
		}
	}
	return b.String()
}

func readHostsFile(path string, add func(where, entry string)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading allowed hosts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		add(fmt.Sprintf("%s:%d", path, line), text)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// ParseAllowed parses one allowed-host entry: host, host:port, [v6],
// [v6]:port or a bare IPv6 address.
func ParseAllowed(entry string) (policy.Dest, error) {
	if entry == "" {
		return policy.Dest{}, errors.New("empty allowed host")
	}
	if a, err := netip.ParseAddr(entry); err == nil && a.Is6() {
		entry = "[" + entry + "]" // bare IPv6: any port
	}
	host, port := entry, "*"
	if i := strings.LastIndexByte(entry, ':'); i >= 0 && !strings.HasSuffix(entry, "]") {
		host, port = entry[:i], entry[i+1:]
		if port == "" || port == "*" {
			return policy.Dest{}, fmt.Errorf("allowed host %q: write host or host:port", entry)
		}
	}
	d, err := policy.ParseDest(host + ":" + port)
	if err != nil {
		return policy.Dest{}, fmt.Errorf("allowed host %q: %w", entry, err)
	}
	return d, nil
}
