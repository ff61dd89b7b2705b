"""The client against a scripted fake daemon: replies that break the
protocol (docs/protocol.md, section 9) fail with ProtocolError and leave no
descriptor open; replies out of order, late replies to abandoned requests,
refusals for the in-flight limit, unknown error codes."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import tempfile
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import sockfactory
import sockfactory.aio
from conftest import count_fds, wait_for

# A script maps a request to the replies to send: (reply object or raw
# bytes, number of descriptors to attach). It runs in the fake's thread.
Script = Callable[[Dict[str, Any]], List[Tuple[Any, int]]]


class FakeDaemon:
    """A SOCK_SEQPACKET server in a thread of this process that answers
    each request with what its script says, one connection at a time."""

    def __init__(self, script: Script) -> None:
        self.dir = tempfile.mkdtemp(prefix="sockfactory-fake-")
        self.path = os.path.join(self.dir, "fake.sock")
        self.script = script
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.srv.bind(self.path)
        self.srv.listen(8)
        self.srv.settimeout(0.05)
        self.stopping = threading.Event()
        self.sent = threading.Semaphore(0)  # released after each reply is sent
        self.connections = 0
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(0.05)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return
            req = json.loads(data)
            for reply, nfds in self.script(req):
                if reply is None:
                    return  # hang up
                payload = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                fds = [socket.socket().detach() for _ in range(nfds)]
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                try:
                    conn.sendmsg([payload], anc)
                except OSError:
                    return  # the client went away
                finally:
                    for fd in fds:
                        os.close(fd)
                    self.sent.release()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.srv.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture
def fake():
    fakes: List[FakeDaemon] = []

    def start(script: Script) -> FakeDaemon:
        f = FakeDaemon(script)
        fakes.append(f)
        return f

    yield start
    for f in fakes:
        f.close()


def ok_status(req: Dict[str, Any]) -> Tuple[Any, int]:
    return {"v": 1, "id": req["id"], "status": {"sockets": []}}, 0


def connected(req: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    r = {"v": 1, "id": req["id"], "fds": 1, "connect": {"local": "127.0.0.1:1", "remote": "127.0.0.1:2"}}
    r.update(extra)
    return r


def by_op(connect: Callable[[Dict[str, Any]], List[Tuple[Any, int]]]) -> Script:
    """A script answering status well and connect as given."""

    def script(req: Dict[str, Any]) -> List[Tuple[Any, int]]:
        if req["op"] == "status":
            return [ok_status(req)]
        return connect(req)

    return script


def check_protocol_error(f: FakeDaemon, c: sockfactory.Client, base: int) -> sockfactory.ProtocolError:
    with pytest.raises(sockfactory.ProtocolError) as ei:
        c.connect("127.0.0.1", 2)
    assert ei.value.code == "protocol" and ei.value.op == "connect"
    # The fake closes its copies once sent; the client must have closed
    # every descriptor that arrived.
    assert f.sent.acquire(timeout=10)
    wait_for("every received descriptor to be closed", lambda: count_fds() == base, 5)
    return ei.value


def open_client(f: FakeDaemon) -> Tuple[sockfactory.Client, int]:
    c = sockfactory.Client(f.path, reply_timeout=10)
    assert c.status().sockets == []
    assert f.sent.acquire(timeout=10)
    return c, count_fds()


def test_announced_fd_missing(fake):
    f = fake(by_op(lambda req: [(connected(req), 0)]))
    c, base = open_client(f)
    with c:
        e = check_protocol_error(f, c, base)
        assert "announced 1 descriptors, 0 arrived" in e.message
        # The packet boundary is intact: the connection goes on.
        assert c.status().sockets == []
        assert f.connections == 1


def test_two_fds_announced_one(fake):
    f = fake(by_op(lambda req: [(connected(req), 2)]))
    c, base = open_client(f)
    with c:
        check_protocol_error(f, c, base)
        assert c.status().sockets == []


def test_truncated_control_data(fake):
    # 20 descriptors do not fit the 16 the receiver has room for: the
    # kernel sets MSG_CTRUNC and closes the rest; the 16 that arrived
    # must be closed too.
    f = fake(by_op(lambda req: [(connected(req, fds=16), 20)]))
    c, base = open_client(f)
    with c:
        e = check_protocol_error(f, c, base)
        assert "MSG_CTRUNC" in e.message


def test_reply_larger_than_buffer(fake):
    def big(req: Dict[str, Any]) -> List[Tuple[Any, int]]:
        r = json.dumps(connected(req)).encode()
        return [(r[:-1] + b"," + b'"pad":"' + b"x" * 70000 + b'"}', 1)]

    f = fake(by_op(big))
    c, base = open_client(f)
    with c:
        # The broken connection is closed, and so the fake's end of it.
        e = check_protocol_error(f, c, base - 2)
        assert "MSG_TRUNC" in e.message
        # The client connects again for the next request.
        assert c.status().sockets == []
        assert f.connections == 2


def test_unknown_member(fake):
    f = fake(by_op(lambda req: [(connected(req, surprise=1), 1)]))
    c, base = open_client(f)
    with c:
        e = check_protocol_error(f, c, base)
        assert "unknown member 'surprise'" in e.message


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"fds": 17},
        {"fds": "1"},
        {"connect": {"local": "127.0.0.1:1", "remote": "127.0.0.1:2", "zone": "x"}},
        {"error": {"code": "denied", "message": "both"}},
    ],
    ids=["version", "fds-range", "fds-type", "nested-unknown", "error-and-result"],
)
def test_malformed_replies(fake, change):
    f = fake(by_op(lambda req: [(connected(req, **change), 1)]))
    c, base = open_client(f)
    with c:
        check_protocol_error(f, c, base)


def test_connect_reply_without_socket_result(fake):
    f = fake(by_op(lambda req: [({"v": 1, "id": req["id"], "fds": 1, "ok": True}, 1)]))
    c, base = open_client(f)
    with c:
        check_protocol_error(f, c, base)


def test_unknown_error_code(fake):
    err = {"code": "disk_on_fire", "message": "the disk is on fire", "errno": 5}
    f = fake(by_op(lambda req: [({"v": 1, "id": req["id"], "error": err}, 0)]))
    c, _ = open_client(f)
    with c:
        with pytest.raises(sockfactory.SockfactoryError) as ei:
            c.connect("127.0.0.1", 2)
        assert type(ei.value) is sockfactory.SockfactoryError
        assert (ei.value.code, ei.value.errno, ei.value.message) == ("disk_on_fire", 5, "the disk is on fire")


def test_daemon_hangs_up(fake):
    f = fake(by_op(lambda req: [(None, 0)]))
    c, _ = open_client(f)
    with c:
        with pytest.raises(sockfactory.UnavailableError) as ei:
            c.connect("127.0.0.1", 2)
        assert ei.value.code == "unavailable"


def test_refused_unseen_is_sent_again(fake):
    seen: List[int] = []

    def script(req: Dict[str, Any]) -> List[Tuple[Any, int]]:
        seen.append(req["id"])
        if len(seen) == 1:
            err = {"code": "limit_exceeded", "message": "more than 1 requests in flight", "unseen": True}
            return [({"v": 1, "id": req["id"], "error": err}, 0)]
        return [(connected(req), 1)]

    f = fake(script)
    with sockfactory.Client(f.path) as c:
        with c.connect("127.0.0.1", 2) as s:
            assert s.type == socket.SOCK_STREAM
        assert len(seen) == 2 and seen[0] == seen[1]


def test_replies_out_of_order(fake):
    held: List[Dict[str, Any]] = []

    def script(req: Dict[str, Any]) -> List[Tuple[Any, int]]:
        # Hold the first request; answer the second, then the first.
        if not held:
            held.append(req)
            return []
        return [(connected(req), 1), ({"v": 1, "id": held[0]["id"], "status": {"sockets": []}}, 0)]

    f = fake(script)
    with sockfactory.Client(f.path) as c:
        got: Dict[str, Any] = {}
        t = threading.Thread(target=lambda: got.setdefault("status", c.status()))
        t.start()
        wait_for("the first request to reach the fake", lambda: bool(held))
        with c.connect("127.0.0.1", 2) as s:
            assert s.family == socket.AF_INET
        t.join(10)
        assert got["status"].sockets == []


def test_late_reply_to_abandoned_request_is_closed(fake):
    go = threading.Event()
    bound = {"token": "ab" * 16, "local": "127.0.0.1:1", "network": "tcp", "reclaim": "cd" * 16}

    def script(req: Dict[str, Any]) -> List[Tuple[Any, int]]:
        if req["op"] == "status":
            return [ok_status(req)]
        go.wait(10)
        return [({"v": 1, "id": req["id"], "fds": 1, "bind": bound}, 1)]

    f = fake(script)
    c, base = open_client(f)
    c.reply_timeout = 0.2
    with c:
        with pytest.raises(sockfactory.ReplyTimeoutError) as ei:
            c.pickup(bound["token"])
        assert isinstance(ei.value, TimeoutError) and ei.value.op == "pickup"
        go.set()
        assert f.sent.acquire(timeout=10)
        assert c.status().sockets == []  # read after the late reply
        wait_for("the late reply's descriptor to be closed", lambda: count_fds() == base, 5)


def test_aio_protocol_error_closes_fds(fake):
    f = fake(by_op(lambda req: [(connected(req), 2)]))
    base = count_fds()

    async def run() -> None:
        with pytest.raises(sockfactory.ProtocolError):
            await sockfactory.aio.connect("127.0.0.1", 2, socket_path=f.path)

    asyncio.run(run())
    assert f.sent.acquire(timeout=10)
    wait_for("every received descriptor to be closed", lambda: count_fds() == base, 5)


def test_aio_cancelled_while_waiting(fake):
    go = threading.Event()

    def script(req: Dict[str, Any]) -> List[Tuple[Any, int]]:
        go.wait(10)
        return [(connected(req), 1)]

    f = fake(script)
    base = count_fds()

    async def run() -> None:
        t = asyncio.ensure_future(sockfactory.aio.connect("127.0.0.1", 2, socket_path=f.path))
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(run())
    go.set()
    assert f.sent.acquire(timeout=10)
    wait_for("every descriptor to be closed", lambda: count_fds() == base, 5)


def test_error_classes():
    for code, cls in [
        ("invalid_request", sockfactory.InvalidRequestError),
        ("unsupported_version", sockfactory.UnsupportedVersionError),
        ("denied", sockfactory.DeniedError),
        ("resolve_failed", sockfactory.ResolveFailedError),
        ("connect_failed", sockfactory.ConnectFailedError),
        ("timeout", sockfactory.DaemonTimeoutError),
        ("limit_exceeded", sockfactory.LimitExceededError),
        ("internal", sockfactory.InternalError),
        ("share_conflict", sockfactory.ShareConflictError),
        ("not_found", sockfactory.NotFoundError),
        ("bind_failed", sockfactory.BindFailedError),
    ]:
        e = sockfactory.error_for(code, "m", 0)
        assert type(e) is cls and e.code == code and e.errno is None and e.message == "m"
        assert isinstance(e, OSError)
    t = sockfactory.error_for("timeout", "slow")
    assert isinstance(t, TimeoutError) and t.temporary
    assert TimeoutError is __builtins__["TimeoutError"] if isinstance(__builtins__, dict) else True
    e = sockfactory.error_for("connect_failed", "refused", 111)
    assert e.errno == 111 and e.strerror == "refused" and not e.temporary
    assert isinstance(sockfactory.UnavailableError("x"), ConnectionError)
    assert sockfactory.UnavailableError("x").code == "unavailable"
    assert sockfactory.ProtocolError("x").code == "protocol"
    import pickle

    p = pickle.loads(pickle.dumps(e))
    assert type(p) is sockfactory.ConnectFailedError and p.errno == 111 and p.code == "connect_failed"
