package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir is where `ip netns add` names namespaces.
const DefaultDir = "/run/netns"

// Target is the namespace a socket is to be made in. The zero Target is the
// daemon's own.
type Target struct {
	// Name is the name the request gave: a name under the namespace
	// directory, Caller, or "" for the daemon's own.
	Name string
	// ID identifies the namespace; for the daemon's own it is the
	// daemon's ID (zero in the zero Target).
	ID ID
	g  *group // nil for the daemon's own
}

// Own reports whether the target is the daemon's own namespace, whatever
// name it was asked by: the policy then treats it as the daemon's own, so
// that a name or "caller" that happens to be the daemon's namespace grants
// no more than asking for none.
func (t Target) Own() bool { return t.g == nil }

// Key is the target's ID in String's form, "" for the daemon's own: the
// registry's Key.Netns. It does not allocate.
func (t Target) Key() string {
	if t.g == nil {
		return ""
	}
	return t.g.key
}

// Socket is socket(2) in the target's namespace, close-on-exec; the caller
// owns the descriptor. In the daemon's own namespace it is the plain
// system call; elsewhere one of the namespace's threads makes it.
func (t Target) Socket(domain, typ, proto int) (int, error) {
	if t.g == nil {
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return -1, os.NewSyscallError("socket", err)
		}
		return fd, nil
	}
	t.g.lastUse.Store(time.Now().UnixNano())
	return t.g.socket(t.g.self, domain, typ, proto)
}

// Manager finds namespaces by name or by caller and keeps those in use
// open. Its zero value is not usable; call New. It is safe for
// concurrent use.
type Manager struct {
	dir    string
	self   ID
	selfFD int // the daemon's own namespace, which threads go back to
	idle   time.Duration

	mu     sync.Mutex
	groups map[ID]*group
	names  map[string]ID // every name resolved, watched for removal
	moved  []lost        // names found re-pointed by a request, for sweep
	closed bool
	gone   func(ID, string)

	stop chan struct{}
	done chan struct{}
}

// Options configure a Manager; zero values mean the documented defaults.
type Options struct {
	// Dir holds the named namespaces; "" means DefaultDir.
	Dir string
	// Idle closes a namespace's descriptor after this long without a
	// request (the next request opens it again); zero means one minute.
	Idle time.Duration
	// Check is how often names are checked for removal or re-pointing
	// and groups for idleness; zero means 2 s.
	Check time.Duration
	// Gone, when set, is called (from the manager's own goroutine) with
	// the ID and name of a named namespace whose name was removed or now
	// names another namespace, once it is closed: the daemon drops what it
	// cached there.
	Gone func(id ID, name string)
}

// New returns a Manager and starts its janitor; Close stops it.
func New(o Options) (*Manager, error) {
	// This thread's namespace: every thread that runs Go code is in the
	// daemon's own (the main thread's, /proc/self/ns/net, may be parked
	// in another for good: see inNamespace).
	runtime.LockOSThread()
	selfFD, self, err := openNamespace("/proc/thread-self/ns/net")
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("the daemon's own network namespace: %w", err)
	}
	m := &Manager{dir: o.Dir, self: self, selfFD: selfFD, idle: o.Idle, groups: map[ID]*group{}, names: map[string]ID{}, gone: o.Gone, stop: make(chan struct{}), done: make(chan struct{})}
	if m.dir == "" {
		m.dir = DefaultDir
	}
	if m.idle <= 0 {
		m.idle = time.Minute
	}
	check := o.Check
	if check <= 0 {
		check = 2 * time.Second
	}
	go m.janitor(check)
	return m, nil
}

// Self returns the daemon's own namespace's ID.
func (m *Manager) Self() ID { return m.self }

// Named returns the namespace named name under the manager's directory
// (Daemon means the daemon's own). The name is resolved to its namespace
// now: a name re-pointed since an earlier request is the namespace it
// names now, and the threads of the old one are never used for it.
func (m *Manager) Named(name string) (Target, error) {
	if name == "" || name == Daemon {
		return Target{Name: name, ID: m.self}, nil
	}
	if err := CheckName(name); err != nil {
		return Target{}, err
	}
	if name == Caller {
		return Target{}, errors.New("netns \"caller\" is resolved from the connection, not by name")
	}
	path := filepath.Join(m.dir, name)
	id, err := statID(path)
	if err != nil {
		return Target{}, missing(name, path, err)
	}
	if id == m.self {
		return Target{Name: name, ID: id}, nil
	}
	m.mu.Lock()
	g := m.groups[id]
	if g != nil {
		m.noteLocked(name, id)
	}
	m.mu.Unlock()
	if g != nil {
		return Target{Name: name, ID: id, g: g}, nil
	}
	fd, id, err := openNamespace(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Target{}, missing(name, path, err)
		}
		return Target{}, fmt.Errorf("network namespace %q (%s): %w", name, path, err)
	}
	if id == m.self {
		unix.Close(fd)
		return Target{Name: name, ID: id}, nil
	}
	g, err = m.add(id, name, fd)
	if err != nil {
		return Target{}, err
	}
	return Target{Name: name, ID: id, g: g}, nil
}

