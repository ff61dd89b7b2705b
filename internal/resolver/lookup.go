package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// lookup is one DNS lookup of a name: its settings, fixed at its start.
type lookup struct {
	r       *Resolver
	conf    *Conf
	servers []netip.AddrPort
	fam     family
	host    string        // the name as the caller gave it, for errors
	timeout time.Duration // per query and server
	start   int           // index of the first server to try
}

// run tries the search list's candidates in order until one has
// addresses. NXDOMAIN, NODATA and SERVFAIL-like failures go on to the next
// candidate; a timeout or the end of ctx stops (as glibc's res_nsearch
// does). When none has addresses, a temporary failure is returned in
// preference to "not found": the name may exist where a server failed.
func (l *lookup) run(ctx context.Context) ([]netip.Addr, error) {
	var temporary, notFound *net.DNSError
	for _, fqdn := range candidates(l.host, l.conf) {
		addrs, err := l.tryName(ctx, fqdn)
		switch {
		case len(addrs) > 0:
			return addrs, nil
		case ctxDone(ctx) || err.IsTimeout:
			return nil, err
		case err.IsNotFound:
			notFound = err
		default:
			temporary = err
		}
	}
	if temporary != nil {
		return nil, temporary
	}
	if notFound != nil {
		return nil, notFound
	}
	return nil, &net.DNSError{Err: "no such host", Name: l.host, IsNotFound: true}
}

// tryName queries one candidate for the types the family needs, A and
// AAAA in parallel for "ip". Both queries have finished when it returns.
// The error is nil only when there are addresses.
func (l *lookup) tryName(ctx context.Context, fqdn string) ([]netip.Addr, *net.DNSError) {
	name, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return nil, &net.DNSError{Err: "no such host (name too long)", Name: l.host, IsNotFound: true}
	}
	var types []dnsmessage.Type
	switch l.fam {
	case 4:
		types = []dnsmessage.Type{dnsmessage.TypeA}
	case 6:
		types = []dnsmessage.Type{dnsmessage.TypeAAAA}
	default:
		types = []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA}
	}
	type result struct {
		addrs []netip.Addr
		err   *net.DNSError
	}
	results := make([]result, len(types))
	var wg sync.WaitGroup
	for i := 1; i < len(types); i++ {
		wg.Go(func() { results[i].addrs, results[i].err = l.tryType(ctx, name, types[i]) })
	}
	results[0].addrs, results[0].err = l.tryType(ctx, name, types[0])
	wg.Wait()
	var addrs []netip.Addr
	var worst *net.DNSError
	for _, res := range results {
		addrs = append(addrs, res.addrs...)
		if res.err != nil && (worst == nil || severity(res.err) > severity(worst)) {
			worst = res.err
		}
	}
	if addrs = arrange(addrs, l.fam); len(addrs) > 0 {
		return addrs, nil
	}
	if worst == nil {
		worst = l.notFound("")
	}
	return nil, worst
}

// severity orders a candidate's failures: not found, temporary, timeout.
func severity(e *net.DNSError) int {
	switch {
	case e.IsTimeout:
		return 2
	case e.IsNotFound:
		return 0
	}
	return 1
}

// tryType sends one query to the servers in turn, conf.Attempts rounds,
// until one gives an answer: addresses, or NXDOMAIN or NODATA (not found).
// SERVFAIL, REFUSED, other RCODEs, lame replies and network errors go on
// to the next server. The error is nil only when there are addresses.
func (l *lookup) tryType(ctx context.Context, name dnsmessage.Name, t dnsmessage.Type) ([]netip.Addr, *net.DNSError) {
	q := dnsmessage.Question{Name: name, Type: t, Class: dnsmessage.ClassINET}
	what := fmt.Sprintf("%s query for %s", typeName(t), name.String())
	attempts := max(l.conf.Attempts, 1)
	timeout := l.timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	var failed *net.DNSError // the last failure other than a timeout
	var server string
	for range attempts {
		for j := range l.servers {
			s := l.servers[(l.start+j)%len(l.servers)]
			server = s.String()
			if ctxDone(ctx) {
				return nil, l.ctxError(ctx, server)
			}
			rep, err := l.r.exchange(ctx, s, q, timeout, l.conf.UseTCP)
			switch {
			case err != nil && ctxDone(ctx):
				return nil, l.ctxError(ctx, server)
			case err != nil && isTimeout(err):
				continue
			case err != nil:
				failed = &net.DNSError{Err: fmt.Sprintf("%s: %v", what, err), Name: l.host, Server: server, IsTemporary: true, UnwrapErr: err}
				continue
			case rep.rcode == dnsmessage.RCodeNameError:
				return nil, l.notFound(server)
			case rep.rcode != dnsmessage.RCodeSuccess:
				failed = &net.DNSError{Err: fmt.Sprintf("server replied %s to the %s", rcodeName(rep.rcode), what), Name: l.host, Server: server, IsTemporary: true}
				continue
			case rep.lame:
				failed = &net.DNSError{Err: fmt.Sprintf("lame referral: the server has no answer to the %s and does not recurse", what), Name: l.host, Server: server, IsTemporary: true}
				continue
			}
			if addrs := arrange(rep.addrs, l.fam); len(addrs) > 0 {
				return addrs, nil
			}
			return nil, l.notFound(server)
		}
	}
	if failed != nil {
		return nil, failed
	}
	list := make([]string, len(l.servers))
	for i, s := range l.servers {
		list[i] = s.String()
	}
	return nil, &net.DNSError{
		Err:         fmt.Sprintf("i/o timeout: no reply to the %s from %s (%d attempts of %v each)", what, strings.Join(list, ", "), attempts, timeout),
		Name:        l.host,
		Server:      server,
		IsTimeout:   true,
		IsTemporary: true,
		UnwrapErr:   os.ErrDeadlineExceeded,
	}
}

// notFound is the error for a name that does not exist (NXDOMAIN) or has
// no address of the family (NODATA).
func (l *lookup) notFound(server string) *net.DNSError {
	return &net.DNSError{Err: "no such host", Name: l.host, Server: server, IsNotFound: true}
}

// ctxDone reports whether ctx has ended, or its deadline has passed (a
// connection's deadline, set from it, may expire before ctx's own timer
// fires).
func ctxDone(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// ctxError is the error for a lookup whose ctx ended.
func (l *lookup) ctxError(ctx context.Context, server string) *net.DNSError {
	err := ctx.Err()
	if err == nil {
		err = context.DeadlineExceeded
	}
	deadline := errors.Is(err, context.DeadlineExceeded)
	return &net.DNSError{Err: err.Error(), Name: l.host, Server: server, IsTimeout: deadline, IsTemporary: deadline, UnwrapErr: err}
}

// isTimeout reports whether an exchange failed for want of a reply in time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

func typeName(t dnsmessage.Type) string {
	switch t {
	case dnsmessage.TypeA:
		return "A"
	case dnsmessage.TypeAAAA:
		return "AAAA"
	}
	return strings.TrimPrefix(t.String(), "Type")
}

// rcodeName is an RCODE's name as RFC 1035 and dig spell it.
func rcodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE %d", c)
}
