"""The wire format: request encoding, and reading and checking one reply
packet with the descriptors it carries (docs/protocol.md, sections 3, 5 and
9). Types and framing only: no connection state, no policy.

Every function here that receives descriptors either hands them on in its
result or closes them: none is left open unseen.
"""

from __future__ import annotations

import array
import json
import os
import socket
from typing import Any, Dict, List, Optional, Tuple

from .errors import ProtocolError, SockfactoryError, error_for

__all__ = [
    "VERSION",
    "MAX_MESSAGE",
    "MAX_FDS",
    "CONTROL_SIZE",
    "Reply",
    "encode_request",
    "recv_packet",
    "decode_reply",
    "close_fds",
]

#: The protocol version this library speaks.
VERSION = 1
#: The largest packet either side may send.
MAX_MESSAGE = 65536
#: The most descriptors one reply may carry.
MAX_FDS = 16

_INT_SIZE = array.array("i").itemsize
#: Room for MAX_FDS descriptors in one SCM_RIGHTS message.
CONTROL_SIZE = socket.CMSG_SPACE(MAX_FDS * _INT_SIZE)

_MAX_U64 = (1 << 64) - 1


def close_fds(fds: List[int]) -> None:
    """Closes every descriptor in fds and empties the list."""
    while fds:
        fd = fds.pop()
        try:
            os.close(fd)
        except OSError:
            pass


def encode_request(req: Dict[str, Any]) -> bytes:
    """Encodes a request (members other than v) as one packet. Members
    whose value is None are left out."""
    body = {"v": VERSION}
    body.update(_drop_none(req))
    b = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
    if len(b) > MAX_MESSAGE:
        raise ValueError("request of %d bytes exceeds %d" % (len(b), MAX_MESSAGE))
    return b


def _drop_none(d: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if v is None:
            continue
        out[k] = _drop_none(v) if isinstance(v, dict) else v
    return out


def recv_packet(sock: socket.socket) -> Tuple[bytes, List[int], int, Optional[str]]:
    """Receives one packet with one recvmsg call: a 65536-byte buffer, room
    for 16 descriptors, MSG_CMSG_CLOEXEC. Returns (data, fds, flags,
    control_error): fds are every descriptor of every SCM_RIGHTS message,
    which the caller owns; control_error describes control data of another
    kind, or None. Raises what recvmsg raises (BlockingIOError on a
    non-blocking socket with nothing to read)."""
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, CONTROL_SIZE, socket.MSG_CMSG_CLOEXEC)
    fds: List[int] = []
    cerr: Optional[str] = None
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(cdata[: len(cdata) - len(cdata) % _INT_SIZE])
            fds.extend(a)
        elif cerr is None:
            cerr = "control message of level %d, type %d, want SCM_RIGHTS" % (level, kind)
    return data, fds, flags, cerr


class Reply:
    """One reply packet, decoded and checked.

    ``id`` is the request id it answers, or None when it could not be read;
    ``fatal`` is True when the connection's stream of replies cannot be
    trusted any more (a reply cut short by MSG_TRUNC, or one whose id is
    unreadable): the caller then fails every request in flight. ``error`` is
    the exception the request fails with (a daemon error, or a
    ProtocolError), or None on success, when ``body`` holds the reply and
    ``fds`` its descriptors (owned by whoever holds the Reply; closed
    already when ``error`` is set)."""

    __slots__ = ("id", "body", "fds", "error", "fatal")

    def __init__(
        self,
        id: Optional[int],
        body: Dict[str, Any],
        fds: List[int],
        error: Optional[SockfactoryError],
        fatal: bool = False,
    ) -> None:
        self.id = id
        self.body = body
        self.fds = fds
        self.error = error
        self.fatal = fatal

    def take_fds(self) -> List[int]:
        """Returns the descriptors, which the caller then owns."""
        fds, self.fds = self.fds, []
        return fds

    def close(self) -> None:
        """Closes the descriptors the reply still holds."""
        close_fds(self.fds)


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def decode_reply(data: bytes, fds: List[int], flags: int, control_error: Optional[str]) -> Reply:
    """Decodes and checks one received packet (rules 4 to 7 of section 9).
    On any protocol error the descriptors are closed before it returns."""
    if flags & socket.MSG_TRUNC:
        close_fds(fds)
        return Reply(
            None, {}, [], ProtocolError("reply larger than %d bytes (MSG_TRUNC)" % MAX_MESSAGE), True
        )
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError too
        close_fds(fds)
        return Reply(None, {}, [], ProtocolError("undecodable reply: %s" % e), True)
    if not isinstance(body, dict):
        close_fds(fds)
        return Reply(None, {}, [], ProtocolError("reply is not a JSON object"), True)
    rid = body.get("id")
    if not _is_int(rid) or not 0 <= rid <= _MAX_U64:
        close_fds(fds)
        return Reply(None, body, [], ProtocolError("reply without a readable id: %r" % (rid,)), True)
    problem = _check(body, _REPLY, "reply")
    if problem is None and body.get("v") != VERSION:
        problem = "reply has protocol version %r, want %d" % (body.get("v"), VERSION)
    announced = body.get("fds")
    announced = 0 if announced is None else announced
    if problem is None and not 0 <= announced <= MAX_FDS:
        problem = "reply announces %d descriptors; at most %d allowed" % (announced, MAX_FDS)
    if problem is None:
        results = [k for k in ("error", "connect", "bind", "status", "upgrade", "ok") if body.get(k) is not None]
        if len(results) > 1:
            problem = "reply holds both %s and %s" % (results[0], results[1])
    if problem is None and control_error is not None:
        problem = control_error
    if problem is None and flags & socket.MSG_CTRUNC:
        problem = "descriptors were truncated by the kernel (MSG_CTRUNC)"
    if problem is None and announced != len(fds):
        problem = "reply announced %d descriptors, %d arrived" % (announced, len(fds))
    if problem is not None:
        close_fds(fds)
        return Reply(rid, body, [], ProtocolError(problem))
    err = body.get("error")
    if err is not None:
        close_fds(fds)
        return Reply(
            rid,
            body,
            [],
            error_for(
                err["code"],
                err["message"],
                err.get("errno"),
                unseen=bool(err.get("unseen")),
            ),
        )
    return Reply(rid, body, fds, None)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The reply's members, at every level (docs/protocol.md, sections 5 and 7).
