package resolver

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// setSystem points SystemResolvConf and SystemHosts at new files with the
// given contents ("" leaves that file missing) until the test ends.
func setSystem(t *testing.T, resolvConf, hosts string) (confPath, hostsPath string) {
	t.Helper()
	dir := t.TempDir()
	confPath, hostsPath = filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "hosts")
	for path, s := range map[string]string{confPath: resolvConf, hostsPath: hosts} {
		if s == "" {
			continue
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldConf, oldHosts := SystemResolvConf, SystemHosts
	SystemResolvConf, SystemHosts = confPath, hostsPath
	t.Cleanup(func() { SystemResolvConf, SystemHosts = oldConf, oldHosts })
	return confPath, hostsPath
}

// replace gives path new contents in a new file (a new inode), as editors
// and resolvconf do.
func replace(t *testing.T, path, contents string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// firstQuery looks host up (ip4) and returns the first query name the
// fake server saw for it.
func firstQuery(t *testing.T, e env, f *fakeServer, host string) string {
	t.Helper()
	before := len(f.queries())
	e.lookup(t, "ip4", host)
	q := f.names()
	if len(q) <= before {
		t.Fatalf("lookup of %s sent no query", host)
	}
	return q[before]
}

func TestDirFallback(t *testing.T) {
	tests := []struct {
		name      string
		dir       func(t *testing.T) string
		wantQuery string              // the first query for "h"
		wantHosts map[string][]string // host to addresses (nil: not in any hosts file)
	}{
		{"no Dir: system files", func(t *testing.T) string { return "" },
			"h.sys.test. A", map[string][]string{"syshost": {"192.0.2.10"}, "nshost": nil}},
		{"Dir missing: system files", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") },
			"h.sys.test. A", map[string][]string{"syshost": {"192.0.2.10"}, "nshost": nil}},
		{"Dir empty: system files", func(t *testing.T) string { return t.TempDir() },
			"h.sys.test. A", map[string][]string{"syshost": {"192.0.2.10"}}},
		{"Dir's resolv.conf, system hosts", func(t *testing.T) string {
			return writeFiles(t, map[string]string{"resolv.conf": oneNS + "search ns.test\n"})
		}, "h.ns.test. A", map[string][]string{"syshost": {"192.0.2.10"}}},
		{"Dir's hosts only: the system's hosts unused", func(t *testing.T) string {
			return writeFiles(t, map[string]string{"hosts": "192.0.2.20 nshost\n"})
		}, "h.sys.test. A", map[string][]string{"nshost": {"192.0.2.20"}, "syshost": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setSystem(t, oneNS+"search sys.test\n", "192.0.2.10 syshost\n")
			f := newFake(t, zone{}, nxdomain)
			e := newEnv(t, nil, f)
			e.r.Dir = tt.dir(t)
			if q := firstQuery(t, e, f, "h"); q != tt.wantQuery {
				t.Errorf("first query %q, want %q", q, tt.wantQuery)
			}
			for host, want := range tt.wantHosts {
				got, err := e.lookup(t, "ip4", host)
				if want == nil {
					// Not in the hosts file: DNS says NXDOMAIN.
					check(t, got, err, nil, wantErr{kind: "notfound", server: server1})
					continue
				}
				check(t, got, err, want, wantErr{})
			}
			if p := e.r.Problems(); len(p) != 0 {
				t.Errorf("Problems() = %v, want none", p)
			}
		})
	}
}

func TestFilesReread(t *testing.T) {
	t.Run("changed files are read again", func(t *testing.T) {
		f := newFake(t, zone{}, nxdomain)
		e := newEnv(t, map[string]string{"resolv.conf": oneNS + "search a.test\n", "hosts": "192.0.2.1 h\n"}, f)
		e.r.CheckInterval = -1
		got, err := e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.1"}, wantErr{})
		replace(t, filepath.Join(e.r.Dir, "hosts"), "192.0.2.2 h\n")
		got, err = e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.2"}, wantErr{})
		// Rewritten in place: same inode, another size.
		if err := os.WriteFile(filepath.Join(e.r.Dir, "hosts"), []byte("192.0.2.33 h\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err = e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.33"}, wantErr{})

		if q := firstQuery(t, e, f, "x"); q != "x.a.test. A" {
			t.Errorf("first query %q, want %q", q, "x.a.test. A")
		}
		replace(t, filepath.Join(e.r.Dir, "resolv.conf"), oneNS+"search b.test\n")
		if q := firstQuery(t, e, f, "x"); q != "x.b.test. A" {
			t.Errorf("after the change: first query %q, want %q", q, "x.b.test. A")
		}
	})
	t.Run("a file appearing in Dir and going away", func(t *testing.T) {
		setSystem(t, "", "192.0.2.10 h\n")
		e := newEnv(t, map[string]string{"resolv.conf": oneNS}, newFake(t, zone{}, nxdomain))
		e.r.CheckInterval = -1
		got, err := e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.10"}, wantErr{})
		replace(t, filepath.Join(e.r.Dir, "hosts"), "192.0.2.20 h\n")
		got, err = e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.20"}, wantErr{})
		if err := os.Remove(filepath.Join(e.r.Dir, "hosts")); err != nil {
			t.Fatal(err)
		}
		got, err = e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.10"}, wantErr{})
	})
	t.Run("not checked again within the interval", func(t *testing.T) {
		e := newEnv(t, map[string]string{"resolv.conf": oneNS, "hosts": "192.0.2.1 h\n"}, newFake(t, zone{}, nxdomain))
		e.r.CheckInterval = time.Hour
		got, err := e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.1"}, wantErr{})
		replace(t, filepath.Join(e.r.Dir, "hosts"), "192.0.2.2 h\n")
		got, err = e.lookup(t, "ip4", "h")
		check(t, got, err, []string{"192.0.2.1"}, wantErr{})
	})
	t.Run("symlinks are followed", func(t *testing.T) {
		target := filepath.Join(writeFiles(t, map[string]string{"stub.conf": oneNS + "search a.test\n"}), "stub.conf")
		f := newFake(t, zone{}, nxdomain)
		e := newEnv(t, nil, f)
		e.r.CheckInterval = -1
		if err := os.Symlink(target, filepath.Join(e.r.Dir, "resolv.conf")); err != nil {
			t.Fatal(err)
		}
		if q := firstQuery(t, e, f, "x"); q != "x.a.test. A" {
			t.Errorf("first query %q, want %q", q, "x.a.test. A")
		}
		replace(t, target, oneNS+"search b.test\n")
		if q := firstQuery(t, e, f, "x"); q != "x.b.test. A" {
			t.Errorf("after the target changed: first query %q, want %q", q, "x.b.test. A")
		}
	})
}

func TestUnreadableResolvConf(t *testing.T) {
	tests := []struct {
		name   string
		make   func(t *testing.T, path string)
		wantIs error
	}{
		{"a directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, ErrNotRegular},
		{"a FIFO", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, ErrNotRegular},
		{"too large", func(t *testing.T, path string) {
			b := []byte(strings.Repeat("# padding\n", maxFileSize/10+1))
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, ErrTooLarge},
		{"a dangling symlink", func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Join(filepath.Dir(path), "missing"), path); err != nil {
				t.Fatal(err)
			}
		}, fs.ErrNotExist},
		{"mode 000", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(oneNS), 0); err != nil {
				t.Fatal(err)
			}
		}, fs.ErrPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setSystem(t, oneNS, "")
			e := newEnv(t, map[string]string{"hosts": "192.0.2.1 h\n"}, newFake(t, zone{}, nxdomain))
			path := filepath.Join(e.r.Dir, "resolv.conf")
			tt.make(t, path)
			if tt.wantIs == fs.ErrPermission && os.Geteuid() == 0 {
				// Root reads a file of mode 000 (CAP_DAC_OVERRIDE): it
				// is used like any other, and the name goes to DNS.
				_, err := e.r.LookupNetIP(context.Background(), "ip", "www.example.test")
				if de := asDNSError(t, err); !de.IsNotFound || len(e.d.dialed()) == 0 {
					t.Errorf("as root, a mode 000 resolv.conf: %v after %d dials; want it read and the name not found by the server", err, len(e.d.dialed()))
				}
				return
			}
			done := make(chan error, 1)
			go func() {
				_, err := e.r.LookupNetIP(context.Background(), "ip", "www.example.test")
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("lookup with %s as resolv.conf has not returned after 10 s", tt.name)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v, want one that is %v", err, tt.wantIs)
			}
			if de := asDNSError(t, err); !strings.Contains(de.Error(), path) || de.Name != "www.example.test" {
				t.Errorf("error %q (Name %q), want it to name %s and www.example.test", de, de.Name, path)
			}
			// Even a name the hosts file has fails: the operator's
			// resolv.conf is broken, and the system's is not used.
			if _, err := e.r.LookupNetIP(context.Background(), "ip", "h"); err == nil {
				t.Errorf("lookup of a hosts name succeeded, want the resolv.conf error")
			}
			if d := e.d.dialed(); len(d) != 0 {
				t.Errorf("dialed %q, want nothing", d)
			}
			if p := e.r.Problems(); len(p) != 1 || !strings.Contains(p[0].Error(), path) {
				t.Errorf("Problems() = %v, want one naming %s", p, path)
			}
		})
	}
}

