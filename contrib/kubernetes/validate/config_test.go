package validate

import (
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/config"
)

// checkUnprivilegedConfig fails the test unless cfg works for a daemon
// started as a non-root user holding CAP_NET_BIND_SERVICE and nothing
// else (what sockfactoryd's neededCaps would ask for otherwise), with its
// socket in /run/sockfactory.
func checkUnprivilegedConfig(t *testing.T, what string, cfg *config.Config) {
	t.Helper()
	if cfg.User != "" {
		t.Errorf("%s: [daemon] user %q needs a daemon started as root", what, cfg.User)
	}
	if !strings.HasPrefix(cfg.Socket, socketDir+"/") {
		t.Errorf("%s: socket %s is not in %s", what, cfg.Socket, socketDir)
	}
	for _, r := range cfg.Policy.Rules {
		for _, ns := range r.Netns {
			if ns != "daemon" {
				t.Errorf("%s: rule %q covers network namespace %q, which needs CAP_SYS_ADMIN (and caller CAP_SYS_PTRACE and CAP_KILL)", what, r.Name, ns)
			}
		}
		for _, o := range r.BindOptions {
			if o == "transparent" {
				t.Errorf("%s: rule %q allows the transparent option, which needs CAP_NET_ADMIN", what, r.Name)
			}
		}
	}
	for _, cw := range cfg.Clearwater {
		if cw.Netns != "" {
			t.Errorf("%s: clearwater listener %s connects from network namespace %q, which needs CAP_SYS_ADMIN", what, cw.Socket, cw.Netns)
		}
		if !strings.HasPrefix(cw.Socket, socketDir+"/") {
			t.Errorf("%s: clearwater listener %s is outside %s, the only writable directory", what, cw.Socket, socketDir)
		}
	}
}
