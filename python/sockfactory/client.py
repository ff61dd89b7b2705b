"""The Client: one connection to the daemon, shared by every thread, and
the requests of the native protocol on it (docs/protocol.md)."""

from __future__ import annotations

import errno as _errno
import itertools
import math
import os
import socket
import threading
import time
from typing import Any, Dict, Optional, Tuple, Union

from . import _wire
from ._conn import Conn, NotSent
from ._paths import ENV_SOCKET, default_socket_path
from .bound import BoundSocket
from .errors import (
    ClientClosedError,
    LimitExceededError,
    NotFoundError,
    ProtocolError,
    ReplyTimeoutError,
    SockfactoryError,
    UnavailableError,
)
from .records import Binding, Status, Token

__all__ = ["Client", "join_host_port", "Address"]

#: How many requests one Client has in flight at once: the daemon's default
#: limit per connection. More wait for a reply.
MAX_IN_FLIGHT = 64

#: What connect waits for beyond its own timeout (or the daemon's default
#: limit of 10 s) before giving up on the reply.
_CONNECT_SLACK = 5.0
_DAEMON_CONNECT_LIMIT = 10.0

#: An address: ``"host:port"`` (IPv6 in brackets) or a ``(host, port)`` pair.
Address = Union[str, Tuple[str, int]]

# The bind request's socket options (docs/protocol.md, section 7.3) and the
# Python types they take.
_OPTIONS: Dict[str, type] = {
    "reuseaddr": bool,
    "reuseport": bool,
    "v6only": bool,
    "freebind": bool,
    "transparent": bool,
    "rcvbuf": int,
    "sndbuf": int,
    "bind_to_device": str,
    "pmtud_off": bool,
    "fastopen": int,
    "defer_accept": int,
    "backlog": int,
    "listen": bool,
}


