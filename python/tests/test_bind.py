"""Bound sockets against the real daemon: bind and listen, release on
close, share modes, tokens and pickup, release, and the references a
connection's end (a close, a SIGKILL) releases."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
from typing import List

import pytest

import sockfactory
from conftest import PYDIR, wait_for


def listed(c: sockfactory.Client) -> List[str]:
    """The bound addresses status lists, as network/local."""
    return ["%s/%s" % (s.network, s.local) for s in c.status().sockets]


def test_listen_accepts_and_releases_on_close(client):
    with client.listen("tcp", "127.0.0.1:0") as l:
        assert isinstance(l, sockfactory.BoundSocket) and isinstance(l, socket.socket)
        assert len(l.token) == 32 and l.token == l.binding.token
        host, port = l.getsockname()
        assert l.binding.local == "%s:%d" % (host, port) and l.binding.network == "tcp"
        assert not l.binding.shared
        assert "tcp/" + l.local in listed(client)
        with socket.create_connection((host, port), timeout=10) as peer:
            conn, _ = l.accept()
            with conn:
                assert type(conn) is socket.socket  # accepted sockets release nothing
                peer.sendall(b"ping")
                assert conn.recv(4) == b"ping"
        local = l.local
    assert l.fileno() == -1
    # Released on close: the daemon no longer holds it, and the port is free.
    assert "tcp/" + local not in listed(client)
    l.close()  # idempotent
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        s.bind(("127.0.0.1", int(local.rsplit(":", 1)[1])))
        s.listen()


def test_module_listen_owns_its_connection(sock_path, daemon):
    l = sockfactory.listen("tcp", ("127.0.0.1", 0), app="module-listen")
    try:
        with sockfactory.Client(sock_path) as c:
            st = [s for s in c.status().sockets if s.local == l.local]
            assert len(st) == 1 and st[0].holders[0].app == "module-listen"
    finally:
        l.close()
    assert l.local not in [s.local for s in sockfactory.status().sockets]


def test_bind_udp(client):
    with client.bind("udp", "127.0.0.1:0", share="same-name", name="dns", pmtud_off=True) as u:
        assert u.type == socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"query", u.getsockname())
            data, addr = u.recvfrom(100)
            assert data == b"query"
        [st] = [s for s in client.status().sockets if s.local == u.local]
        assert st.network == "udp" and st.refs == 1
        [h] = st.holders
        assert (h.share, h.name, h.app, h.uid, h.pid) == ("same-name", "dns", "pytest", os.getuid(), os.getpid())
        assert h.token == u.token and not h.pending


def test_bind_options_and_invalid(client):
    with client.listen("tcp", "127.0.0.1:0", backlog=8, rcvbuf=65536) as l:
        assert l.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    with pytest.raises(sockfactory.InvalidRequestError):
        client.bind("udp", "127.0.0.1:0", backlog=4)  # a TCP option
    with pytest.raises(TypeError):
        client.bind("tcp", "127.0.0.1:0", nodelay=True)
    with client.bind("tcp", "127.0.0.1:0", listen=False) as b:
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    with pytest.raises(ValueError):
        client.listen("udp", "127.0.0.1:0")


def test_bind_denied(client):
    with pytest.raises(sockfactory.DeniedError) as ei:
        client.bind("tcp", "0.0.0.0:0")
    assert ei.value.code == "denied" and ei.value.op == "bind"


def test_bind_failed_eaddrinuse(client):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        with pytest.raises(sockfactory.BindFailedError) as ei:
            client.bind("udp", "127.0.0.1:%d" % holder.getsockname()[1])
    assert ei.value.errno == errno.EADDRINUSE
    assert isinstance(ei.value, OSError)


def test_share_conflict_and_sharing(client, sock_path):
    with client.bind("udp", "127.0.0.1:0", share="same-name", name="resolver") as a:
        addr = a.local
        with sockfactory.Client(sock_path, app="other") as other:
            with pytest.raises(sockfactory.ShareConflictError) as ei:
                other.bind("udp", addr, share="any")
            assert ei.value.code == "share_conflict"
            with pytest.raises(sockfactory.ShareConflictError):
                other.bind("udp", addr)  # share none
            # Same name: the very same socket.
            with other.bind("udp", addr, share="same-name", name="resolver") as b:
                assert b.binding.shared
                assert os.fstat(a.fileno()).st_ino == os.fstat(b.fileno()).st_ino
                [st] = [s for s in client.status().sockets if s.local == addr]
                assert st.refs == 2
            [st] = [s for s in client.status().sockets if s.local == addr]
            assert st.refs == 1


def test_token_pickup_from_second_client(client, sock_path):
    tok = client.bind_token("tcp", "127.0.0.1:0", share="any")
    assert isinstance(tok, str) and isinstance(tok, sockfactory.Token)
    assert len(tok) == 32 and tok.expires is not None and tok.expires > 0
    [st] = [s for s in client.status().sockets if s.local == tok.local]
    assert st.holders[0].pending and st.holders[0].token == tok
    with sockfactory.Client(sock_path) as second:
        with second.pickup(tok) as s:
            assert s.token == tok
            assert s.getsockname()[1] == int(tok.local.rsplit(":", 1)[1])
            with pytest.raises(sockfactory.NotFoundError):
                second.pickup(tok)  # single use
            with pytest.raises(sockfactory.NotFoundError):
                client.release(tok)  # held by the second connection now
            [st] = [x for x in second.status().sockets if x.local == tok.local]
            assert not st.holders[0].pending
    # The second client's close released it.
    assert tok.local not in [x.local for x in client.status().sockets]


def test_release(client):
    tok = client.bind_token("udp", "127.0.0.1:0")
    client.release(tok)
    assert tok.local not in [x.local for x in client.status().sockets]
    with pytest.raises(sockfactory.NotFoundError):
        client.release(tok)
    with pytest.raises(sockfactory.NotFoundError):
        client.pickup(tok)
    with pytest.raises(sockfactory.InvalidRequestError):
        client.release("")


def test_release_keeps_descriptor(client):
    s = client.bind("udp", "127.0.0.1:0")
    try:
        s.release()
        assert s.local not in [x.local for x in client.status().sockets]
        s.getsockname()  # still open
    finally:
        s.close()


def test_closefd_keeps_reference_until_client_close(sock_path):
    c = sockfactory.Client(sock_path)
    try:
        s = c.bind("tcp", "127.0.0.1:0")
        local = s.local
        os.close(s.detach())  # the descriptor only
        assert local in [x.local for x in c.status().sockets]
    finally:
        c.close()
    wait_for(
        "the daemon to release the closed connection's reference",
        lambda: local not in [x.local for x in sockfactory.status(socket_path=sock_path).sockets],
    )


_HOLDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, %r)
    import sockfactory
    c = sockfactory.Client()
    s = c.bind("tcp", "127.0.0.1:0")
    print(s.local, flush=True)
    sys.stdin.read()
    """
)


