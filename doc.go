// Package sockfactory is the Go client of sockfactoryd, a daemon that
// creates sockets for processes that may not create them themselves (wrong
// network namespace, no privilege) and hands them over a UNIX socket as file
// descriptors. The socket a program receives is a native kernel socket: no
// proxy sits in the data path.
//
// A Dialer fits wherever a dial function does:
//
//	d := &sockfactory.Dialer{}
//	tr := &http.Transport{DialContext: d.DialContext}
//
// Errors from the daemon match the package's sentinels with errors.Is
// (ErrDenied, ErrConnectFailed, ...); an OS error behind a failure matches
// its errno (errors.Is(err, syscall.ECONNREFUSED)).
//
// File descriptor ownership: every net.Conn and *os.File this package
// returns belongs to the caller, who must close it. A socket the daemon sent
// for a request whose caller gave up is closed by the package.
package sockfactory
