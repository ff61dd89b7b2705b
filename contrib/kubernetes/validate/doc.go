// Package validate holds the tests that check contrib/kubernetes and the
// repository's Dockerfile: every manifest decodes strictly into the
// Kubernetes API types, the DaemonSet is wired together (selector, volumes,
// probes, capabilities), and the configurations the manifests and the image
// carry are valid for the daemon and need no capability beyond
// CAP_NET_BIND_SERVICE. It is a module of its own so that the daemon's
// module does not depend on the Kubernetes API; it has no code but its
// tests, and must not be imported.
//
//	cd contrib/kubernetes/validate && go test ./...
package validate
