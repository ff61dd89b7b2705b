// Package resolver is a DNS stub resolver that resolves names as a process
// inside a given network namespace would: it reads the namespace's
// resolv.conf and hosts (/etc/netns/NAME/..., as `ip netns exec` bind-mounts
// them, falling back to the system files) and sends its queries through a
// Dial function the caller supplies, so that they leave from sockets inside
// that namespace. Go's net.Resolver cannot do this: it always reads the fixed
// /etc/resolv.conf.
//
// What it must not do:
//   - make a socket of its own: every connection to a name server comes
//     from Resolver.Dial, and the resolver closes each one before the lookup
//     that dialled it returns;
//   - decide anything about policy: it returns what the hosts file or the
//     name servers say, and the daemon checks every address it returns
//     before connecting to it;
//   - read anything but regular files of at most 1 MiB (a FIFO or a device
//     at a resolv.conf path is never opened).
//
// It follows glibc where the two differ from Go's resolver in ways a process
// in the namespace would notice (resolv.conf keywords must start a line, at
// most 3 name servers and 6 search domains, a timeout stops the search
// list), and Go where glibc's behaviour is an accident (bad option values
// are ignored rather than read as 0). The environment (RES_OPTIONS,
// LOCALDOMAIN) and the host name's domain as an implicit search domain are
// not used: they are the daemon's, not the namespace's.
package resolver
