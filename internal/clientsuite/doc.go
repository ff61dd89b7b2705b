// Package clientsuite is the client behaviour suite: one table of cases,
// written once, that every client library of sockfactoryd (Go, Python, C)
// must pass, the way rootlesskit runs one suite against every port driver.
//
// The package holds no library code. Its test (go test ./internal/clientsuite)
// builds sockfactoryd and, for each library, that library's driver: a small
// program that reads the commands of DRIVER.md on stdin and carries each out
// with the library's public API (the Go one is ./godriver; the Python one is
// python/tests/sfdriver.py; the C one is built by `make -C clients/c driver`).
// Each case runs as the subtest DRIVER/CASE of TestClientSuite and checks what
// the driver reports and what the daemon and the kernel show:
//
//   - against the real daemon, on a generated configuration: connects over
//     TCP, UDP and TCP over IPv6 (the delivered descriptor's type, family,
//     blocking mode and close-on-exec flag, and an echo), the error codes the
//     daemon can be made to send with loopback addresses and local files only,
//     binds, token pickup by a second driver, share modes, release, close,
//     closefd, reconnect, a killed driver (with and without linger) and
//     status;
//   - against a scripted fake daemon, which the test serves itself on a
//     SOCK_SEQPACKET socket: every error code of docs/protocol.md, an unknown
//     code, and replies that break the protocol (a descriptor count that does
//     not match the SCM_RIGHTS data, an oversized reply, another version, an
//     unknown member) or a daemon that goes away mid-request.
//
// After each case the driver's descriptor count and the daemon's are back
// to where they were before it. A driver that does not answer a command in
// time fails its case with its stderr; a command the library has no call for
// (answered "err unsupported 0") skips the case for that library.
//
// The Go driver must always be there. A Python or C driver that is missing,
// or cannot be built or run, skips that library's cases, or fails them when
// SOCKFACTORY_REQUIRE_CLIENTS=1 (as in CI). The suite must not depend on the
// network: it uses loopback addresses, ports the kernel chooses, and a DNS
// server of its own on loopback.
package clientsuite