def test_crash_release(sock_path, client):
    """A process that holds a reference is killed with SIGKILL: the daemon
    releases the reference and closes the socket."""
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLDER % PYDIR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        assert p.stdout is not None
        local = p.stdout.readline().decode().strip()
        assert local.startswith("127.0.0.1:"), local
        [st] = [x for x in client.status().sockets if x.local == local]
        assert st.holders[0].pid == p.pid
        p.send_signal(signal.SIGKILL)
        p.wait(20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()
    wait_for(
        "the killed holder's socket to leave status",
        lambda: local not in [x.local for x in client.status().sockets],
    )


def test_status_records(client):
    with client.listen("tcp", "127.0.0.1:0", share="any", name="web") as l:
        st = client.status()
        assert isinstance(st, sockfactory.Status)
        assert not st.truncated and st.total == len(st.sockets) and st.daemon is None
        [s] = [x for x in st.sockets if x.local == l.local]
        assert isinstance(s, sockfactory.SocketStatus)
        assert s.network == "tcp" and s.refs == 1 and s.age >= 0 and s.lingering is None
        assert s.netns == "" and s.netns_id == ""
        [h] = s.holders
        assert isinstance(h, sockfactory.HolderStatus)
        assert (h.share, h.name, h.app) == ("any", "web", "pytest")


def test_admin_status_has_daemon_stats(start_daemon, echo_server):
    d = start_daemon(
        """
[[rule]]
name = "admin"
users = [%d]
bind = ["*:127.0.0.1:*"]
admin = true
"""
        % os.getuid()
    )
    with sockfactory.Client(d.socket) as c:
        with c.bind("udp", "127.0.0.1:0"):
            st = c.status()
            assert st.daemon is not None and st.daemon.pid == d.pid
            assert st.daemon.sockets == 1 and st.daemon.refs == 1 and st.daemon.sessions >= 1
        c.reload()


def test_hello_app_is_checked(sock_path):
    with sockfactory.Client(sock_path, app="has space") as c:
        with pytest.raises(sockfactory.InvalidRequestError) as ei:
            c.status()
        assert ei.value.op == "hello"
