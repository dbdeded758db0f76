"""Sockets of another network namespace, without moving any thread that lives on.

A socket belongs to the network namespace it was made in, whichever thread uses it later. So
a socket of a pod's namespace (pinned by a bind mount at some path) is made by a thread that
joins that namespace with setns(2), makes the socket and switches back; setns moves only the
calling thread, and the thread used is a short-lived one of its own (`socket_in`), so neither
the event loop nor a pooled worker ever leaves the process's namespace, even when switching back
fails (the thread just ends). Python 3.11 has no os.setns: libc's, through ctypes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def make_socket(netns: Path, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket of the namespace pinned at `netns`, made by the calling thread, which joins the
    namespace and switches back. Only for a thread that ends right after (see `socket_in`): if
    switching back fails it is left inside, with a warning, and the socket is good."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise _errno_error(f"setns into the network namespace {netns}")
            try:
                sock = socket.socket(family, kind, proto)
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    log.warning("a thread could not switch back from the network namespace %s: %s", netns,
                                os.strerror(ctypes.get_errno()))
        finally:
            os.close(target)
    finally:
        os.close(own)
    return sock


def socket_in(netns: Path, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket of the namespace pinned at `netns`, made in a thread of its own that ends
    (blocking until it has)."""
    box: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            box.append(make_socket(netns, family, kind, proto))
        except BaseException as exc:  # carried to the caller's thread
            box.append(exc)

    t = threading.Thread(target=work, name="netns-socket", daemon=True)
    t.start()
    t.join()
    result = box[0] if box else OSError(f"no socket made in {netns}")
    if isinstance(result, BaseException):
        if isinstance(result, OSError):
            raise result
        raise OSError(f"making a socket in {netns}: {result}") from result
    return result


def unshare_net() -> None:
    """Move the calling process (it must have one thread: a forked child) into a new, empty
    network namespace of its own, which goes when the process ends."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        raise _errno_error("unshare(CLONE_NEWNET)")
