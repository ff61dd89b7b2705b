// Package version holds the release version shared by the daemon, the CLI
// and the client library.
package version

// Version is the release; builds may override it with
// -ldflags "-X github.com/sockfactory/sockfactory/internal/version.Version=v1.2.3".
var Version = "0.1.0-dev"
