"""Where OpenSSL's libcrypto is: the copy Python's `ssl` module already mapped.

Shared by the modules that reach OpenSSL through ctypes rather than through `cryptography`
(`aesgcm`, `rsasig`; see there why). The library is found by the path the loader mapped it from
(`/proc/self/maps`, after importing `_ssl`), so the Nuitka binary uses the copy it carries and a
system with two OpenSSL versions never mixes them; `ctypes.util.find_library` is the fallback.
"""

from __future__ import annotations

import ctypes.util


def path() -> str | None:
    import _ssl  # noqa: F401  (maps libcrypto, when Python links it dynamically)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                found = line.rstrip("\n").split(None, 5)[-1] if line.count(" ") >= 5 else ""
                if "/libcrypto" in found and ".so" in found:
                    return found
    except OSError:
        pass
    return ctypes.util.find_library("crypto")