func TestProblems(t *testing.T) {
	z := zone{"h. A": {records: []dnsmessage.Resource{A("h.", "192.0.2.5")}}}
	tests := []struct {
		name      string
		setup     func(t *testing.T, dir string) (problemPath string)
		wantIs    error
		wantAddrs []string
	}{
		{"none", func(t *testing.T, dir string) string { return "" }, nil, []string{"192.0.2.1"}},
		{"hosts in Dir is a FIFO: no hosts, DNS", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "hosts")
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
			return path
		}, ErrNotRegular, []string{"192.0.2.5"}},
		{"system hosts too large: no hosts, DNS", func(t *testing.T, dir string) string {
			if err := os.Remove(filepath.Join(dir, "hosts")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(SystemHosts, make([]byte, maxFileSize+1), 0o644); err != nil {
				t.Fatal(err)
			}
			return SystemHosts
		}, ErrTooLarge, []string{"192.0.2.5"}},
		{"system resolv.conf a directory: glibc's default servers", func(t *testing.T, dir string) string {
			for _, name := range []string{"resolv.conf", "hosts"} {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Mkdir(SystemResolvConf, 0o755); err != nil {
				t.Fatal(err)
			}
			return SystemResolvConf
		}, ErrNotRegular, []string{"192.0.2.5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setSystem(t, "", "")
			e := newEnv(t, map[string]string{"resolv.conf": oneNS, "hosts": "192.0.2.1 h\n"}, newFake(t, z, nxdomain))
			path := tt.setup(t, e.r.Dir)
			got, err := e.lookup(t, "ip4", "h")
			check(t, got, err, tt.wantAddrs, wantErr{})
			p := e.r.Problems()
			if tt.wantIs == nil {
				if len(p) != 0 {
					t.Errorf("Problems() = %v, want none", p)
				}
				return
			}
			if len(p) != 1 || !errors.Is(p[0], tt.wantIs) || !strings.Contains(p[0].Error(), path) {
				t.Errorf("Problems() = %v, want one error naming %s that is %v", p, path, tt.wantIs)
			}
		})
	}
}

func TestReadFile(t *testing.T) {
	dir := writeFiles(t, map[string]string{"f": "contents\n"})
	b, id, err := readFile(filepath.Join(dir, "f"))
	if err != nil || string(b) != "contents\n" || id.size != 9 {
		t.Fatalf("readFile = %q, size %d, %v; want %q, 9, no error", b, id.size, err, "contents\n")
	}
	for _, path := range []string{"/dev/null", "/dev/zero", dir} {
		if _, _, err := readFile(path); !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), path) {
			t.Errorf("readFile(%s) error %v, want one naming it that is ErrNotRegular", path, err)
		}
	}
}