// Peer returns the namespace that the process on the other end of the
// UNIX socket rc is in now (see peerNamespace for how it is found without
// a pid-reuse race).
func (m *Manager) Peer(rc syscall.RawConn) (Target, error) {
	var fd int
	var id ID
	var err error
	if cerr := rc.Control(func(s uintptr) { fd, id, err = peerNamespace(int(s)) }); cerr != nil {
		return Target{}, cerr
	}
	if err != nil {
		return Target{}, fmt.Errorf("finding the caller's network namespace: %w", err)
	}
	if id == m.self {
		unix.Close(fd)
		return Target{Name: Caller, ID: id}, nil
	}
	if g := m.find(id); g != nil {
		unix.Close(fd)
		return Target{Name: Caller, ID: id, g: g}, nil
	}
	g, err := m.add(id, "", fd)
	if err != nil {
		return Target{}, err
	}
	return Target{Name: Caller, ID: id, g: g}, nil
}

// missing explains err, a failure to find name at path; one that is
// errors.Is fs.ErrNotExist stays so.
func missing(name, path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return notFound(fmt.Sprintf("no network namespace %q (no %s): create it with `ip netns add %s`", name, path, name))
	}
	return err
}

// notFound is a namespace that does not exist: errors.Is fs.ErrNotExist.
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == fs.ErrNotExist }

// noteLocked records that name names id now; a name that named another
// namespace before was re-pointed, and the next sweep drops the old one.
func (m *Manager) noteLocked(name string, id ID) {
	if old, ok := m.names[name]; ok && old != id {
		m.moved = append(m.moved, lost{old, name})
	}
	m.names[name] = id
}

// Watch has the manager watch name, which named namespace id (a socket
// made there before a restart or an upgrade, say): when the name goes or
// names another namespace, Gone is called for id.
func (m *Manager) Watch(name string, id ID) {
	if CheckName(name) != nil || name == Caller || name == Daemon || id.IsZero() {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.names[name]; !ok {
		m.names[name] = id
	}
}

// lost is a namespace whose name went.
type lost struct {
	id   ID
	name string
}

func (m *Manager) find(id ID) *group {
	m.mu.Lock()
	g := m.groups[id]
	m.mu.Unlock()
	return g
}

// add keeps fd (which it owns from here on) as namespace id's group, or
// the group another request added meanwhile.
func (m *Manager) add(id ID, name string, fd int) (*group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		unix.Close(fd)
		return nil, errors.New("the daemon is shutting down")
	}
	if name != "" {
		m.noteLocked(name, id)
	}
	if g := m.groups[id]; g != nil {
		unix.Close(fd)
		return g, nil
	}
	g := newGroup(id, fd, m.selfFD)
	g.lastUse.Store(time.Now().UnixNano())
	m.groups[id] = g
	return g, nil
}

// Namespaces returns the IDs of the namespaces the manager holds open.
func (m *Manager) Namespaces() []ID {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ID, 0, len(m.groups))
	for id := range m.groups {
		out = append(out, id)
	}
	return out
}

// janitor retires the groups of names removed or re-pointed (reporting
// them to Gone) and of namespaces idle for m.idle.
func (m *Manager) janitor(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.sweep()
	}
}

// sweep is one round of the janitor: a name removed or re-pointed drops
// the namespace it named (unless another name still names it), and a
// namespace idle for m.idle is closed (a request opens it again).
func (m *Manager) sweep() {
	var retire []*group
	now := time.Now().UnixNano()
	m.mu.Lock()
	gone := m.moved
	m.moved = nil
	for name, id := range m.names {
		if cur, err := statID(filepath.Join(m.dir, name)); err == nil && cur == id {
			continue
		}
		delete(m.names, name)
		gone = append(gone, lost{id, name})
	}
	named := gone[:0]
	for _, l := range gone {
		still := false
		for _, other := range m.names {
			still = still || other == l.id
		}
		if still {
			continue
		}
		named = append(named, l)
		if g := m.groups[l.id]; g != nil {
			delete(m.groups, l.id)
			retire = append(retire, g)
		}
	}
	gone = named
	for id, g := range m.groups {
		if now-g.lastUse.Load() > int64(m.idle) {
			delete(m.groups, id)
			retire = append(retire, g)
		}
	}
	m.mu.Unlock()
	for _, g := range retire {
		g.retire()
	}
	if m.gone != nil {
		for _, l := range gone {
			m.gone(l.id, l.name)
		}
	}
}

// Close retires every group and stops the janitor. Sockets made in the
// namespaces stay with their owners.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	gs := m.groups
	m.groups = map[ID]*group{}
	m.mu.Unlock()
	close(m.stop)
	<-m.done
	for _, g := range gs {
		g.retire()
	}
	unix.Close(m.selfFD)
	return nil
}
