"""Authentication: who a request is, from its client certificate or its bearer token.

Client certificates are checked by TLS itself (signed by the cluster CA); their CN is the user
and their O the groups. A bearer token is offered to each `TokenAuthenticator` in turn (static
tokens, service account tokens, bootstrap tokens, ...): the first that knows it decides, as
upstream's union authenticator does. An authenticator answers `None` for a token it does not
recognise (the next one is asked) and raises `errors.unauthorized()` for one it recognises but
refuses (expired, revoked, bound to a deleted pod), so a bad token never falls through to a
weaker check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from edgekube.api import errors, pki
from edgekube.api.auth import user as user_mod


class TokenAuthenticator(Protocol):
    def authenticate_token(self, token: str) -> user_mod.UserInfo | None:
        """The user the token stands for; None when the token is not of this kind."""
        ...


class StaticTokens:
    """A fixed table of tokens (token -> (user, groups))."""

    def __init__(self, table: Mapping[str, tuple[str, Sequence[str]]]) -> None:
        self._table = dict(table)

    def authenticate_token(self, token: str) -> user_mod.UserInfo | None:
        found = self._table.get(token)
        return None if found is None else user_mod.authenticated(found[0], groups=found[1])


def from_certificate(peercert: Any) -> user_mod.UserInfo | None:
    found = pki.client_identity(peercert)
    return None if found is None else user_mod.authenticated(found[0], groups=found[1])


_REMEMBERED = 256  # distinct certificate subjects


class Certificates:
    """`from_certificate`, remembered by the certificate's subject (the only part it reads):
    a client sends the same certificate on every request. The certificate itself was verified
    by TLS at the handshake; this only spares reading its subject again."""

    def __init__(self) -> None:
        self._known: dict[Any, user_mod.UserInfo | None] = {}

    def user(self, peercert: Any) -> user_mod.UserInfo | None:
        if not peercert or not isinstance(peercert, dict):
            return None
        subject = peercert.get("subject")
        try:
            return self._known[subject]
        except KeyError:
            pass
        except TypeError:  # not hashable: not what the ssl module gives
            return from_certificate(peercert)
        found = self._known[subject] = from_certificate(peercert)
        if len(self._known) > _REMEMBERED:
            self._known.clear()
        return found


def from_token(token: str, *, authenticators: Sequence[TokenAuthenticator]) -> user_mod.UserInfo:
    for authenticator in authenticators:
        found = authenticator.authenticate_token(token)
        if found is not None:
            return found
    raise errors.unauthorized()
