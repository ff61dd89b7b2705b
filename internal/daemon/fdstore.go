package daemon

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/registry"
)

// The crash record (docs/operations.md, "Crash survival"). With systemd's
// fd store on, every cached socket is pushed into it as it is created
// (FDSTORE=1, FDNAME= its storeName) and removed when closed
// (FDSTOREREMOVE=1), and a record of what each stored socket is and who
// held it is kept in two memfds, pushed into the store too and rewritten
// in turn (each with a sequence number and a checksum), so that a crash
// in the middle of a write leaves the other one whole. After a crash,
// systemd starts the daemon again with the stored descriptors; the newest
// whole record says which socket each is, and every reference becomes an
// orphan its holder may reclaim for reclaim_grace.

// recordVersion is the crash record's format.
const recordVersion = 1

// record is one crash record.
type record struct {
	Version int `json:"version"`
	Seq     uint64
	// Written is the wall-clock time of writing: pending tokens and
	// linger times go on counting across the restart.
	Written time.Time `json:"written"`
	// State is the cache, holders included; SocketState.FD is unused
	// (-1): Names say which stored descriptor is which socket.
	State *registry.State `json:"state"`
	// OptionSets are the distinct socket options, Options the index
	// into them of each socket's.
	OptionSets []binder.Options `json:"option_sets"`
	Options    []int            `json:"options"`
	Names      []string         `json:"names"`
}

// storeName is the FDNAME= of a cached socket: "sf-tcp-8080-127.0.0.1",
// "sf-udp-53-__1", and for one in another namespace "-ns4_4026532281" after
// it (colons, which FDNAME= may not hold, become _).
func storeName(k registry.Key) string {
	n := StoredPrefix + k.Proto + "-" + strconv.Itoa(int(k.Addr.Port())) + "-" + strings.ReplaceAll(k.Addr.Addr().String(), ":", "_")
	if k.Netns != "" {
		n += "-ns" + strings.ReplaceAll(k.Netns, ":", "_")
	}
	return n
}

// recordName is the FDNAME= of this process's record memfd i (0 or 1).
func recordName(i int) string { return fmt.Sprintf("%sstate-%d-%d", StoredPrefix, os.Getpid(), i) }

// fdStore keeps systemd's fd store in step with the registry.
type fdStore struct {
	n   *notifier
	log *slog.Logger
	reg *registry.Registry

	dirty chan struct{} // a record is due
	stop  chan struct{}
	done  chan struct{}

	// Messages for the store, in order (see send): the registry's hooks
	// only queue them, with its lock held; the writer sends them.
	qmu   sync.Mutex
	queue []storeMsg
	qwake chan struct{}

	once sync.Once // close or detach

	mu      sync.Mutex // the records
	seq     uint64
	memfds  [2]int
	next    int
	written bool
	// stale are record names of a previous daemon, removed from the
	// store once this one has written its own.
	stale []string
}

// fdStoreEnabled reports whether to use the fd store: the manager listens
// (NOTIFY_SOCKET) and has a store for the service ($FDSTORE, which
// systemd 254 and later set to FileDescriptorStoreMax=), or the
// configuration says so ([daemon] fd_store; older systemd does not tell).
func fdStoreEnabled(n *notifier, configured *bool) bool {
	if !n.enabled() {
		return false
	}
	if configured != nil {
		return *configured
	}
	v, err := strconv.Atoi(os.Getenv("FDSTORE"))
	return err == nil && v > 0
}

// newFDStore creates the record memfds and pushes them into the store.
func newFDStore(n *notifier, log *slog.Logger, reg *registry.Registry, stale []string) (*fdStore, error) {
	f := &fdStore{n: n, log: log, reg: reg, dirty: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), stale: stale, memfds: [2]int{-1, -1},
		qwake: make(chan struct{}, 1)}
	for i := range f.memfds {
		fd, err := unix.MemfdCreate("sockfactory-record", unix.MFD_CLOEXEC)
		if err != nil {
			f.closeMemfds()
			return nil, os.NewSyscallError("memfd_create", err)
		}
		f.memfds[i] = fd
	}
	return f, nil
}

