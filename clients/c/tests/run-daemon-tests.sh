#!/bin/sh
# run-daemon-tests.sh BUILDDIR TEST [WRAPPER...]: builds sockfactoryd,
# starts it on a generated configuration in a temporary directory that
# grants this uid loopback connects and binds, runs TEST (under WRAPPER,
# valgrind say) with SOCKFACTORY_SOCKET naming its socket, and stops it.
set -eu
builddir=$1
test=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)

(cd "$repo" && go build -o "$builddir/sockfactoryd" ./cmd/sockfactoryd)

dir=$(mktemp -d "${TMPDIR:-/tmp}/sf-ctest.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

uid=$(id -u)
cat >"$dir/sockfactoryd.toml" <<TOML
[daemon]
socket = "$dir/run/sockfactory.sock"
socket_mode = "0600"

[bind]
token_ttl = "30s"

[[rule]]
name = "c-client-tests"
users = [$uid]
connect = ["127.0.0.1:*", "[::1]:*"]
bind = ["*:127.0.0.1:*", "*:[::1]:*"]
TOML

"$builddir/sockfactoryd" -config "$dir/sockfactoryd.toml" -log-level debug -log-flush 0 \
	>"$dir/daemon.log" 2>&1 &
pid=$!
i=0
while [ ! -S "$dir/run/sockfactory.sock" ]; do
	i=$((i + 1))
	if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "sockfactoryd did not start:" >&2
		cat "$dir/daemon.log" >&2
		exit 1
	fi
	sleep 0.05
done

status=0
SOCKFACTORY_SOCKET="$dir/run/sockfactory.sock" "$@" "$test" || status=$?
if [ $status -ne 0 ]; then
	echo "--- daemon log" >&2
	tail -n 50 "$dir/daemon.log" >&2
fi
kill -TERM "$pid"
wait "$pid" || { echo "sockfactoryd exited with $?" >&2; status=1; }
pid=
exit $status
