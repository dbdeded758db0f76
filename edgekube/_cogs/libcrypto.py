"""Where OpenSSL's libcrypto is: the copy Python's `ssl` module already mapped.

Shared by the modules that reach OpenSSL through ctypes rather than through `cryptography`
(`aesgcm`, `jwsig`; see there why). The library is found by the path the loader mapped it from
(`/proc/self/maps`, after importing `_ssl`), so the Nuitka binary uses the copy it carries and a
system with two OpenSSL versions never mixes them; `ctypes.util.find_library` is the fallback.

A package upgrade while the node runs (unattended-upgrades on a Pi) replaces the file: the map
then names it "<path> (deleted)". The path without that mark is what the dynamic loader knows
the mapped library by, so opening it returns the library already in memory, the one TLS uses,
not the new file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable

_DELETED = " (deleted)"  # how /proc/PID/maps marks a mapped file that was replaced or removed


def path() -> str | None:
    import _ssl  # noqa: F401  (maps libcrypto, when Python links it dynamically)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                found = line.rstrip("\n").split(None, 5)[-1] if line.count(" ") >= 5 else ""
                if "/libcrypto" in found and ".so" in found:
                    return found.removesuffix(_DELETED)
    except OSError:
        pass
    return ctypes.util.find_library("crypto")


class Binding:
    """libcrypto with one module's functions declared (`declare` sets their restype and
    argtypes), opened on first use, once, whichever thread asks first. `error` is the module's
    own exception, raised with `need` (what the module does) when the library cannot be used."""

    def __init__(self, declare: Callable[[ctypes.CDLL], None], *, error: type[Exception], need: str) -> None:
        self._declare = declare
        self._error = error
        self._need = need
        self._lib: ctypes.CDLL | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> ctypes.CDLL | None:
        """The library if it was opened already (a finaliser must not open it)."""
        return self._lib

    def get(self) -> ctypes.CDLL:
        with self._lock:
            if self._lib is not None:
                return self._lib
            found = path()
            if found is None:
                raise self._error(f"OpenSSL's libcrypto is not loaded and cannot be found; {self._need} needs it")
            try:
                lib = ctypes.CDLL(found)
                self._declare(lib)
            except (OSError, AttributeError) as exc:
                raise self._error(f"cannot use {self._need} from {found}: {exc}") from None
            self._lib = lib
            return lib
