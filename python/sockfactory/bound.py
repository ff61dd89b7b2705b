"""Bound sockets from the daemon whose close also releases the daemon's
reference (docs/protocol.md, section 7)."""

from __future__ import annotations

import socket
import threading
from typing import Callable, Optional

from .records import Binding

__all__ = ["BoundSocket"]


class BoundSocket(socket.socket):
    """A socket bound (and, for TCP, listening) by the daemon, as returned by
    ``bind``, ``listen`` and ``pickup``. It is a :class:`socket.socket`:
    ``accept``, ``recvfrom``, ``getsockname`` and the rest work as on any
    socket, and ``asyncio`` and ``socketserver`` take it.

    ``close()`` first releases the daemon's reference (a ``release``
    request on the connection that holds it), then closes the descriptor,
    once however often it is called; using it as a context manager does the
    same on exit. A release that cannot be made because the connection to
    the daemon is already gone is no error: the connection's end released
    the reference. Another release failure is raised after the descriptor
    is closed.

    Closing only the descriptor (``detach()`` then ``os.close``, or letting
    the object be collected) keeps the reference until the client's
    connection ends. Sockets from ``accept()`` and ``dup()`` are plain
    sockets that release nothing.

    Attributes:
        binding: the reference (token, bound address, network, shared).
    """

    binding: Optional[Binding]

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: Optional[int] = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self.binding = None
        self._sf_release: Optional[Callable[[], None]] = None
        self._sf_lock = threading.Lock()

    @classmethod
    def _adopt(cls, fd: int, binding: Binding, release: Callable[[], None]) -> "BoundSocket":
        """Wraps descriptor fd, which it then owns; release drops the
        reference. If fd is no socket, fd is closed and OSError raised."""
        try:
            s = cls(fileno=fd)
        except BaseException:
            try:
                socket.close(fd)
            except OSError:
                pass
            raise
        s.binding = binding
        s._sf_release = release
        return s

    @property
    def token(self) -> str:
        """The reference's token (``""`` for a socket from ``dup()``)."""
        return self.binding.token if self.binding is not None else ""

    @property
    def local(self) -> str:
        """The bound address as the daemon reported it, ``ip:port``."""
        return self.binding.local if self.binding is not None else ""

    def release(self) -> None:
        """Releases the daemon's reference now, keeping the descriptor
        open. close() then releases nothing more."""
        with self._sf_lock:
            release, self._sf_release = self._sf_release, None
        if release is not None:
            release()

    def close(self) -> None:
        """Releases the reference, then closes the socket."""
        try:
            self.release()
        finally:
            super().close()
