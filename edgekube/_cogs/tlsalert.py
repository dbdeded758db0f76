"""Send the TLS alert when a server-side handshake fails (a backport of CPython gh-98078).

asyncio's SSL transport, until CPython fixed it in 2026 (gh-98078), closed the connection on a
failed handshake without flushing what OpenSSL left for the peer: the fatal alert saying why. A
client whose certificate comes from another CA then saw a bare EOF, and kubectl retries an EOF
as a network glitch, over and over, for most of a minute, instead of failing at once with
"remote error: tls: unknown certificate authority".

`install()` makes the handshake flush the outgoing data before the transport closes. On a Python
that does so itself the extra flush finds nothing to send; on one whose SSL protocol has a
different shape it does nothing and says so (False).
"""

from __future__ import annotations

import ssl
from asyncio import sslproto
from typing import Any

_MARK = "_edgekube_alert_flush"


def install() -> bool:
    proto: Any = sslproto.SSLProtocol
    if getattr(proto, _MARK, False):
        return True
    if not all(hasattr(proto, m) for m in ("_do_handshake", "_process_outgoing", "_on_handshake_complete")):
        return False
    again = getattr(sslproto, "SSLAgainErrors", (ssl.SSLWantReadError, ssl.SSLSyscallError))

    def _do_handshake(self: Any) -> None:
        try:
            self._sslobj.do_handshake()
        except again:
            self._process_outgoing()
        except ssl.SSLError as exc:
            self._process_outgoing()  # the alert, before the transport is closed
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)

    proto._do_handshake = _do_handshake
    setattr(proto, _MARK, True)
    return True
