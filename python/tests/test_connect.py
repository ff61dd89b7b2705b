"""connect against the real daemon: bytes both ways, the delivered socket's
properties, and the daemon's refusals as typed errors."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest

import sockfactory
from conftest import PYDIR, count_fds, need, require_root, wait_for


def exchange(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        b = s.recv(len(data) - len(got))
        if not b:
            break
        got += b
    return got


def test_module_connect_echo(sock_path, echo_server):
    host, port = echo_server
    with sockfactory.connect(host, port) as s:
        assert exchange(s, b"hello, daemon\n") == b"hello, daemon\n"
        assert s.getpeername() == (host, port)
        assert s.type == socket.SOCK_STREAM and s.family == socket.AF_INET


def test_client_connect_socket_properties(client, echo_server):
    host, port = echo_server
    with client.connect(host, port, timeout=5) as s:
        fd = s.fileno()
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK, "want a blocking socket"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "want close-on-exec (MSG_CMSG_CLOEXEC)"
        assert s.gettimeout() is None
        payload = os.urandom(200000)
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(65536)
        assert got == payload


def test_connect_ipv6(client):
    srv = socket.socket(socket.AF_INET6)
    try:
        try:
            srv.bind(("::1", 0))
        except OSError as e:
            need(False, "no IPv6 loopback here (%s): enable IPv6 on lo" % e)
        srv.listen()
        port = srv.getsockname()[1]
        for host in ("::1", "[::1]"):
            with client.connect(host, port, network="tcp6") as s:
                conn, _ = srv.accept()
                with conn:
                    s.sendall(b"six")
                    assert conn.recv(3) == b"six"
                assert s.family == socket.AF_INET6
    finally:
        srv.close()


def test_connect_udp(client):
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    try:
        with client.connect("127.0.0.1", srv.getsockname()[1], network="udp") as s:
            assert s.type == socket.SOCK_DGRAM
            s.send(b"datagram")
            data, peer = srv.recvfrom(100)
            assert data == b"datagram"
            srv.sendto(b"back", peer)
            assert s.recv(100) == b"back"
    finally:
        srv.close()


def test_connect_refused_has_errno(client, refused_port):
    with pytest.raises(sockfactory.ConnectFailedError) as ei:
        client.connect("127.0.0.1", refused_port)
    e = ei.value
    assert e.code == "connect_failed"
    assert e.errno == errno.ECONNREFUSED
    assert isinstance(e, OSError) and isinstance(e, sockfactory.SockfactoryError)
    assert e.op == "connect"
    assert "connection refused" in e.message


def test_connect_denied(client):
    with pytest.raises(sockfactory.DeniedError) as ei:
        client.connect("192.0.2.10", 443)
    assert ei.value.code == "denied"
    assert ei.value.errno is None
    # The connection stays usable after an error reply.
    assert client.status().sockets == []


def test_connect_invalid_request(client):
    with pytest.raises(sockfactory.InvalidRequestError) as ei:
        client.connect("127.0.0.1", 80, network="sctp")
    assert ei.value.code == "invalid_request"


def test_unavailable_when_no_daemon(tmp_path):
    path = str(tmp_path / "nothing.sock")
    with pytest.raises(sockfactory.UnavailableError) as ei:
        sockfactory.connect("127.0.0.1", 80, socket_path=path)
    assert ei.value.errno == errno.ENOENT
    assert isinstance(ei.value, ConnectionError)
    assert "start sockfactoryd" in ei.value.message


def test_closed_client_refuses(sock_path):
    c = sockfactory.Client(sock_path)
    c.close()
    c.close()  # idempotent
    with pytest.raises(sockfactory.ClientClosedError):
        c.status()


def test_denied_for_unknown_uid(sock_path):
    """A process of a uid no rule names is denied everything."""
    require_root()
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, %r)
        import sockfactory
        try:
            sockfactory.connect("127.0.0.1", 80)
        except sockfactory.DeniedError as e:
            print(e.code, e.message)
        """
        % PYDIR
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        user=65534,
        group=65534,
        extra_groups=[],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert out.startswith("denied ") and "65534" in out, out


def test_default_socket_path_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("SOCKFACTORY_SOCKET", "/x/y.sock")
    assert sockfactory.default_socket_path() == "/x/y.sock"
    monkeypatch.delenv("SOCKFACTORY_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert sockfactory.user_socket() == str(tmp_path / "sockfactory" / "sockfactory.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    assert sockfactory.user_socket() == "/var/tmp/sockfactory-%d/sockfactory.sock" % os.getuid()
    monkeypatch.delenv("TMPDIR")
    assert sockfactory.user_socket() == "/tmp/sockfactory-%d/sockfactory.sock" % os.getuid()
    if os.geteuid() == 0 or os.path.exists(sockfactory.SYSTEM_SOCKET):
        assert sockfactory.default_socket_path() == sockfactory.SYSTEM_SOCKET


_USER_SOCKET_CHECK = textwrap.dedent(
    """
    import os, socket, sys
    sys.path.insert(0, %r)
    import sockfactory
    runtime = sys.argv[1]
    os.environ.pop("SOCKFACTORY_SOCKET", None)
    os.environ["XDG_RUNTIME_DIR"] = runtime
    d = os.path.join(runtime, "sockfactory")
    os.mkdir(d, 0o700)
    path = os.path.join(d, "sockfactory.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)
    got = [sockfactory.default_socket_path()]
    os.chmod(d, 0o777)  # others could have planted the socket: not trusted
    got.append(sockfactory.default_socket_path())
    s.close()
    print(got[0] == path, got[1] == sockfactory.SYSTEM_SOCKET)
    """
)


def test_default_socket_path_user_socket():
    """A non-root client finds its own per-user daemon's socket, but not
    one in a directory others may write (run as uid 65534 when root)."""
    if os.path.exists(sockfactory.SYSTEM_SOCKET):
        pytest.skip("a system daemon's socket exists here: it wins over the per-user one")
    top = tempfile.mkdtemp(prefix="sockfactory-pytest-")
    os.chmod(top, 0o755)  # reachable for uid 65534
    runtime = os.path.join(top, "runtime")
    os.mkdir(runtime, 0o700)
    kw = {}
    if os.geteuid() == 0:
        os.chown(runtime, 65534, 65534)
        kw = dict(user=65534, group=65534, extra_groups=[])
    try:
        r = subprocess.run(
            [sys.executable, "-c", _USER_SOCKET_CHECK % PYDIR, runtime],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            timeout=60,
            **kw,
        )
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["True", "True"]


def test_fd_count_stable_over_many_connects(client, echo_server):
    host, port = echo_server
    client.status()  # the daemon connection is open from here on
    before = count_fds()
    for _ in range(50):
        with client.connect(host, port) as s:
            assert exchange(s, b"x") == b"x"
        with pytest.raises(sockfactory.DeniedError):
            client.connect("192.0.2.1", 1)
    # The echo server (in this process) closes its ends as it sees ours go.
    wait_for("this process's descriptors to return to %d" % before, lambda: count_fds() == before)
