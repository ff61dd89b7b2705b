"""asyncio variants: the daemon round trip runs on the event loop itself,
on a non-blocking SOCK_SEQPACKET socket (``loop.sock_connect``,
``loop.sock_sendall``, and ``recvmsg`` when ``loop.add_reader`` says the
reply is there), so nothing blocks the loop and no thread is used.

Each call opens a daemon connection of its own and closes it before it
returns. The loop must support ``add_reader`` (the default selector loop
on Linux, and uvloop, do).
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any, List, Optional, Tuple

from . import _wire
from ._paths import default_socket_path
from .client import _DAEMON_CONNECT_LIMIT, _CONNECT_SLACK, _unavailable, join_host_port
from .errors import ProtocolError, ReplyTimeoutError, UnavailableError

__all__ = ["connect", "open_connection"]

_Packet = Tuple[bytes, List[int], int, Optional[str]]


async def _recv(loop: asyncio.AbstractEventLoop, s: socket.socket, timeout: Optional[float]) -> _Packet:
    """Receives one packet without blocking the loop. The descriptors in it
    belong to the caller once this returns; if it raises (cancelled, timed
    out), none is left open."""
    fut: "asyncio.Future[_Packet]" = loop.create_future()

    def readable() -> None:
        if fut.done():
            return
        try:
            pkt = _wire.recv_packet(s)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            fut.set_exception(e)
            return
        fut.set_result(pkt)

    loop.add_reader(s.fileno(), readable)
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except BaseException:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            _wire.close_fds(fut.result()[1])
        else:
            fut.cancel()
        raise
    finally:
        loop.remove_reader(s.fileno())


async def connect(
    host: str,
    port: int,
    *,
    network: str = "tcp",
    timeout: Optional[float] = None,
    netns: Optional[str] = None,
    socket_path: Optional[str] = None,
    reply_timeout: Optional[float] = 60.0,
) -> socket.socket:
    """Asks the daemon for a socket connected to (host, port), as
    :func:`sockfactory.connect` does, without blocking the event loop.
    Returns the connected socket in non-blocking mode (what asyncio wants);
    the caller owns it. reply_timeout bounds the wait for the daemon's reply
    as in :class:`sockfactory.Client` (at least timeout, or the daemon's
    default limit, plus 5 s); None waits as long as it takes."""
    loop = asyncio.get_running_loop()
    params = {"network": network, "address": join_host_port(host, port)}  # type: dict
    if timeout:
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        params["timeout_ms"] = max(1, int(math.ceil(timeout * 1000)))
    if netns:
        params["netns"] = netns
    packet = _wire.encode_request({"id": 1, "op": "connect", "connect": params})
    wait = None
    if reply_timeout is not None:
        wait = max(reply_timeout, (timeout or _DAEMON_CONNECT_LIMIT) + _CONNECT_SLACK)
    path = socket_path or default_socket_path()

    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.setblocking(False)
        try:
            await loop.sock_connect(s, path)
        except OSError as e:
            raise _unavailable(path, e) from e
        try:
            await loop.sock_sendall(s, packet)
        except OSError as e:
            raise UnavailableError("sending a request to %s: %s" % (path, e), errno=e.errno, op="connect") from e
        while True:
            try:
                pkt = await _recv(loop, s, wait)
            except asyncio.TimeoutError:
                raise ReplyTimeoutError("no reply from the daemon at %s within %gs" % (path, wait or 0), op="connect")
            except OSError as e:
                raise UnavailableError(
                    "reading from the daemon at %s: %s" % (path, e), errno=e.errno, op="connect"
                ) from e
            data, fds, flags, cerr = pkt
            if not data and not fds and cerr is None and not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise UnavailableError("the daemon at %s closed the connection" % path, op="connect")
            rep = _wire.decode_reply(data, fds, flags, cerr)
            if rep.id is not None and rep.id != 1 and not rep.fatal:
                rep.close()  # not ours; cannot happen with one request
                continue
            break
    finally:
        s.close()
    if rep.error is not None:
        rep.error.op = "connect"
        raise rep.error
    fds = rep.take_fds()
    if rep.body.get("connect") is None or len(fds) != 1:
        _wire.close_fds(fds)
        raise ProtocolError("connect reply without a socket", op="connect")
    try:
        sock = socket.socket(fileno=fds[0])
    except OSError as e:
        _wire.close_fds(fds)
        raise ProtocolError("connect reply carries a descriptor that is no socket: %s" % e, op="connect") from e
    sock.setblocking(False)
    return sock


async def open_connection(
    host: str,
    port: int,
    *,
    network: str = "tcp",
    timeout: Optional[float] = None,
    netns: Optional[str] = None,
    socket_path: Optional[str] = None,
    reply_timeout: Optional[float] = 60.0,
    **kwds: Any,
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects to (host, port) through the daemon and returns asyncio
    streams on the connection, like :func:`asyncio.open_connection`.
    network must be TCP (``tcp``, ``tcp4``, ``tcp6``); other arguments as
    for :func:`connect`. Further keywords (``limit``, ``ssl``,
    ``server_hostname``, ...) go to :func:`asyncio.open_connection`.
    Closing the writer closes the socket."""
    if not network.startswith("tcp"):
        raise ValueError("open_connection needs a TCP network (tcp, tcp4, tcp6), not %r" % network)
    sock = await connect(
        host,
        port,
        network=network,
        timeout=timeout,
        netns=netns,
        socket_path=socket_path,
        reply_timeout=reply_timeout,
    )
    try:
        return await asyncio.open_connection(sock=sock, **kwds)
    except BaseException:
        sock.close()
        raise
