#!/usr/bin/env python3
"""The Python library's driver for the client behaviour suite: reads
commands on stdin, carries each out with the sockfactory library's public
API, and writes one reply line per command to stdout, as
internal/clientsuite/DRIVER.md specifies. Diagnostics go to stderr.

Run as ``python3 -u python/tests/sfdriver.py`` with PYTHONPATH=<repo>/python
and SOCKFACTORY_SOCKET set to the daemon's socket.
"""

from __future__ import annotations

import fcntl
import inspect
import os
import socket
import sys
import traceback
from typing import Callable, Dict, List, Optional

try:
    import sockfactory
except ImportError:  # run without PYTHONPATH: the library next to the tests
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import sockfactory

# Error classes to the codes the driver reports, most specific first. The
# base class (an error code the library does not know) reports its code.
_CODES = [
    (sockfactory.UnavailableError, "unavailable"),
    (sockfactory.ProtocolError, "protocol"),
    (sockfactory.InvalidRequestError, "invalid_request"),
    (sockfactory.UnsupportedVersionError, "unsupported_version"),
    (sockfactory.DeniedError, "denied"),
    (sockfactory.ResolveFailedError, "resolve_failed"),
    (sockfactory.ConnectFailedError, "connect_failed"),
    (sockfactory.DaemonTimeoutError, "timeout"),
    (sockfactory.LimitExceededError, "limit_exceeded"),
    (sockfactory.InternalError, "internal"),
    (sockfactory.ShareConflictError, "share_conflict"),
    (sockfactory.NotFoundError, "not_found"),
    (sockfactory.BindFailedError, "bind_failed"),
]

_SHARES = {"none": "none", "sameapp": "same-name", "any": "any", "-": None}


class Bad(Exception):
    """A command line the driver cannot read."""


def error_code(e: sockfactory.SockfactoryError) -> str:
    for cls, code in _CODES:
        if isinstance(e, cls):
            return code
    return e.code or "unknown"


def split_address(address: str) -> "tuple[str, int]":
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise Bad("address " + address)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def format_address(addr: object) -> str:
    host, port = addr[0], addr[1]  # type: ignore[index]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


class Driver:
    def __init__(self) -> None:
        self.client: Optional[sockfactory.Client] = None
        self.handles: Dict[int, socket.socket] = {}
        self.next_handle = 1

    def lib(self) -> sockfactory.Client:
        if self.client is None:
            self.client = sockfactory.Client()
        return self.client

    def keep(self, s: socket.socket) -> int:
        h = self.next_handle
        self.next_handle += 1
        self.handles[h] = s
        return h

    def handle(self, word: str) -> socket.socket:
        try:
            return self.handles[int(word)]
        except (ValueError, KeyError):
            raise Bad("handle " + word)

    # Commands: each returns the results after "ok".

    def cmd_connect(self, network: str, address: str) -> List[str]:
        host, port = split_address(address)
        return [str(self.keep(self.lib().connect(host, port, network=network)))]

    def _share(self, share: str) -> Optional[str]:
        if share not in _SHARES:
            raise Bad("share " + share)
        return _SHARES[share]

    def cmd_bind(self, network: str, address: str, share: str, app: str) -> List[str]:
        s = self.lib().bind(network, address, share=self._share(share), name=None if app == "-" else app)
        return [str(self.keep(s)), s.token]

    def cmd_bindtoken(self, network: str, address: str, share: str, app: str) -> List[str]:
        t = self.lib().bind_token(network, address, share=self._share(share), name=None if app == "-" else app)
        return [str(t)]

    def cmd_pickup(self, token: str) -> List[str]:
        s = self.lib().pickup(token)
        return [str(self.keep(s)), s.token]

    def cmd_release(self, token: str) -> List[str]:
        self.lib().release(token)
        return []

    def cmd_closefd(self, h: str) -> List[str]:
        s = self.handle(h)
        del self.handles[int(h)]
        os.close(s.detach())  # the descriptor only: the reference stays
        return []

    def cmd_close(self, h: str) -> List[str]:
        s = self.handle(h)
        del self.handles[int(h)]
        s.close()  # a BoundSocket releases its reference, then closes
        return []

    def cmd_sockname(self, h: str) -> List[str]:
        return [format_address(self.handle(h).getsockname())]

    def cmd_fdinfo(self, h: str) -> List[str]:
        s = self.handle(h)
        fd = s.fileno()
        kind = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram"}.get(s.type, str(int(s.type)))
        family = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}.get(s.family, str(int(s.family)))
        mode = "nonblocking" if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK else "blocking"
        cloexec = "cloexec" if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC else "nocloexec"
        return [kind, family, mode, cloexec]

    def cmd_echo(self, h: str, data: str) -> List[str]:
        s = self.handle(h)
        b = data.encode()
        s.sendall(b)
        got = b""
        while len(got) < len(b):
            chunk = s.recv(len(b) - len(got))
            if not chunk:
                break
            got += chunk
        return [got.decode(errors="replace")]

    def cmd_serve(self, h: str) -> List[str]:
        conn, _ = self.handle(h).accept()
        with conn:
            got = b""
            while len(got) < 64 and not got.endswith(b"\n"):
                chunk = conn.recv(64 - len(got))
                if not chunk:
                    break
                got += chunk
                if b"\n" in got:
                    got = got[: got.index(b"\n") + 1]
                    break
            conn.sendall(got)
        return []

    def cmd_status(self) -> List[str]:
        return [str(len(self.lib().status().sockets))]

    def cmd_reconnect(self) -> List[str]:
        if self.client is not None:
            self.client.close()
        self.client = sockfactory.Client()
        return []

    def cmd_fds(self) -> List[str]:
        return [str(len(os.listdir("/proc/self/fd")) - 1)]

    def close_all(self) -> None:
        for s in list(self.handles.values()):
            try:
                s.close()
            except Exception:
                traceback.print_exc(file=sys.stderr)
        self.handles.clear()
        if self.client is not None:
            self.client.close()

    def run(self, line: str) -> str:
        words = line.split(" ")
        name, args = words[0], words[1:]
        fn: Optional[Callable[..., List[str]]] = getattr(self, "cmd_" + name, None) if name.isalpha() else None
        if fn is None:
            return "bad command " + (name or "(empty)")
        if len(inspect.signature(fn).parameters) != len(args):
            return "bad arguments for " + name
        try:
            results = fn(*args)
        except Bad as e:
            return "bad " + str(e)
        except sockfactory.SockfactoryError as e:
            print("driver: %s: %s" % (name, e), file=sys.stderr)
            return "err %s %d" % (error_code(e), e.errno or 0)
        except OSError as e:
            # The socket's own calls (echo, serve, sockname), not the library.
            print("driver: %s: %s" % (name, e), file=sys.stderr)
            return "err os %d" % (e.errno or 0)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            return "err internal 0"
        return " ".join(["ok"] + results)


def main() -> int:
    d = Driver()
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        if line == "quit":
            break
        reply = d.run(line)
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()
    d.close_all()
    sys.stdout.write("ok\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
