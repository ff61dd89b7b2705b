package clearwater

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

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
	// start with '.' or end with '~' are skipped (editor leftovers), and so
	// are symbolic links (reported, never followed) and files over
	// MaxFileSize (reported).
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
	add := func(entry string) error {
		d, err := ParseAllowed(entry)
		if err != nil {
			return err
		}
		dests = append(dests, d)
		return nil
	}
	for _, h := range a.Hosts {
		// Given in the configuration or on the command line: quoted whole.
		if err := add(h); err != nil {
			probs = append(probs, fmt.Errorf("allowed host: %w", err))
		}
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
			switch {
			case e.Type()&fs.ModeSymlink != 0:
				probs = append(probs, fmt.Errorf("%s is a symbolic link: not read (links are never followed, so that no file outside the directory is read); copy the file into the directory instead", path))
				continue
			case !e.Type().IsRegular():
				continue // subdirectories, FIFOs, devices
			}
			probs = append(probs, readHostsFile(path, add)...)
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
			// Lstat (DirEntry.Info): links are not read, so their
			// targets do not matter.
			if fi, err := e.Info(); err == nil {
				fmt.Fprintf(&b, "%s/%s:%d:%d;", dir, e.Name(), fi.Size(), fi.ModTime().UnixNano())
			}
		}
	}
	return b.String()
}

// MaxFileSize is the largest allow-list file read; a larger one is
// skipped whole.
const MaxFileSize = 1 << 20

// logPrefix is how many bytes of a rejected line a problem quotes.
const logPrefix = 16

// readHostsFile reads one allow-list file. It opens it with O_NOFOLLOW
// (Load has already skipped links, but the name may have been replaced
// since) and O_NONBLOCK (so that a FIFO put there cannot stall the reload),
// and reads it only if it is a regular file of at most MaxFileSize bytes.
// A line that is not an entry is reported by file, line number and at most
// its first logPrefix bytes, escaped: the file may be something else than an
// allow-list, and problems are logged. It returns the problems.
func readHostsFile(path string, add func(entry string) error) []error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return []error{fmt.Errorf("%s is a symbolic link: not read; copy the file into the directory instead", path)}
	}
	if err != nil {
		return []error{fmt.Errorf("reading allowed hosts: %w", err)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return []error{fmt.Errorf("reading allowed hosts: %w", err)}
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	if fi.Size() > MaxFileSize {
		return []error{fmt.Errorf("%s is larger than %d bytes: not read; is it an allow-list?", path, MaxFileSize)}
	}
	var probs []error
	sc := bufio.NewScanner(io.LimitReader(f, MaxFileSize))
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		// The parse error is dropped: it quotes the whole entry.
		if add(text) != nil {
			probs = append(probs, fmt.Errorf("%s:%d: entry %s skipped: write host, host:port, an IPv6 address or [IPv6]:port", path, line, quotePrefix(text)))
		}
	}
	if err := sc.Err(); err != nil {
		probs = append(probs, fmt.Errorf("reading %s: %w", path, err))
	}
	return probs
}

// quotePrefix quotes at most the first logPrefix bytes of s, escaped, with
// "..." after it when s is longer.
func quotePrefix(s string) string {
	if len(s) <= logPrefix {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:logPrefix]) + "..."
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
