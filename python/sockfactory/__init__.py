"""Client library for sockfactoryd, the daemon that creates sockets for other
processes and passes them over as file descriptors (docs/protocol.md).

Use a :class:`Client` for many requests, from any number of threads, on one
daemon connection; it owns the references its binds and pickups take, and
closing it releases them. The module-level functions each use a client of
their own, so that nothing is shared and nothing global is kept:

- :func:`connect` and :func:`status` open a connection to the daemon for
  the one request and close it before they return;
- :func:`bind`, :func:`listen` and :func:`pickup` open a connection that the
  returned socket owns: closing the socket releases the reference and closes
  that connection (so does this process ending, however it ends);
- :func:`bind_token` opens a connection for the one request; the pending
  token it returns outlives it.

There is no module-level ``release``: only the connection that holds a
reference (or an admin) may release it, so use :meth:`Client.release`, or
close the :class:`BoundSocket`.

Everything is standard library only. :mod:`sockfactory.aio` has the asyncio
variants. The exceptions are in :mod:`sockfactory.errors` and exported here.
"""

from __future__ import annotations

import socket
from typing import Any, Optional

from ._paths import ENV_SOCKET, SYSTEM_SOCKET, default_socket_path, user_socket
from .bound import BoundSocket
from .client import Address, Client, join_host_port
from .errors import (
    BindFailedError,
    ClientClosedError,
    ConnectFailedError,
    DaemonTimeoutError,
    DeniedError,
    InternalError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    ProtocolError,
    ReplyTimeoutError,
    ResolveFailedError,
    ShareConflictError,
    SockfactoryError,
    UnavailableError,
    UnsupportedVersionError,
    error_for,
)
from .records import Binding, DaemonStats, HolderStatus, SocketStatus, Status, Token

__version__ = "0.1.0"

__all__ = [
    "Address",
    "BindFailedError",
    "Binding",
    "BoundSocket",
    "Client",
    "ClientClosedError",
    "ConnectFailedError",
    "DaemonStats",
    "DaemonTimeoutError",
    "DeniedError",
    "ENV_SOCKET",
    "HolderStatus",
    "InternalError",
    "InvalidRequestError",
    "LimitExceededError",
    "NotFoundError",
    "ProtocolError",
    "ReplyTimeoutError",
    "ResolveFailedError",
    "SYSTEM_SOCKET",
    "ShareConflictError",
    "SocketStatus",
    "SockfactoryError",
    "Status",
    "Token",
    "UnavailableError",
    "UnsupportedVersionError",
    "bind",
    "bind_token",
    "connect",
    "default_socket_path",
    "error_for",
    "join_host_port",
    "listen",
    "pickup",
    "status",
    "user_socket",
]


def connect(
    host: str,
    port: int,
    *,
    network: str = "tcp",
    timeout: Optional[float] = None,
    netns: Optional[str] = None,
    socket_path: Optional[str] = None,
) -> socket.socket:
    """Asks the daemon for a socket connected to (host, port), over a daemon
    connection of its own, closed before it returns. See
    :meth:`Client.connect` for the arguments; socket_path None means
    :func:`default_socket_path`. The caller owns the returned socket."""
    with Client(socket_path) as c:
        return c.connect(host, port, network=network, timeout=timeout, netns=netns)


def status(*, socket_path: Optional[str] = None) -> Status:
    """:meth:`Client.status` over a daemon connection of its own. The
    listing shows the references of every connection of this uid."""
    with Client(socket_path) as c:
        return c.status()


def _owning(s: BoundSocket, c: Client) -> BoundSocket:
    # The socket owns c: its release also closes c.
    release = s._sf_release

    def release_and_close() -> None:
        try:
            if release is not None:
                release()
        finally:
            c.close()

    s._sf_release = release_and_close
    return s


def bind(
    network: str,
    address: Address,
    *,
    share: Optional[str] = None,
    name: Optional[str] = None,
    app: Optional[str] = None,
    netns: Optional[str] = None,
    socket_path: Optional[str] = None,
    **options: Any,
) -> BoundSocket:
    """:meth:`Client.bind` on a daemon connection the returned socket owns:
    closing the socket releases the reference and closes the connection.
    app is declared on that connection (``Client(app=...)``): the default
    share name and what status shows."""
    c = Client(socket_path, app=app)
    try:
        return _owning(c.bind(network, address, share=share, name=name, netns=netns, **options), c)
    except BaseException:
        c.close()
        raise


def listen(
    network: str,
    address: Address,
    *,
    share: Optional[str] = None,
    name: Optional[str] = None,
    app: Optional[str] = None,
    netns: Optional[str] = None,
    socket_path: Optional[str] = None,
    **options: Any,
) -> BoundSocket:
    """:meth:`Client.listen` (a listening TCP socket) on a daemon connection
    the returned socket owns, as :func:`bind`."""
    c = Client(socket_path, app=app)
    try:
        return _owning(c.listen(network, address, share=share, name=name, netns=netns, **options), c)
    except BaseException:
        c.close()
        raise


def bind_token(
    network: str,
    address: Address,
    *,
    share: Optional[str] = None,
    name: Optional[str] = None,
    app: Optional[str] = None,
    netns: Optional[str] = None,
    socket_path: Optional[str] = None,
    **options: Any,
) -> Token:
    """:meth:`Client.bind_token` over a daemon connection of its own, closed
    before it returns: the pending token stays until picked up or expired
    (no connection may release it then but an admin's)."""
    with Client(socket_path, app=app) as c:
        return c.bind_token(network, address, share=share, name=name, netns=netns, **options)


def pickup(
    token: str,
    *,
    app: Optional[str] = None,
    socket_path: Optional[str] = None,
) -> BoundSocket:
    """:meth:`Client.pickup` on a daemon connection the returned socket
    owns, as :func:`bind`."""
    c = Client(socket_path, app=app)
    try:
        return _owning(c.pickup(token), c)
    except BaseException:
        c.close()
        raise
