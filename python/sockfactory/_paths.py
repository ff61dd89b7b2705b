"""Default locations of the daemon's native socket, as the Go client
(internal/paths) and the sockfactory CLI choose them."""

from __future__ import annotations

import os
import stat

__all__ = ["ENV_SOCKET", "SYSTEM_SOCKET", "user_socket", "default_socket_path"]

#: The environment variable that names the daemon's socket.
ENV_SOCKET = "SOCKFACTORY_SOCKET"

#: The native socket of a daemon started as root.
SYSTEM_SOCKET = "/run/sockfactory/sockfactory.sock"


def user_socket() -> str:
    """The socket of a daemon started by this (non-root) user:
    ``$XDG_RUNTIME_DIR/sockfactory/sockfactory.sock`` when XDG_RUNTIME_DIR is
    set, else ``$TMPDIR/sockfactory-UID/sockfactory.sock`` (``/tmp`` when
    TMPDIR is unset or empty)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime:
        return os.path.join(runtime, "sockfactory", "sockfactory.sock")
    tmp = os.environ.get("TMPDIR", "") or "/tmp"
    return os.path.join(tmp, "sockfactory-%d" % os.getuid(), "sockfactory.sock")


def default_socket_path() -> str:
    """The socket a client connects to when told none:

    1. ``$SOCKFACTORY_SOCKET``, if set and not empty;
    2. else the system daemon's socket ``/run/sockfactory/sockfactory.sock``
       if it exists, or if this process runs as root;
    3. else, for a non-root user, the per-user daemon's socket
       (:func:`user_socket`) if it exists and its directory belongs to this
       user and is writable by nobody else;
    4. else the system path, so that the error names the usual place.
    """
    env = os.environ.get(ENV_SOCKET, "")
    if env:
        return env
    if os.path.exists(SYSTEM_SOCKET) or os.geteuid() == 0:
        return SYSTEM_SOCKET
    user = user_socket()
    if os.path.exists(user) and _own_dir(os.path.dirname(user)):
        return user
    return SYSTEM_SOCKET


def _own_dir(path: str) -> bool:
    # Under /tmp anyone could have made the directory first and planted a
    # fake daemon's socket in it.
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_mode & 0o022 == 0
        and st.st_uid == os.getuid()
    )
