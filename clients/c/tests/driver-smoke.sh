#!/bin/bash
# driver-smoke.sh: a few commands of DRIVER.md through $SFDRIVER against
# the daemon that run-daemon-tests.sh started (the shared Go suite,
# internal/clientsuite, is the real test of the driver).
set -eu
: "${SFDRIVER:?}"
fail=0
expect() { # expect WHAT GOT REGEX
	if [[ ! $2 =~ $3 ]]; then
		echo "FAIL driver-smoke: $1: got '$2', want /$3/" >&2
		fail=1
	fi
}

coproc A { "$SFDRIVER"; }
say() { echo "$1" >&"${A[1]}"; read -r r <&"${A[0]}"; }

say "fds"; base=${r#ok }
say "bind tcp 127.0.0.1:0 none -"; expect bind "$r" '^ok 1 [0-9a-f]{32}$'
tok=${r##* }
say "sockname 1"; expect sockname "$r" '^ok 127\.0\.0\.1:[0-9]+$'
addr=${r#ok }
say "fdinfo 1"; expect fdinfo "$r" '^ok stream inet blocking cloexec$'
data=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
echo "serve 1" >&"${A[1]}"
out=$(printf 'connect tcp %s\nfdinfo 1\necho 1 %s\nconnect tcp 127.0.0.2:9\nbindtoken udp 127.0.0.1:0 any -\nbogus\nquit\n' "$addr" "$data" | "$SFDRIVER" 2>/dev/null)
read -r r <&"${A[0]}"; expect serve "$r" '^ok$'
mapfile -t b <<<"$out"
expect connect "${b[0]}" '^ok 1$'
expect fdinfo-connected "${b[1]}" '^ok stream inet blocking cloexec$'
expect echo "${b[2]}" "^ok $data\$"
expect denied "${b[3]}" '^err denied 0$'
expect bindtoken "${b[4]}" '^ok [0-9a-f]{32}$'
expect bad "${b[5]}" '^bad '
expect quit "${b[6]}" '^ok$'
say "bind tcp $addr none -"; expect share_conflict "$r" '^err share_conflict 0$'
say "status"; expect status "$r" '^ok [1-9][0-9]*$'
say "close 1"; expect close "$r" '^ok$'
say "release $tok"; expect release-after-close "$r" '^err not_found 0$'
say "bindtoken tcp 127.0.0.1:0 sameapp web"; expect bindtoken-sameapp "$r" '^ok [0-9a-f]{32}$'
t2=${r#ok }
say "pickup $t2"; expect pickup "$r" "^ok 2 $t2\$"
say "pickup $t2"; expect pickup-again "$r" '^err not_found 0$'
say "closefd 2"; expect closefd "$r" '^ok$'
say "reconnect"; expect reconnect "$r" '^ok$'
say "release $t2"; expect release-after-reconnect "$r" '^err not_found 0$'
say "connect tcp 127.0.0.1:1"; expect connect_failed "$r" '^err connect_failed 111$'
say "fds"; expect fds "$r" "^ok $((base + 1))\$" # the client's connection
say "quit"; expect quit "$r" '^ok$'
wait "$A_PID" 2>/dev/null || true
if [ $fail -ne 0 ]; then exit 1; fi
echo "driver-smoke: ok" >&2
