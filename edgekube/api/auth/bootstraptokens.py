"""Bootstrap tokens: `<id>.<secret>` bearer tokens kept in `bootstrap.kubernetes.io/token` Secrets.

Upstream's authenticator (plugin/pkg/auth/authenticator/token/bootstrap), for the agents that
will join a node to this server: a token of the form `[a-z0-9]{6}.[a-z0-9]{16}` is looked up as
the Secret `bootstrap-token-<id>` in `kube-system` (read through the store at that moment, so a
deleted Secret stops the token at once). It authenticates when the Secret is of type
`bootstrap.kubernetes.io/token`, is not being deleted, holds that `token-id` and `token-secret`
(compared in constant time), has not passed its `expiration` (RFC 3339), and says
`usage-bootstrap-authentication: "true"`. The user is `system:bootstrap:<id>` in the groups
`system:bootstrappers`, the Secret's `auth-extra-groups` (each must be `system:bootstrappers:...`)
and `system:authenticated`. As upstream, a token that fails any of these is simply not
recognised (the request is then unauthorized): nothing tells a prober which check failed.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import re
from collections.abc import Mapping
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import resources
from edgekube.store import errors as store_errors
from edgekube.store import store as store_mod

SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
NAMESPACE = "kube-system"
GROUP = "system:bootstrappers"
USER_PREFIX = "system:bootstrap:"
_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_EXTRA_GROUP = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$")


class BootstrapTokens:
    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog, clock: clock_mod.Clock) -> None:
        self._store = store
        info = catalog.lookup("", "v1", "secrets")
        assert info is not None
        self._secrets = info
        self._clock = clock

    def authenticate_token(self, token: str) -> user_mod.UserInfo | None:
        m = _TOKEN.match(token)
        if m is None:
            return None
        token_id, token_secret = m.group(1), m.group(2)
        try:
            item = self._store.get(self._secrets.key(SECRET_PREFIX + token_id, NAMESPACE))
            secret = None if item is None else item.object()
        except store_errors.CorruptRecordError:
            return None
        if secret is None or secret.get("type") != SECRET_TYPE or (secret.get("metadata") or {}).get("deletionTimestamp"):
            return None
        data = _data(secret)
        if not hmac.compare_digest(data.get("token-secret", "").encode(), token_secret.encode()):
            return None
        if data.get("token-id") != token_id or data.get("usage-bootstrap-authentication") != "true":
            return None
        if _expired(data.get("expiration", ""), self._clock.now()):
            return None
        groups = [GROUP]
        for g in (x.strip() for x in data.get("auth-extra-groups", "").split(",")):
            if not g:
                continue
            if not _EXTRA_GROUP.match(g):
                return None
            groups.append(g)
        return user_mod.authenticated(USER_PREFIX + token_id, groups=groups)


def _data(secret: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            out[str(k)] = base64.b64decode(str(v), validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
    return out


def _expired(stamp: str, now: datetime.datetime) -> bool:
    if not stamp:
        return False
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return True  # upstream refuses a token whose expiration it cannot read
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when < now
