"""Typed records of the daemon's results: bindings, tokens and status
(docs/protocol.md, sections 7.2 and 7.8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["Binding", "Token", "HolderStatus", "SocketStatus", "DaemonStats", "Status"]


@dataclass(frozen=True)
class Binding:
    """A reference to a bound socket the daemon holds.

    Attributes:
        token: the reference's token, 32 hex digits: what release (and, for
            a token-only bind, pickup) takes. Treat it as a secret.
        local: the bound address, ``ip:port`` (IPv6 in brackets), with the
            real port when 0 was asked for.
        network: ``"tcp"`` or ``"udp"``.
        shared: True when the socket already existed (another reference
            holds it, or it was lingering).
        expires: for a token-only bind, the seconds until the token expires
            unless picked up; None otherwise.
    """

    token: str
    local: str
    network: str
    shared: bool = False
    expires: Optional[float] = None

    @classmethod
    def _from_wire(cls, b: Dict[str, Any]) -> "Binding":
        ms = b.get("expires_ms")
        return cls(
            token=b.get("token") or "",
            local=b.get("local") or "",
            network=b.get("network") or "",
            shared=bool(b.get("shared")),
            expires=ms / 1000.0 if ms else None,
        )


class Token(str):
    """The token of a token-only bind: a :class:`str` (pass it to
    ``pickup`` or ``release`` as it is, or send it to another process) that
    also carries the :class:`Binding` it came with, as ``binding``, and its
    fields ``local``, ``network``, ``shared`` and ``expires``."""

    binding: Binding

    def __new__(cls, binding: Binding) -> "Token":
        t = super().__new__(cls, binding.token)
        t.binding = binding
        return t

    @property
    def local(self) -> str:
        """The bound address, ``ip:port``."""
        return self.binding.local

    @property
    def network(self) -> str:
        """``"tcp"`` or ``"udp"``."""
        return self.binding.network

    @property
    def shared(self) -> bool:
        """Whether the socket already existed."""
        return self.binding.shared

    @property
    def expires(self) -> Optional[float]:
        """Seconds until the token expires, as the daemon said at bind."""
        return self.binding.expires

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Token, (self.binding,))


@dataclass(frozen=True)
class HolderStatus:
    """One reference to a cached socket.

    Attributes:
        share: its share mode (``none``, ``same-name``, ``any``).
        name: its share name, ``""`` for none.
        uid, pid: the caller of the connection holding it (for a pending
            token: that asked for it).
        app: that connection's app name, ``""`` for none.
        pending: True for a token not yet picked up.
        token: the token, shown for the caller's own references (all, to an
            admin); ``""`` otherwise.
    """

    share: str
    uid: int
    pid: int
    name: str = ""
    app: str = ""
    pending: bool = False
    token: str = ""

    @classmethod
    def _from_wire(cls, h: Dict[str, Any]) -> "HolderStatus":
        return cls(
            share=h.get("share") or "",
            uid=h.get("uid") or 0,
            pid=h.get("pid") or 0,
            name=h.get("name") or "",
            app=h.get("app") or "",
            pending=bool(h.get("pending")),
            token=h.get("token") or "",
        )


@dataclass(frozen=True)
class SocketStatus:
    """One socket the daemon holds.

    Attributes:
        network: ``"tcp"`` or ``"udp"``.
        local: the bound address, ``ip:port``.
        refs: references, pending tokens included (0 while lingering).
        age: seconds since the daemon created it.
        linger: its linger time in seconds, 0.0 for none.
        lingering: while it has no reference, seconds since the last went;
            None otherwise.
        netns, netns_id: the name its network namespace was asked by and
            that namespace's identity (``DEV:INO``); ``""`` for the
            daemon's own.
        holders: the references listed.
    """

    network: str
    local: str
    refs: int
    age: float
    linger: float = 0.0
    lingering: Optional[float] = None
    netns: str = ""
    netns_id: str = ""
    holders: List[HolderStatus] = field(default_factory=list)

    @classmethod
    def _from_wire(cls, s: Dict[str, Any]) -> "SocketStatus":
        lingering = s.get("lingering_ms")
        return cls(
            network=s.get("network") or "",
            local=s.get("local") or "",
            refs=s.get("refs") or 0,
            age=(s.get("age_ms") or 0) / 1000.0,
            linger=(s.get("linger_ms") or 0) / 1000.0,
            lingering=lingering / 1000.0 if lingering else None,
            netns=s.get("netns") or "",
            netns_id=s.get("netns_id") or "",
            holders=[HolderStatus._from_wire(h) for h in s.get("holders") or []],
        )


@dataclass(frozen=True)
class DaemonStats:
    """The daemon's own resources, shown to admins only."""

    pid: int
    goroutines: int
    fds: int
    heap_bytes: int
    sessions: int
    sockets: int
    refs: int

    @classmethod
    def _from_wire(cls, d: Dict[str, Any]) -> "DaemonStats":
        return cls(**{k: d.get(k) or 0 for k in ("pid", "goroutines", "fds", "heap_bytes", "sessions", "sockets", "refs")})


@dataclass(frozen=True)
class Status:
    """The result of a status request.

    Attributes:
        sockets: the sockets this caller may see (an admin: all).
        truncated: True when the listing was cut to fit one reply; ``total``
            is then how many sockets there were.
        total: with ``truncated``, the number of sockets before cutting;
            else ``len(sockets)``.
        daemon: the daemon's statistics, for admins; None otherwise.
    """

    sockets: List[SocketStatus]
    truncated: bool = False
    total: int = 0
    daemon: Optional[DaemonStats] = None

    @classmethod
    def _from_wire(cls, st: Dict[str, Any]) -> "Status":
        sockets = [SocketStatus._from_wire(s) for s in st.get("sockets") or []]
        truncated = bool(st.get("truncated"))
        d = st.get("daemon")
        return cls(
            sockets=sockets,
            truncated=truncated,
            total=(st.get("total") or len(sockets)) if truncated else len(sockets),
            daemon=DaemonStats._from_wire(d) if d is not None else None,
        )

    def __len__(self) -> int:
        return len(self.sockets)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.sockets)