func (f *fdStore) closeMemfds() {
	for i, fd := range f.memfds {
		if fd >= 0 {
			unix.Close(fd)
			f.memfds[i] = -1
		}
	}
}

// start writes the first record, pushes the memfds, removes a previous
// daemon's records, and keeps writing records as the registry changes.
func (f *fdStore) start() error {
	if err := f.write(); err != nil {
		return err
	}
	for i, fd := range f.memfds {
		if err := f.n.sendFDs("FDSTORE=1\nFDNAME="+recordName(i)+"\nFDPOLL=0", []int{fd}); err != nil {
			return fmt.Errorf("pushing the crash record into the fd store: %w", err)
		}
	}
	for _, name := range f.stale {
		f.n.send("FDSTOREREMOVE=1\nFDNAME=" + name)
	}
	f.stale = nil
	go f.loop()
	return nil
}

// loop sends the queued store messages, and rewrites the record at most
// every 50 ms while the registry changes. It sends what is queued before
// it stops.
func (f *fdStore) loop() {
	defer close(f.done)
	var due <-chan time.Time
	for {
		select {
		case <-f.stop:
			f.flush()
			return
		case <-f.qwake:
			f.flush()
		case <-f.dirty:
			if due == nil {
				due = time.After(50 * time.Millisecond)
			}
		case <-due:
			due = nil
			f.flush() // the record describes what the store holds
			if err := f.write(); err != nil {
				f.log.Error("writing the crash record", "err", err)
			}
		}
	}
}

// storeMsg is one queued message: a socket pushed (fd, a duplicate the
// message owns) or taken out (fd -1).
type storeMsg struct {
	key registry.Key
	fd  int
}

// enqueue queues m for the writer; it never blocks.
func (f *fdStore) enqueue(m storeMsg) {
	f.qmu.Lock()
	f.queue = append(f.queue, m)
	f.qmu.Unlock()
	select {
	case f.qwake <- struct{}{}:
	default:
	}
}

// flush sends every queued message in order. The manager's queue is
// small (net.unix.max_dgram_qlen) and shared: a full one is waited out,
// briefly, not dropped.
func (f *fdStore) flush() {
	f.qmu.Lock()
	q := f.queue
	f.queue = nil
	f.qmu.Unlock()
	for _, m := range q {
		state := "FDSTOREREMOVE=1\nFDNAME=" + storeName(m.key)
		var fds []int
		if m.fd >= 0 {
			state = "FDSTORE=1\nFDNAME=" + storeName(m.key) + "\nFDPOLL=0"
			fds = []int{m.fd}
		}
		var err error
		for pause := time.Millisecond; ; pause *= 2 {
			if err = f.n.sendFDs(state, fds); !errors.Is(err, unix.EAGAIN) || pause > time.Second {
				break
			}
			time.Sleep(pause)
		}
		if m.fd >= 0 {
			unix.Close(m.fd)
		}
		if err != nil {
			f.log.Warn("updating the fd store failed; this socket's state after a crash may be wrong", "socket", m.key.String(), "push", m.fd >= 0, "err", err)
		}
	}
}

// close stops the writer after one last record; the memfds stay in the
// store.
func (f *fdStore) close() {
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		if err := f.write(); err != nil {
			f.log.Error("writing the crash record", "err", err)
		}
		f.closeMemfds()
	})
}

// detach stops the writer without a last record: after a live upgrade
// the new daemon writes them.
func (f *fdStore) detach() {
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		f.closeMemfds()
	})
}

// Add queues a new cached socket for the store (registry.Store), with a
// duplicate of its descriptor: the registry may close its own before the
// message goes. FDPOLL=0: the daemon takes its sockets out itself, and a
// TCP socket bound but not listening reports POLLHUP, for which systemd
// would drop it.
func (f *fdStore) Add(k registry.Key, fd int) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		f.log.Warn("pushing a socket into the fd store failed; it will not survive a crash", "socket", k.String(), "err", err)
		return
	}
	f.enqueue(storeMsg{key: k, fd: dup})
}

// Remove queues taking a closed socket out of the store (registry.Store).
func (f *fdStore) Remove(k registry.Key) {
	f.enqueue(storeMsg{key: k, fd: -1})
}

