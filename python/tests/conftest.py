"""Test fixtures: the real daemon, built once from this repository and
started with a generated configuration in a temporary directory; a loopback
echo server; and the check, after every test, that this process's and the
daemon's open descriptors are back to what they were before it.

Tests that need something this machine may lack (the Go toolchain, root)
skip with a reason and a fix, and fail instead when
SOCKFACTORY_REQUIRE_ROOT=1 (CI sets it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterator, List, Optional

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYDIR)
sys.path.insert(0, PYDIR)

import sockfactory  # noqa: E402

REQUIRE = os.environ.get("SOCKFACTORY_REQUIRE_ROOT") == "1"

# Every socket option a rule may allow.
ALL_OPTIONS = (
    '["reuseaddr", "reuseport", "v6only", "freebind", "transparent", "rcvbuf", "sndbuf", '
    '"bind_to_device", "pmtud_off", "fastopen", "defer_accept", "backlog", "listen"]'
)


def need(ok: bool, why: str) -> None:
    """Skips the test when ok is false, or fails it under
    SOCKFACTORY_REQUIRE_ROOT=1."""
    if ok:
        return
    if REQUIRE:
        pytest.fail("SOCKFACTORY_REQUIRE_ROOT=1 and " + why)
    pytest.skip(why)


def require_root() -> None:
    need(os.geteuid() == 0, "this test needs root (run the tests as root, e.g. sudo python/run-tests)")


def count_fds(pid: Optional[int] = None) -> int:
    """Open descriptors of process pid (None: this one), not counting the
    one that lists them."""
    if pid is None:
        return len(os.listdir("/proc/self/fd")) - 1
    return len(os.listdir("/proc/%d/fd" % pid))


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls cond until it holds, failing the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@pytest.fixture(scope="session")
def daemon_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The daemon, built from this repository once per session."""
    go = shutil.which("go")
    need(go is not None, "the Go toolchain (go) is not in PATH; install it to build sockfactoryd")
    out = str(tmp_path_factory.mktemp("bin") / "sockfactoryd")
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    r = subprocess.run(
        [go, "build", "-o", out, "./cmd/sockfactoryd"],  # type: ignore[list-item]
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if r.returncode != 0:
        pytest.fail("building sockfactoryd failed:\n" + r.stdout.decode(errors="replace"))
    return out


class Daemon:
    """A running sockfactoryd with a configuration of its own."""

    def __init__(self, binary: str, rules: str, daemon_extra: str = "", top: str = "") -> None:
        # A directory of its own that other uids may enter (for the tests
        # that connect as another user).
        self.dir = tempfile.mkdtemp(prefix="sockfactory-pytest-")
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "run", "sockfactory.sock")
        self.config = os.path.join(self.dir, "sockfactoryd.toml")
        with open(self.config, "w") as f:
            f.write(
                '[daemon]\nsocket = "%s"\nsocket_mode = "0666"\n%s\n%s\n%s\n'
                % (self.socket, daemon_extra, top, rules)
            )
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.binary = binary
        self.proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]

    def start(self) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-config", self.config, "-log-level", "debug", "-log-flush", "0"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                pytest.fail("the daemon exited at start (%s):\n%s" % (self.proc.returncode, self.log()))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                s.connect(self.socket)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the daemon's socket did not answer within 20s:\n" + self.log())
                time.sleep(0.01)
            finally:
                s.close()
        # A warm-up bind and status, so that what the daemon opens once
        # (somaxconn, ...) is open before any baseline is taken.
        with sockfactory.Client(self.socket) as c:
            c.status()
            try:
                c.bind("tcp", "127.0.0.1:0").close()
            except sockfactory.SockfactoryError:
                pass
        self.wait_idle()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def fds(self) -> int:
        return count_fds(self.pid)

    def sessions(self) -> int:
        """Native connections open, from the daemon's log."""
        log = self.log()
        return log.count("client connected") - log.count("client disconnected")

    def wait_idle(self) -> None:
        wait_for("the daemon's connections to end", lambda: self.sessions() <= 0)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the daemon did not exit within 20s of SIGTERM:\n" + self.log())
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        assert code == 0, "daemon exit status %d after SIGTERM" % code


def default_rules(uid: int) -> str:
    return """
[[rule]]
name = "tests"
users = [%d]
connect = ["127.0.0.0/8:*", "[::1]:*"]
bind = ["*:127.0.0.1:*", "*:[::1]:*"]
bind_options = %s
""" % (uid, ALL_OPTIONS)


@pytest.fixture(scope="session")
def daemon(daemon_binary: str) -> Iterator[Daemon]:
    """The daemon most tests share: this uid may connect to and bind on
    the loopback addresses, with every option."""
    d = Daemon(daemon_binary, default_rules(os.getuid()))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def start_daemon(daemon_binary: str) -> Iterator[Callable[..., Daemon]]:
    """Starts daemons of the test's own configuration, stopped after it."""
    started: List[Daemon] = []

    def start(rules: str, daemon_extra: str = "", top: str = "") -> Daemon:
        d = Daemon(daemon_binary, rules, daemon_extra, top)
        started.append(d)
        d.start()
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def sock_path(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared daemon's socket, also set as SOCKFACTORY_SOCKET so that
    the library's default path rules find it."""
    monkeypatch.setenv("SOCKFACTORY_SOCKET", daemon.socket)
    return daemon.socket


@pytest.fixture
def client(sock_path: str) -> Iterator[sockfactory.Client]:
    c = sockfactory.Client(sock_path, app="pytest")
    yield c
    c.close()


@pytest.fixture(autouse=True)
def no_fd_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test after which this process, or the shared daemon if the
    test used it, has more (or fewer) open descriptors than before."""
    d: Optional[Daemon] = None
    if "daemon" in request.fixturenames:
        d = request.getfixturevalue("daemon")
        d.wait_idle()
    mine = count_fds()
    theirs = d.fds() if d is not None else 0
    yield
    wait_for("this process's descriptors to return to %d" % mine, lambda: count_fds() == mine, 5)
    if d is not None:
        wait_for(
            "the daemon's descriptors to return to %d" % theirs,
            lambda: d.fds() == theirs,  # type: ignore[union-attr]
            10,
        )


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            b = self.request.recv(65536)
            if not b:
                return
            self.request.sendall(b)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 512  # many connects at once: no SYN retries


@pytest.fixture
def echo_server() -> Iterator["tuple[str, int]"]:
    """A TCP echo server on 127.0.0.1 and a port the kernel chose."""
    srv = EchoServer(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    yield srv.server_address[0], srv.server_address[1]
    srv.shutdown()
    t.join()
    srv.server_close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback TCP port where connects are refused: a socket holds it
    bound but does not listen, so no other process can take it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()