# A schema is a dict of member name to a type, a nested schema, or a
# one-element list holding the schema of an array's elements. A member
# that is null counts as absent, as the daemon reads requests.
_INT = int
_STR = str
_BOOL = bool

_ERROR = {"code": _STR, "message": _STR, "errno": _INT, "unseen": _BOOL}
_CONNECT = {"local": _STR, "remote": _STR}
_BIND = {
    "token": _STR,
    "local": _STR,
    "network": _STR,
    "expires_ms": _INT,
    "shared": _BOOL,
    "reclaim": _STR,
}
_HOLDER = {
    "share": _STR,
    "name": _STR,
    "uid": _INT,
    "pid": _INT,
    "app": _STR,
    "pending": _BOOL,
    "token": _STR,
}
_SOCKET = {
    "network": _STR,
    "local": _STR,
    "refs": _INT,
    "age_ms": _INT,
    "linger_ms": _INT,
    "lingering_ms": _INT,
    "netns": _STR,
    "netns_id": _STR,
    "holders": [_HOLDER],
}
_DAEMON = {
    "pid": _INT,
    "goroutines": _INT,
    "fds": _INT,
    "heap_bytes": _INT,
    "sessions": _INT,
    "sockets": _INT,
    "refs": _INT,
}
_STATUS = {"sockets": [_SOCKET], "truncated": _BOOL, "total": _INT, "daemon": _DAEMON}
_UPGRADE = {"old_pid": _INT, "new_pid": _INT, "version": _STR, "took_ms": _INT}
_REPLY = {
    "v": _INT,
    "id": _INT,
    "fds": _INT,
    "error": _ERROR,
    "connect": _CONNECT,
    "bind": _BIND,
    "status": _STATUS,
    "upgrade": _UPGRADE,
    "ok": _BOOL,
}
# Members that must be present (not null) when their object is.
_REQUIRED = {id(_ERROR): ("code", "message")}


def _check(value: Any, schema: Any, where: str) -> Optional[str]:
    """Returns what is wrong with value against schema, or None."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return "%s: want an object, got %s" % (where, type(value).__name__)
        for k, v in value.items():
            if k not in schema:
                return "%s: unknown member %r" % (where, k)
            if v is None:
                continue
            p = _check(v, schema[k], where + "." + k)
            if p is not None:
                return p
        for k in _REQUIRED.get(id(schema), ()):
            if value.get(k) is None:
                return "%s: member %r is missing" % (where, k)
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return "%s: want an array, got %s" % (where, type(value).__name__)
        for i, e in enumerate(value):
            p = _check(e, schema[0], "%s[%d]" % (where, i))
            if p is not None:
                return p
        return None
    if schema is _INT:
        ok = _is_int(value)
    else:
        ok = isinstance(value, schema)
    if not ok:
        return "%s: want %s, got %s" % (where, schema.__name__, type(value).__name__)
    return None
