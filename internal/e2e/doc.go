// Package e2e holds the end-to-end tests: they build the real sockfactoryd
// and sockfactory binaries, run the daemon as a separate process, and drive
// it from clients in other network namespaces and under other uids.
//
// Tests that need root or namespaces are named TestIntegration...; they skip
// with a reason when the capability is missing, and fail instead when
// SOCKFACTORY_REQUIRE_ROOT=1 (as in CI). The package has no non-test code.
package e2e