// addAll pushes every socket the registry caches into the store: after
// a live upgrade from a daemon that did not keep one.
func (f *fdStore) addAll() {
	f.reg.EachSocket(f.Add)
}

// Changed schedules a new record (registry.Store).
func (f *fdStore) Changed() {
	select {
	case f.dirty <- struct{}{}:
	default:
	}
}

// write writes the current state into the older memfd: a line with the
// SHA-256 of the rest, then the JSON record.
func (f *fdStore) write() error {
	st, err := f.reg.Record()
	if err != nil {
		return nil // closed: nothing left to record
	}
	rec := record{Version: recordVersion, Written: time.Now(), State: st, Options: make([]int, len(st.Sockets))}
	sets := map[binder.Options]int{}
	for i := range st.Sockets {
		s := &st.Sockets[i]
		o, _ := s.Options.(binder.Options)
		j, ok := sets[o]
		if !ok {
			j = len(rec.OptionSets)
			sets[o] = j
			rec.OptionSets = append(rec.OptionSets, o)
		}
		rec.Options[i] = j
		rec.Names = append(rec.Names, storeName(registry.Key{Proto: s.Proto, Addr: s.Addr, Netns: s.Netns}))
		s.FD = -1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	rec.Seq = f.seq
	body, err := json.Marshal(&rec)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	buf := append([]byte(hex.EncodeToString(sum[:])+"\n"), body...)
	fd := f.memfds[f.next]
	f.next = 1 - f.next
	if err := unix.Ftruncate(fd, 0); err != nil {
		return os.NewSyscallError("ftruncate", err)
	}
	for off := 0; off < len(buf); {
		n, err := unix.Pwrite(fd, buf[off:], int64(off))
		if err != nil {
			return os.NewSyscallError("pwrite", err)
		}
		off += n
	}
	return nil
}

// readRecord reads one record memfd; it fails for anything torn,
// tampered with or of another format.
func readRecord(f *os.File) (*record, error) {
	b, err := readAllAt(f)
	if err != nil {
		return nil, err
	}
	line, body, ok := bytes.Cut(b, []byte("\n"))
	sum := sha256.Sum256(body)
	if !ok || string(line) != hex.EncodeToString(sum[:]) {
		return nil, errors.New("its checksum does not match: torn or tampered with")
	}
	var rec record
	if err := json.Unmarshal(body, &rec); err != nil {
		return nil, fmt.Errorf("malformed: %w", err)
	}
	if rec.Version != recordVersion || rec.State == nil || len(rec.Options) != len(rec.State.Sockets) || len(rec.Names) != len(rec.State.Sockets) {
		return nil, fmt.Errorf("format %d, or its lists disagree", rec.Version)
	}
	for _, j := range rec.Options {
		if j < 0 || j >= len(rec.OptionSets) {
			return nil, fmt.Errorf("an option set index %d of %d", j, len(rec.OptionSets))
		}
	}
	return &rec, nil
}

// readAllAt reads a memfd from offset 0, at most 256 MiB.
func readAllAt(f *os.File) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for off := int64(0); ; {
		n, err := unix.Pread(fileFD(f), buf, off)
		if err != nil {
			return nil, os.NewSyscallError("pread", err)
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
		off += int64(n)
		if len(out) > 256<<20 {
			return nil, errors.New("larger than 256 MiB")
		}
	}
}

// recovered is what a restart found in the fd store.
type recovered struct {
	state   *registry.State
	fds     []int // the sockets, indexed by state.Sockets[i].FD
	records []string
}

// recoverStore sorts out the descriptors systemd passed back from its
// store: it reads the newest whole record, matches each socket it lists
// with the stored descriptor of that name, checks the descriptor really is
// that socket (type, protocol, bound address), and closes (and removes from
// the store) everything that does not match. It owns stored: each file is
// closed or its descriptor returned.
func recoverStore(n *notifier, log *slog.Logger, stored []*os.File) *recovered {
	out := &recovered{}
	byName := map[string]*os.File{}
	var best *record
	bestPID := ""
	for _, f := range stored {
		name := f.Name()
		if strings.HasPrefix(name, StoredPrefix+"state-") {
			out.records = append(out.records, name)
			rec, err := readRecord(f)
			f.Close()
			if err != nil {
				log.Error("crash record rejected", "name", name, "err", err)
				continue
			}
			// One daemon's two records are told apart by their sequence
			// (the wall clock may step back between two writes); two
			// daemons' (an upgrade), by the time they were written.
			pid := recordPID(name)
			if best == nil || (pid == bestPID && rec.Seq > best.Seq) || (pid != bestPID && rec.Written.After(best.Written)) {
				best, bestPID = rec, pid
			}
			continue
		}
		if old := byName[name]; old != nil {
			log.Warn("fd store holds two sockets of one name; keeping the first", "name", name)
			f.Close()
			continue
		}
		byName[name] = f
	}
	drop := func(name string, f *os.File, why string) {
		log.Error("stored socket not restored; closing it", "name", name, "reason", why)
		f.Close()
		n.send("FDSTOREREMOVE=1\nFDNAME=" + name)
	}
	if best == nil {
		for name, f := range byName {
			drop(name, f, "no whole crash record describes it")
		}
		return out
	}
	st := best.State
	elapsed := max(time.Since(best.Written), 0)
	kept := st.Sockets[:0]
	for i, s := range st.Sockets {
		name := best.Names[i]
		f := byName[name]
		if f == nil {
			log.Error("crash record lists a socket the fd store does not hold; its references are lost", "socket", s.Proto+" "+s.Addr.String())
			continue
		}
		delete(byName, name)
		if name != storeName(registry.Key{Proto: s.Proto, Addr: s.Addr, Netns: s.Netns}) {
			drop(name, f, "the record names it for another socket")
			continue
		}
		if err := checkStored(f, s.Proto, s.Addr); err != nil {
			drop(name, f, err.Error())
			continue
		}
		fd, err := unix.FcntlInt(uintptr(fileFD(f)), unix.F_DUPFD_CLOEXEC, 0)
		f.Close()
		if err != nil {
			log.Error("stored socket not restored", "name", name, "err", err)
			n.send("FDSTOREREMOVE=1\nFDNAME=" + name)
			continue
		}
		s.FD = len(out.fds)
		out.fds = append(out.fds, fd)
		// Time went on while the daemon was down.
		for j := range s.Refs {
			if s.Refs[j].Pending {
				s.Refs[j].TTL = max(s.Refs[j].TTL-elapsed, 0)
			}
		}
		if len(s.Refs) == 0 {
			s.Idle += elapsed
		}
		s.Options = best.OptionSets[best.Options[i]]
		kept = append(kept, s)
	}
	st.Sockets = kept
	for name, f := range byName {
		drop(name, f, "the crash record does not list it")
	}
	// Every holder is an orphan now; the caller says so with its grace
	// (Registry.Orphan), so that no grace in the record applies.
	for i := range st.Holders {
		st.Holders[i].Orphan = false
	}
	st.OrphanGrace = 0
	out.state = st
	return out
}

// checkStored checks that f is a socket of proto bound to addr.
func checkStored(f *os.File, proto string, addr netip.AddrPort) error {
	fd := fileFD(f)
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %v", err)
	}
	want := unix.SOCK_STREAM
	if proto == "udp" {
		want = unix.SOCK_DGRAM
	}
	if typ != want {
		return fmt.Errorf("a socket of type %d, not %s", typ, proto)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %v", err)
	}
	var got netip.AddrPort
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		got = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		got = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	default:
		return errors.New("not an IP socket")
	}
	if got != addr {
		return fmt.Errorf("bound to %s, not %s", got, addr)
	}
	return nil
}

// fileFD is f's descriptor, valid while f is open. Unlike f.Fd it leaves
// the descriptor's mode alone: O_NONBLOCK belongs to the open file, which
// a stored socket shares with every process holding it.
func fileFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

// recordPID is the pid part of a record's name ("sf-state-PID-N").
func recordPID(name string) string {
	rest := strings.TrimPrefix(name, StoredPrefix+"state-")
	pid, _, _ := strings.Cut(rest, "-")
	return pid
}
