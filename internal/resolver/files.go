package resolver

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// SystemResolvConf and SystemHosts are the system's files, used when a
// Resolver has no Dir or its Dir lacks the file. They are variables so that
// tests can point them elsewhere; change them only while no lookup runs.
var (
	SystemResolvConf = "/etc/resolv.conf"
	SystemHosts      = "/etc/hosts"
)

// ErrNotRegular is returned (wrapped) for a resolv.conf or hosts path that
// is not a regular file (after following symlinks): a FIFO, a device or a
// directory is never read.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned (wrapped) for a file larger than 1 MiB.
var ErrTooLarge = errors.New("larger than 1 MiB")

// maxFileSize is the largest resolv.conf or hosts file read.
const maxFileSize = 1 << 20

// defaultCheckInterval is how often files are checked for changes when
// Resolver.CheckInterval is zero: Go's resolver uses the same.
const defaultCheckInterval = 5 * time.Second

// fileID tells one version of a file from another.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

func idOf(st *unix.Stat_t) fileID {
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}
}

// fileState is what the last check found at one of a Resolver's files.
type fileState struct {
	path string // the file chosen: the namespace's or the system's
	own  bool   // path is in Dir
	id   fileID
	err  error // why it could not be read; nil when it was
}

// pick chooses the file a process in the namespace sees: dir/name when
// anything is there (a file that cannot be read too: the namespace's
// operator meant it), else sys. An error other than "missing" looking into
// dir also picks dir/name, with that error.
func pick(dir, name, sys string) (path string, own bool, err error) {
	if dir == "" {
		return sys, false, nil
	}
	path = filepath.Join(dir, name)
	_, err = os.Lstat(path)
	if err == nil {
		return path, true, nil
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return sys, false, nil
	}
	return path, true, err
}

// probe returns the state of the file that pick chooses, without reading
// it.
func probe(dir, name, sys string) fileState {
	path, own, err := pick(dir, name, sys)
	s := fileState{path: path, own: own, err: err}
	if err != nil {
		return s
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		s.err = &fs.PathError{Op: "stat", Path: path, Err: err}
		return s
	}
	s.id = idOf(&st)
	return s
}

// changed reports whether a file must be read again: it is another file or
// another version, or the last read failed.
func (s fileState) changed(now fileState) bool {
	return s.err != nil || now.err != nil || s.path != now.path || s.id != now.id
}

// readFile reads a regular file of at most maxFileSize bytes, following
// symlinks, without ever opening anything else: the path is checked with
// stat before open (so a FIFO or device is not opened) and with fstat
// after (in case it was replaced in between). It returns the opened file's
// identity. The descriptor is closed before it returns.
func readFile(path string) ([]byte, fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fileID{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if err := checkRegular(path, &st); err != nil {
		return nil, fileID{}, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fileID{}, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fileID{}, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if err := checkRegular(path, &st); err != nil {
		return nil, fileID{}, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fileID{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return nil, fileID{}, fmt.Errorf("reading %s: %w", path, ErrTooLarge)
	}
	return b, idOf(&st), nil
}

// checkRegular returns an error unless st is a regular file of at most
// maxFileSize bytes.
func checkRegular(path string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("reading %s: %w (it is %s)", path, ErrNotRegular, kind(st.Mode))
	}
	if st.Size > maxFileSize {
		return fmt.Errorf("reading %s (%d bytes): %w", path, st.Size, ErrTooLarge)
	}
	return nil
}

// kind names a file type for messages.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return fmt.Sprintf("of type %#o", mode&unix.S_IFMT)
}

// files is a Resolver's cache of its parsed files. Its methods are called
// with the Resolver's mutex held.
type files struct {
	loaded    bool // the files were read at least once
	checked   time.Time
	conf      *Conf
	confErr   error // set when lookups must fail: the namespace's own resolv.conf is unreadable
	confState fileState
	hosts     *Hosts
	hostState fileState
	problems  []error
}

// check re-reads whichever file changed, at most once per interval (the
// first call always reads; a negative interval checks at every call).
func (c *files) check(now time.Time, interval time.Duration, dir string) {
	if since := now.Sub(c.checked); c.loaded && interval >= 0 && since >= 0 && since < interval {
		return
	}
	c.checked = now
	if confNow := probe(dir, "resolv.conf", SystemResolvConf); !c.loaded || c.confState.changed(confNow) {
		c.loadConf(confNow)
	}
	if hostsNow := probe(dir, "hosts", SystemHosts); !c.loaded || c.hostState.changed(hostsNow) {
		c.loadHosts(hostsNow)
	}
	c.loaded = true
	c.problems = c.problems[:0]
	for _, s := range []fileState{c.confState, c.hostState} {
		if s.err != nil && (s.own || !errors.Is(s.err, fs.ErrNotExist)) {
			c.problems = append(c.problems, s.err)
		}
	}
}

// loadConf reads the resolv.conf that s names. The namespace's own file
// must be readable: a lookup fails while it is not. A missing system file
// gives glibc's defaults; an unreadable one too, with a problem recorded.
func (c *files) loadConf(s fileState) {
	b, id, err := load(s)
	s.id, s.err = id, err
	c.confState = s
	c.confErr = nil
	switch {
	case err == nil:
		c.conf = ParseConf(b)
	case s.own:
		c.conf = nil
		c.confState.err = fmt.Errorf("namespace resolv.conf %s cannot be read (fix it, or remove it to use %s): %w", s.path, SystemResolvConf, err)
		c.confErr = c.confState.err
	case errors.Is(err, fs.ErrNotExist):
		c.conf = ParseConf(nil)
	default:
		c.conf = ParseConf(nil)
		c.confState.err = fmt.Errorf("system resolv.conf %s cannot be read, using name servers 127.0.0.1 and ::1: %w", s.path, err)
	}
}

// loadHosts reads the hosts file that s names; one that cannot be read is
// taken as empty (as glibc's files service skips it; the system's is not
// used instead of the namespace's), with a problem recorded unless it is
// the system's and missing.
func (c *files) loadHosts(s fileState) {
	b, id, err := load(s)
	s.id, s.err = id, err
	c.hostState = s
	if err != nil {
		c.hosts = &Hosts{}
		if s.own || !errors.Is(err, fs.ErrNotExist) {
			c.hostState.err = fmt.Errorf("hosts file %s cannot be read, using none: %w", s.path, err)
		}
		return
	}
	c.hosts = ParseHosts(b)
}

// load reads the file s names, or returns the error probing it found.
func load(s fileState) ([]byte, fileID, error) {
	if s.err != nil {
		return nil, fileID{}, s.err
	}
	return readFile(s.path)
}