def join_host_port(host: str, port: int) -> str:
    """Returns ``host:port``, with an IPv6 host in brackets."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError("port must be an int, not %s" % type(port).__name__)
    if not 0 <= port <= 65535:
        raise ValueError("port %d is not in 0-65535" % port)
    if ":" in host and not host.startswith("["):
        host = "[" + host + "]"
    return "%s:%d" % (host, port)


def _address(address: Address) -> str:
    if isinstance(address, tuple):
        if len(address) < 2:
            raise ValueError("want (host, port), got %r" % (address,))
        return join_host_port(address[0], address[1])
    if not isinstance(address, str):
        raise TypeError("address must be 'host:port' or (host, port), not %s" % type(address).__name__)
    return address


def _options(options: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    out: Dict[str, Any] = {}
    for k, v in options.items():
        want = _OPTIONS.get(k)
        if want is None:
            raise TypeError("unknown socket option %r; known: %s" % (k, ", ".join(sorted(_OPTIONS))))
        if v is None:
            continue
        if want is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise TypeError("option %s takes an int, not %r" % (k, v))
        if want is not int and not isinstance(v, want):
            raise TypeError("option %s takes a %s, not %r" % (k, want.__name__, v))
        out[k] = v
    return out or None


def _unavailable(path: str, e: OSError) -> UnavailableError:
    """Explains a failed connect to the daemon's socket at path: what is
    wrong and what to do."""
    n = e.errno
    if n in (_errno.EACCES, _errno.EPERM):
        msg = (
            "%s exists but this user (uid %d) may not open it (%s): ask an admin for the socket's "
            "group (ls -l %s shows it), or set %s (or socket_path) to a daemon of your own"
            % (path, os.getuid(), e.strerror, path, ENV_SOCKET)
        )
    elif n == _errno.ENOENT:
        msg = "no daemon socket at %s (%s): start sockfactoryd, or set %s (or socket_path) to its socket" % (
            path,
            e.strerror,
            ENV_SOCKET,
        )
    elif n == _errno.ECONNREFUSED:
        msg = "nothing listens on %s (%s): start sockfactoryd, or set %s (or socket_path) to its socket" % (
            path,
            e.strerror,
            ENV_SOCKET,
        )
    else:
        msg = "connecting to %s: %s (set %s or socket_path to the daemon's socket)" % (
            path,
            e.strerror or e,
            ENV_SOCKET,
        )
    return UnavailableError(msg, errno=n)


def _socket_from_fd(fd: int, op: str) -> socket.socket:
    try:
        return socket.socket(fileno=fd)
    except OSError as e:
        try:
            os.close(fd)
        except OSError:
            pass
        raise ProtocolError("%s reply carries a descriptor that is no socket: %s" % (op, e), op=op) from e


class Client:
    """A connection to a sockfactory daemon, shared by any number of threads.

    The client connects on first use, to ``socket_path`` or, when that is
    None, to :func:`sockfactory.default_socket_path` (``$SOCKFACTORY_SOCKET``,
    else the system daemon's socket, else the per-user one). Requests from
    many threads travel on that one connection at once, each waiting for its
    own reply. If the connection breaks (the daemon restarted, say), the
    requests in flight fail with :class:`UnavailableError` and the next
    request connects again; references held on the old connection are gone
    (this client does not reclaim them).

    References taken with :meth:`bind`, :meth:`listen` and :meth:`pickup`
    belong to this client's connection: :meth:`close` (or the process
    ending, however it ends) releases every one of them. Sockets already
    returned stay open; their owner closes them.

    Args:
        socket_path: the daemon's socket; None for the default rules.
        app: the application's name (1 to 64 printable ASCII characters),
            declared with ``hello`` on every new connection: the default
            share name of its binds, shown in status. None declares nothing.
        reply_timeout: seconds to wait for any one reply before giving up
            with :class:`ReplyTimeoutError` (a connect waits at least its
            own timeout, or the daemon's default limit, plus 5 s); None
            waits as long as it takes.

    The client is a context manager: ``with Client() as c: ...`` closes it.
    Do not use one Client on both sides of a ``fork()``.
    """

    def __init__(
        self,
        socket_path: Optional[str] = None,
        *,
        app: Optional[str] = None,
        reply_timeout: Optional[float] = 60.0,
    ) -> None:
        self._socket_path = socket_path
        self.app = app
        self.reply_timeout = reply_timeout
        self._lock = threading.Lock()  # guards _conn and _closed
        self._dial_lock = threading.Lock()  # one thread connects at a time
        self._conn: Optional[Conn] = None
        self._closed = False
        self._ids = itertools.count(1)
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    @property
    def socket_path(self) -> str:
        """The daemon socket this client connects to."""
        return self._socket_path or default_socket_path()

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<sockfactory.Client %s%s>" % (self.socket_path, " closed" if self._closed else "")

    def close(self) -> None:
        """Closes the connection to the daemon, which releases every
        reference it holds. Requests in flight fail with
        :class:`ClientClosedError`, and so do later ones. Sockets already
        returned stay open. Idempotent; returns once the connection's
        socket is closed."""
        with self._lock:
            self._closed = True
            c, self._conn = self._conn, None
        if c is not None:
            c.close(ClientClosedError("the client is closed"))

    # The connection.

    def _get_conn(self) -> Conn:
        c = self._conn
        if c is not None and not c.broken:
            return c
        with self._dial_lock:
            with self._lock:
                if self._closed:
                    raise ClientClosedError("the client is closed")
                c = self._conn
                if c is not None and not c.broken:
                    return c
            c = self._dial()
            with self._lock:
                closed = self._closed
                if not closed:
                    self._conn = c
            if closed:
                c.close(ClientClosedError("the client is closed"))
                raise ClientClosedError("the client is closed")
            return c

    def _dial(self) -> Conn:
        path = self.socket_path
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # close-on-exec (PEP 446)
        try:
            s.connect(path)
        except OSError as e:
            s.close()
            raise _unavailable(path, e) from e
        c = Conn(s, path)
        if self.app:
            try:
                rep = self._exchange(c, {"op": "hello", "hello": {"app": self.app}}, "hello", self.reply_timeout)
                rep.close()
            except BaseException:
                c.close(UnavailableError("hello failed"))
                raise
        return c

    def _exchange(self, c: Conn, req: Dict[str, Any], op: str, timeout: Optional[float]) -> _wire.Reply:
        """One request on connection c, without retries."""
        rid = next(self._ids)
        try:
            w = c.send(rid, _wire.encode_request(dict(req, id=rid)))
        except NotSent as ns:
            raise ns.err
        rep = self._wait(c, rid, w, timeout, op)
        if rep.error is not None:
            rep.error.op = op
            raise rep.error
        return rep

    @staticmethod
    def _wait(c: Conn, rid: int, w: Any, timeout: Optional[float], op: str) -> _wire.Reply:
        try:
            return c.wait(rid, w, timeout)
        except SockfactoryError as e:
            e.op = op
            raise

    def _round_trip(self, req: Dict[str, Any], op: str, timeout: Optional[float]) -> _wire.Reply:
        """Sends req and returns its successful reply, whose descriptors the
        caller then owns; raises the request's error otherwise. A request
        that could not be sent on a stale connection is sent once more on a
        new one; one refused unseen for the in-flight limit is sent again
        after another reply (or a pause)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._slots.acquire(timeout=-1 if timeout is None else timeout):
            raise ReplyTimeoutError("no free request slot within %gs" % timeout, op=op)
        try:
            rid = next(self._ids)
            packet = _wire.encode_request(dict(req, id=rid))
            pause = 0.001
            attempt = 0
            while True:
                c = self._get_conn()
                try:
                    w = c.send(rid, packet)
                except NotSent as ns:
                    attempt += 1
                    if attempt == 1:
                        continue  # the connection was stale: the daemon has not seen it
                    ns.err.op = op
                    raise ns.err
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                rep = self._wait(c, rid, w, left, op)
                err = rep.error
                if err is None:
                    return rep
                err.op = op
                if isinstance(err, LimitExceededError) and err.unseen:
                    # Refused before the daemon looked at it: the connection
                    # had as many requests in flight as the daemon allows.
                    if deadline is not None and time.monotonic() + pause > deadline:
                        raise err
                    c.wait_reply(w, pause)
                    pause = min(2 * pause, 1.0)
                    continue
                raise err
        finally:
            self._slots.release()

    def _timeout(self, at_least: float = 0.0) -> Optional[float]:
        if self.reply_timeout is None:
            return None
        return max(self.reply_timeout, at_least)

    # The requests.

    def connect(
        self,
        host: str,
        port: int,
        *,
        network: str = "tcp",
        timeout: Optional[float] = None,
        netns: Optional[str] = None,
    ) -> socket.socket:
        """Asks the daemon for a socket connected to host and port.

        Args:
            host: an IPv4 or IPv6 address (brackets optional) or a DNS name,
                which the daemon resolves.
            port: 1 to 65535.
            network: ``tcp``, ``tcp4``, ``tcp6``, ``udp``, ``udp4`` or
                ``udp6`` (the digit restricts the address family).
            timeout: seconds the daemon may spend resolving and connecting;
                None (or 0) for the daemon's limit (10 s by default). It
                does not become the returned socket's timeout.
            netns: the network namespace to connect from: a name under the
                daemon's ``[netns] dir``, ``"caller"`` for this process's
                own; None for the daemon's own.

        Returns:
            the connected socket, in blocking mode, close-on-exec; the
            caller owns it and closes it.

        Raises:
            DeniedError, ConnectFailedError (``errno`` says why: e.g.
            ``errno.ECONNREFUSED``), ResolveFailedError, DaemonTimeoutError,
            ... (see :mod:`sockfactory.errors`); UnavailableError when the
            daemon cannot be reached.
        """
        params: Dict[str, Any] = {"network": network, "address": join_host_port(host, port)}
        if timeout:
            if timeout < 0:
                raise ValueError("timeout must not be negative")
            params["timeout_ms"] = max(1, int(math.ceil(timeout * 1000)))
        if netns:
            params["netns"] = netns
        wait = self._timeout((timeout or _DAEMON_CONNECT_LIMIT) + _CONNECT_SLACK)
        rep = self._round_trip({"op": "connect", "connect": params}, "connect", wait)
        fds = rep.take_fds()
        if rep.body.get("connect") is None or len(fds) != 1:
            _wire.close_fds(fds)
            raise ProtocolError("connect reply without a socket", op="connect")
        return _socket_from_fd(fds[0], "connect")

    def _bind_request(
        self,
        network: str,
        address: Address,
        share: Optional[str],
        name: Optional[str],
        netns: Optional[str],
        token_only: bool,
        options: Dict[str, Any],
    ) -> Dict[str, Any]:
        return {
            "op": "bind",
            "bind": {
                "network": network,
                "address": _address(address),
                "share": share or None,
                "name": name or None,
                "options": _options(options),
                "token_only": True if token_only else None,
                "netns": netns or None,
            },
        }

    def _socket_reply(self, rep: _wire.Reply, op: str) -> BoundSocket:
        fds = rep.take_fds()
        b = rep.body.get("bind")
        if b is None or len(fds) != 1:
            _wire.close_fds(fds)
            raise ProtocolError("%s reply without the expected socket" % op, op=op)
        binding = Binding._from_wire(b)
        try:
            return BoundSocket._adopt(fds[0], binding, self._releaser(binding.token))
        except OSError as e:
            self._release_quietly(binding.token)
            raise ProtocolError("%s reply carries a descriptor that is no socket: %s" % (op, e), op=op) from e

    def bind(
        self,
        network: str,
        address: Address,
        *,
        share: Optional[str] = None,
        name: Optional[str] = None,
        netns: Optional[str] = None,
        **options: Any,
    ) -> BoundSocket:
        """Asks the daemon for a socket bound to address, listening for TCP
        (unless ``listen=False``), and takes a reference to it on this
        client's connection.

        Args:
            network: ``tcp``, ``tcp4``, ``tcp6``, ``udp``, ``udp4``, ``udp6``.
            address: ``"host:port"`` or ``(host, port)``: a numeric host
                (IPv6 in brackets in the string form), empty for all
                addresses; port 0 for any free one.
            share: the share mode: ``"none"`` (the default: nobody else may
                hold the socket), ``"same-name"`` (holders with the same
                share name may) or ``"any"``.
            name: the share name; None for this client's ``app``.
            netns: the network namespace to bind in (a name, ``"caller"``);
                None for the daemon's own.
            **options: socket options, each needing the daemon's policy to
                allow it (docs/protocol.md, section 7.3): ``reuseaddr``,
                ``reuseport``, ``v6only``, ``freebind``, ``transparent``,
                ``pmtud_off``, ``listen`` (bool); ``rcvbuf``, ``sndbuf``,
                ``fastopen``, ``defer_accept`` (seconds), ``backlog`` (int);
                ``bind_to_device`` (str). None leaves an option out.

        Returns:
            a :class:`BoundSocket` (blocking mode, close-on-exec) whose
            ``close()`` releases the reference, then closes the descriptor.

        Raises:
            DeniedError, ShareConflictError, BindFailedError (``errno``:
            e.g. ``errno.EADDRINUSE``), InvalidRequestError, ...
        """
        req = self._bind_request(network, address, share, name, netns, False, options)
        rep = self._round_trip(req, "bind", self._timeout())
        return self._socket_reply(rep, "bind")

    def listen(
        self,
        network: str,
        address: Address,
        *,
        share: Optional[str] = None,
        name: Optional[str] = None,
        netns: Optional[str] = None,
        **options: Any,
    ) -> BoundSocket:
        """:meth:`bind` for a listening TCP socket: network must be
        ``tcp``, ``tcp4`` or ``tcp6``, and ``listen=False`` is refused."""
        if not network.startswith("tcp"):
            raise ValueError("listen needs a TCP network (tcp, tcp4, tcp6), not %r" % network)
        if options.get("listen") is False:
            raise ValueError("listen with listen=False: use bind")
        return self.bind(network, address, share=share, name=name, netns=netns, **options)

    def bind_token(
        self,
        network: str,
        address: Address,
        *,
        share: Optional[str] = None,
        name: Optional[str] = None,
        netns: Optional[str] = None,
        **options: Any,
    ) -> Token:
        """The first phase of a two-phase bind: the daemon creates (or
        reuses) the socket and keeps it for a token, which any connection
        whose caller is granted the address may :meth:`pickup` once before
        it expires (30 s by default). The pending token counts as a holder
        for sharing; closing this client does not drop it (:meth:`release`
        on this client does). Arguments as for :meth:`bind`.

        Returns:
            the token, a :class:`Token` (a str) that also carries the bound
            address (``.local``) and expiry (``.expires``).
        """
        req = self._bind_request(network, address, share, name, netns, True, options)
        rep = self._round_trip(req, "bind", self._timeout())
        fds = rep.take_fds()
        b = rep.body.get("bind")
        if b is None or fds:
            _wire.close_fds(fds)
            raise ProtocolError("token-only bind reply without a token, or with a socket", op="bind")
        return Token(Binding._from_wire(b))

    def pickup(self, token: str) -> BoundSocket:
        """Exchanges a token from :meth:`bind_token` (of any connection) for
        the socket; the reference is then held by this client's connection.

        Returns:
            a :class:`BoundSocket` whose ``close()`` releases the reference.

        Raises:
            NotFoundError for a token that is unknown, expired, already
            picked up, or not granted to this caller (all alike).
        """
        rep = self._round_trip({"op": "pickup", "token": {"token": str(token)}}, "pickup", self._timeout())
        return self._socket_reply(rep, "pickup")

    def release(self, token: str) -> None:
        """Drops the reference token stands for and waits for the daemon to
        confirm. Only the connection that holds it (for a pending token: the
        one that asked for it) may, or an admin. Descriptors already received
        stay open.

        Raises:
            NotFoundError when this connection may not release it (or it
            does not exist).
        """
        rep = self._round_trip({"op": "release", "token": {"token": str(token)}}, "release", self._timeout())
        rep.close()

    def _releaser(self, token: str) -> Any:
        def release() -> None:
            try:
                self.release(token)
            except (UnavailableError, NotFoundError):
                # The connection is gone, and with it the reference (or a
                # reconnected client never held it).
                pass

        return release

    def _release_quietly(self, token: str) -> None:
        try:
            self.release(token)
        except SockfactoryError:
            pass

    def status(self) -> Status:
        """Lists the sockets the daemon holds that this caller's uid has
        references in (an admin: all), with their holders.

        Returns:
            a :class:`Status` (``.sockets``; ``.truncated`` when the listing
            was cut to fit one reply; ``.daemon`` statistics for admins).
        """
        rep = self._round_trip({"op": "status", "status": {}}, "status", self._timeout())
        rep.close()
        st = rep.body.get("status")
        if st is None:
            raise ProtocolError("status reply without a status", op="status")
        return Status._from_wire(st)

    def reload(self) -> None:
        """Makes the daemon re-read its configuration, as SIGHUP does
        (admins only: DeniedError otherwise; InvalidRequestError for a
        broken configuration, which the daemon then does not apply)."""
        rep = self._round_trip({"op": "reload"}, "reload", self._timeout())
        rep.close()

