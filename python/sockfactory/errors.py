"""The exceptions of the sockfactory client.

Every failure the library reports is a :class:`SockfactoryError`. Each error
code of the protocol (docs/protocol.md, section 11) has a subclass of its
own; callers branch on the class (``except DeniedError``) or on ``.code``,
never on the message, whose wording may change.

:class:`SockfactoryError` is an :class:`OSError`: ``except OSError`` around
socket code catches the daemon's refusals too, and ``.errno`` is the Linux
errno the daemon reported (``errno.ECONNREFUSED`` for a refused connect,
``errno.EADDRINUSE`` for a bind on a busy port), or ``None`` when the reply
carried none. ``.strerror`` is the daemon's message.

Two subclasses also derive from a builtin of the same meaning, so that
generic handlers work:

- :class:`DaemonTimeoutError` (code ``timeout``: the daemon's time for the
  request ran out) is also a :class:`TimeoutError`. It is not named
  ``TimeoutError`` so that it never shadows the builtin.
- :class:`UnavailableError` (the daemon could not be reached, or the
  connection to it broke) is also a :class:`ConnectionError`.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "SockfactoryError",
    "InvalidRequestError",
    "UnsupportedVersionError",
    "DeniedError",
    "ResolveFailedError",
    "ConnectFailedError",
    "DaemonTimeoutError",
    "LimitExceededError",
    "InternalError",
    "ShareConflictError",
    "NotFoundError",
    "BindFailedError",
    "UnavailableError",
    "ClientClosedError",
    "ReplyTimeoutError",
    "ProtocolError",
    "error_for",
]


class SockfactoryError(OSError):
    """A failure reported by the daemon or found by the client.

    Attributes:
        code: the machine-readable class: a daemon error code such as
            ``"denied"``, or ``"unavailable"`` / ``"protocol"`` for the
            client's own :class:`UnavailableError` and :class:`ProtocolError`.
        message: the explanation, for people (also ``strerror``).
        errno: the Linux errno behind the failure, or ``None``.
        op: the request's operation (``"connect"``, ``"bind"``, ...), or
            ``""`` when not known.
        unseen: ``True`` when the daemon refused the request before looking
            at it (``limit_exceeded`` for too many requests in flight), so
            that sending it again is safe.
    """

    #: The code of this class; the base class has none of its own.
    default_code: str = ""

    code: str
    message: str
    op: str
    unseen: bool

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        errno: Optional[int] = None,
        op: str = "",
        unseen: bool = False,
    ) -> None:
        if errno:
            super().__init__(errno, message)
        else:
            super().__init__(message)
            self.errno = None  # type: ignore[assignment]
            self.strerror = message  # type: ignore[assignment]
        self.code = code if code is not None else self.default_code
        self.message = message
        self.op = op
        self.unseen = unseen

    def __str__(self) -> str:
        where = "sockfactory " + self.op + " " if self.op else "sockfactory "
        s = where + self.code + ": " + self.message
        if self.errno:
            s += " (errno %d)" % self.errno
        return s

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            _rebuild,
            (type(self), self.message, self.code, self.errno, self.op, self.unseen),
        )

    @property
    def temporary(self) -> bool:
        """Whether retrying may succeed (``timeout``, ``limit_exceeded``)."""
        return self.code in ("timeout", "limit_exceeded")


def _rebuild(
    cls: Type[SockfactoryError],
    message: str,
    code: str,
    errno: Optional[int],
    op: str,
    unseen: bool,
) -> SockfactoryError:
    return cls(message, code=code, errno=errno, op=op, unseen=unseen)


class InvalidRequestError(SockfactoryError):
    """``invalid_request``: the daemon could not accept the request as written."""

    default_code = "invalid_request"


class UnsupportedVersionError(SockfactoryError):
    """``unsupported_version``: the daemon speaks another protocol version."""

    default_code = "unsupported_version"


class DeniedError(SockfactoryError):
    """``denied``: the daemon's policy does not grant the request to this caller."""

    default_code = "denied"


class ResolveFailedError(SockfactoryError):
    """``resolve_failed``: the daemon could not resolve the host name."""

    default_code = "resolve_failed"


class ConnectFailedError(SockfactoryError):
    """``connect_failed``: every connect attempt failed; ``errno`` says why
    (``errno.ECONNREFUSED``, ``errno.ENETUNREACH``, ...)."""

    default_code = "connect_failed"


class DaemonTimeoutError(SockfactoryError, TimeoutError):
    """``timeout``: the request's time ran out in the daemon (resolving, or
    every connect attempt). Also a builtin :class:`TimeoutError`."""

    default_code = "timeout"


class LimitExceededError(SockfactoryError):
    """``limit_exceeded``: a daemon limit refused the request; retry later."""

    default_code = "limit_exceeded"


class InternalError(SockfactoryError):
    """``internal``: the daemon failed for a reason of its own."""

    default_code = "internal"


class ShareConflictError(SockfactoryError):
    """``share_conflict``: the socket is held with a share mode (or options)
    that forbid this request. Nothing changed."""

    default_code = "share_conflict"


class NotFoundError(SockfactoryError):
    """``not_found``: the token is unknown, expired, already picked up or not
    held by this connection (or a named network namespace does not exist)."""

    default_code = "not_found"


class BindFailedError(SockfactoryError):
    """``bind_failed``: the daemon could not create or bind the socket;
    ``errno`` says why (``errno.EADDRINUSE``, ``errno.EACCES``, ...)."""

    default_code = "bind_failed"


class UnavailableError(SockfactoryError, ConnectionError):
    """The daemon could not be reached, or the connection to it broke before
    the reply. The request may or may not have been carried out; a socket it
    produced is closed, never leaked. Also a builtin :class:`ConnectionError`.
    ``errno`` is that of the failed socket call, when there was one."""

    default_code = "unavailable"


class ClientClosedError(UnavailableError):
    """The :class:`~sockfactory.Client` was closed before or while the
    request was made."""


class ReplyTimeoutError(UnavailableError, TimeoutError):
    """No reply came within the client's own bound on waiting
    (``Client(reply_timeout=...)``). The request is abandoned: a socket its
    late reply brings is closed. Also a builtin :class:`TimeoutError`."""


class ProtocolError(SockfactoryError):
    """The daemon's reply broke the protocol (undecodable, too large, a
    descriptor count that does not match, an unknown member). Every
    descriptor that came with it has been closed."""

    default_code = "protocol"


_BY_CODE: Dict[str, Type[SockfactoryError]] = {
    cls.default_code: cls
    for cls in (
        InvalidRequestError,
        UnsupportedVersionError,
        DeniedError,
        ResolveFailedError,
        ConnectFailedError,
        DaemonTimeoutError,
        LimitExceededError,
        InternalError,
        ShareConflictError,
        NotFoundError,
        BindFailedError,
    )
}


def error_for(
    code: str,
    message: str,
    errno: Optional[int] = None,
    *,
    op: str = "",
    unseen: bool = False,
) -> SockfactoryError:
    """Returns the exception for a daemon error reply: an instance of the
    code's subclass, or of :class:`SockfactoryError` itself (with ``code``
    set) for a code this library does not know."""
    cls = _BY_CODE.get(code, SockfactoryError)
    return cls(message, code=code, errno=errno or None, op=op, unseen=unseen)
