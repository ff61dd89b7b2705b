"""sfdriver.py, the behaviour suite's driver (internal/clientsuite/DRIVER.md),
run as the suite runs it, against the real daemon."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import List

import sockfactory
from conftest import HERE, PYDIR, wait_for


class Driver:
    def __init__(self, sock_path: str) -> None:
        env = dict(os.environ, SOCKFACTORY_SOCKET=sock_path, PYTHONPATH=PYDIR)
        self.p = subprocess.Popen(
            [sys.executable, "-u", os.path.join(HERE, "sfdriver.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd="/",
        )

    def __call__(self, line: str) -> List[str]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().decode().rstrip("\n").split(" ")

    def close(self) -> None:
        for f in (self.p.stdin, self.p.stdout):
            if f is not None:
                f.close()
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def test_driver_session(sock_path, echo_server):
    host, port = echo_server
    d = Driver(sock_path)
    try:
        assert d("status") == ["ok", "0"]
        ok, h = d("connect tcp %s:%d" % (host, port))
        assert ok == "ok"
        assert d("echo %s hello" % h) == ["ok", "hello"]
        assert d("fdinfo " + h) == ["ok", "stream", "inet", "blocking", "cloexec"]
        assert d("close " + h) == ["ok"]
        assert d("connect tcp 192.0.2.1:1") == ["err", "denied", "0"]
        assert d("connect tcp 127.0.0.1:1")[:2] == ["err", "connect_failed"]

        ok, lh, token = d("bind tcp 127.0.0.1:0 any web")
        assert ok == "ok" and len(token) == 32
        ok, addr = d("sockname " + lh)
        assert addr.startswith("127.0.0.1:")
        # serve: the driver accepts one connection and echoes a line.
        c = socket.create_connection(("127.0.0.1", int(addr.rsplit(":", 1)[1])), timeout=10)
        with c:
            c.sendall(b"line\n")
            assert d("serve " + lh) == ["ok"]
            assert c.recv(10) == b"line\n"
        assert d("bind tcp %s none -" % addr) == ["err", "share_conflict", "0"]

        ok, tok = d("bindtoken udp 127.0.0.1:0 sameapp dns")
        assert ok == "ok"
        ok, uh, tok2 = d("pickup " + tok)
        assert ok == "ok" and tok2 == tok
        assert d("fdinfo " + uh) == ["ok", "dgram", "inet", "blocking", "cloexec"]
        assert d("status") == ["ok", "2"]
        assert d("closefd " + uh) == ["ok"]
        assert d("status") == ["ok", "2"]  # the reference stays
        assert d("release " + tok) == ["ok"]
        assert d("release " + tok) == ["err", "not_found", "0"]
        assert d("status") == ["ok", "1"]
        assert d("reconnect") == ["ok"]  # the listener's reference goes with the connection
        assert d("status") == ["ok", "0"]
        assert d("close " + lh) == ["ok"]  # releasing after the connection went is no error
        ok, n = d("fds")
        assert ok == "ok" and int(n) >= 3
        assert d("bogus") == ["bad", "command", "bogus"]
        assert d("connect tcp") == ["bad", "arguments", "for", "connect"]
        assert d("close 99")[0] == "bad"
        assert d("quit") == ["ok"]
        assert d.p.wait(20) == 0
    finally:
        d.close()


def test_driver_killed_releases(sock_path):
    d = Driver(sock_path)
    try:
        ok, _, token = d("bind tcp 127.0.0.1:0 - -")
        assert ok == "ok"
        with sockfactory.Client(sock_path) as c:
            assert len(c.status().sockets) == 1
            d.p.send_signal(signal.SIGKILL)
            d.p.wait(20)
            wait_for("the killed driver's reference to go", lambda: c.status().sockets == [])
    finally:
        d.close()


def test_driver_unavailable(tmp_path):
    d = Driver(str(tmp_path / "none.sock"))
    try:
        assert d("status") == ["err", "unavailable", "2"]
    finally:
        d.close()
