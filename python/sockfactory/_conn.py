"""One daemon connection shared by many threads: requests are sent by the
threads that make them, replies are read by one reader thread and handed to
the waiting thread by request id (docs/protocol.md, section 8).

Descriptor ownership: the reader thread owns every descriptor it receives
until it hands the reply to the waiting thread; a reply nobody waits for
(unknown id, abandoned request, connection failed meanwhile) has its
descriptors closed by the reader. The connection's own socket is closed by
the reader thread when it exits, so that no thread closes it while another
is blocked reading it.
"""

from __future__ import annotations

import socket
import threading
from typing import Dict, Optional, Set

from . import _wire
from .errors import LimitExceededError, ReplyTimeoutError, SockfactoryError, UnavailableError


def copy_error(err: SockfactoryError) -> SockfactoryError:
    """A fresh exception like err, so that each thread raises its own."""
    return type(err)(err.message, code=err.code, errno=err.errno, op=err.op, unseen=err.unseen)


class NotSent(Exception):
    """The request was not sent: the daemon has not seen it."""

    def __init__(self, err: SockfactoryError) -> None:
        super().__init__(str(err))
        self.err = err


class _Waiter:
    __slots__ = ("event", "reply", "error", "gen")

    def __init__(self) -> None:
        self.gen = 0  # Conn.completed when the request was sent
        self.event = threading.Event()
        self.reply: Optional[_wire.Reply] = None
        self.error: Optional[SockfactoryError] = None


class Conn:
    """A connected daemon socket and its reader thread."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path
        self.lock = threading.Lock()
        # Notified at every reply but refusals for the in-flight limit (a
        # request done frees a slot in the daemon), and when the connection
        # fails: refused requests wait on it before resending.
        self.replied = threading.Condition(self.lock)
        self.completed = 0  # requests answered (not refused) so far
        self.pending: Dict[int, _Waiter] = {}
        self.abandoned: Set[int] = set()
        self.error: Optional[SockfactoryError] = None
        self.reader = threading.Thread(target=self._read_loop, name="sockfactory-reader", daemon=True)
        self.reader.start()

    @property
    def broken(self) -> bool:
        return self.error is not None

    def send(self, rid: int, packet: bytes) -> _Waiter:
        """Registers request rid and sends its packet. Raises NotSent if the
        packet did not go out."""
        w = _Waiter()
        with self.lock:
            if self.error is not None:
                raise NotSent(copy_error(self.error))
            self.pending[rid] = w
            w.gen = self.completed
        try:
            self.sock.sendmsg([packet])
        except OSError as e:
            err = UnavailableError(
                "sending a request to %s: %s" % (self.path, e.strerror or e), errno=e.errno
            )
            with self.lock:
                self.pending.pop(rid, None)
            self.fail(err)
            raise NotSent(copy_error(err)) from e
        return w

    def wait(self, rid: int, w: _Waiter, timeout: Optional[float]) -> _wire.Reply:
        """Waits for the reply to request rid. Returns it (its descriptors
        then belong to the caller) or raises the connection's failure, or
        ReplyTimeoutError after timeout seconds, abandoning the request."""
        try:
            done = w.event.wait(timeout)
        except BaseException:
            if not self._abandon(rid, w) and w.reply is not None:
                w.reply.close()  # it came meanwhile, and nobody takes it now
            raise
        if not done and self._abandon(rid, w):
            raise ReplyTimeoutError(
                "no reply from the daemon at %s within %gs" % (self.path, timeout or 0)
            )
        if w.reply is not None:
            return w.reply
        assert w.error is not None
        raise copy_error(w.error)

    def _abandon(self, rid: int, w: _Waiter) -> bool:
        """Forgets request rid. Returns False if its result came meanwhile
        (it is then in w); a reply arriving later has its descriptors
        closed by the reader."""
        with self.lock:
            if self.pending.pop(rid, None) is None:
                return False
            if self.error is None:
                self.abandoned.add(rid)
            return True

    def wait_reply(self, w: _Waiter, timeout: float) -> None:
        """Waits until a request is answered (not refused) after w's was
        sent, or timeout seconds."""
        with self.lock:
            self.replied.wait_for(lambda: self.completed > w.gen or self.error is not None, timeout)

    def fail(self, err: SockfactoryError) -> None:
        """Marks the connection broken with err, fails every request in
        flight and ends the reader. Only the first call does anything."""
        with self.lock:
            if self.error is not None:
                return
            self.error = err
            pending, self.pending = self.pending, {}
            self.abandoned.clear()
            self.replied.notify_all()
        try:
            # Wakes the reader (recvmsg returns end of file); it closes the
            # socket, and the daemon releases what the connection held.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for w in pending.values():
            w.error = err
            w.event.set()

    def close(self, err: SockfactoryError) -> None:
        """Fails the connection with err and waits until its socket is
        closed."""
        self.fail(err)
        if threading.current_thread() is not self.reader:
            self.reader.join()

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data, fds, flags, cerr = _wire.recv_packet(self.sock)
                except OSError as e:
                    self.fail(
                        UnavailableError(
                            "reading from the daemon at %s: %s" % (self.path, e.strerror or e),
                            errno=e.errno,
                        )
                    )
                    return
                if not data and not fds and cerr is None and not flags & (
                    socket.MSG_TRUNC | socket.MSG_CTRUNC
                ):
                    self.fail(UnavailableError("the daemon at %s closed the connection" % self.path))
                    return
                rep = _wire.decode_reply(data, fds, flags, cerr)
                if rep.fatal:
                    assert rep.error is not None
                    self.fail(rep.error)
                    return
                self._dispatch(rep)
        finally:
            self.sock.close()

    def _dispatch(self, rep: _wire.Reply) -> None:
        with self.lock:
            w = self.pending.pop(rep.id, None) if rep.id is not None else None
            if w is None:
                self.abandoned.discard(rep.id)  # type: ignore[arg-type]
            if not (isinstance(rep.error, LimitExceededError) and rep.error.unseen):
                self.completed += 1
                self.replied.notify_all()
        if w is None:
            rep.close()  # nobody waits for it
            return
        w.reply = rep
        w.event.set()
