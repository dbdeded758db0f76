"""The token controller: fills the `kubernetes.io/service-account-token` Secrets users create.

Upstream's tokens_controller, for the legacy Secret-based tokens (a user still makes one for a
long-lived credential; nothing makes them unasked since 1.24). A Secret of that type names its
account in the annotation `kubernetes.io/service-account.name`; the controller writes into it
`token` (a legacy JWT, signed by the service account issuer that runtime.py hands in as `sign`),
`ca.crt` (the cluster CA) and `namespace`, and the account's uid in the annotation
`kubernetes.io/service-account.uid`. A Secret whose account does not exist, or exists with
another uid than the Secret names, is deleted (with a uid precondition, so a Secret made again
meanwhile is left alone), as are an account's token Secrets when the account is deleted: the
token's validity ends with either (the authenticator checks both on every request anyway).

A token already in the Secret is kept while it still names this Secret and this account (the
authenticator compares the Secret's token with the one presented, so rewriting it would void
the copies handed out).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Hashable
from typing import Any

from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller

JSON = dict[str, Any]
SECRET_TYPE = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"
_LEGACY = "kubernetes.io/serviceaccount/"
# (service account, secret) -> the legacy token for them.
Sign = Callable[[JSON, JSON], str]


class TokensController(Controller):
    name = "serviceaccount-token-controller"

    def __init__(self, client: LocalClient, accounts: Informer, secrets: Informer, *, ca_pem: str, sign: Sign) -> None:
        super().__init__()
        self._client = client
        self._accounts = accounts
        self._secrets = secrets
        self._ca = ca_pem
        self._sign = sign
        secrets.add_handlers(Handlers(on_add=self._secret_changed, on_update=lambda _old, new: self._secret_changed(new)))
        accounts.add_handlers(Handlers(on_add=self._account_changed, on_delete=self._account_changed,
                                       on_update=lambda _old, new: self._account_changed(new)))

    def _secret_changed(self, secret: JSON) -> None:
        if secret.get("type") == SECRET_TYPE:
            meta = secret.get("metadata") or {}
            self.queue.add(f"{meta.get('namespace')}/{meta.get('name')}")

    def _account_changed(self, account: JSON) -> None:
        """An account came, went or changed: its token Secrets are looked at again."""
        meta = account.get("metadata") or {}
        for secret in self._secrets.list(str(meta.get("namespace"))):
            if secret.get("type") == SECRET_TYPE and _annotations(secret).get(NAME_ANNOTATION) == meta.get("name"):
                self._secret_changed(secret)

    async def reconcile(self, key: Hashable) -> None:
        secret = self._secrets.get(str(key))
        if secret is None or secret.get("type") != SECRET_TYPE:
            return
        meta = secret["metadata"]
        if meta.get("deletionTimestamp"):
            return
        ns = str(meta.get("namespace"))
        annotations = _annotations(secret)
        account = self._accounts.get(f"{ns}/{annotations.get(NAME_ANNOTATION)}")
        uid = annotations.get(UID_ANNOTATION)
        if account is None or account["metadata"].get("deletionTimestamp") or (uid and uid != account["metadata"].get("uid")):
            await self._delete(secret)
            return
        sa_uid = str(account["metadata"].get("uid"))
        data = secret.get("data") or {}
        token = _decoded(data.get("token"))
        if not _names(token, secret_name=str(meta.get("name")), sa_uid=sa_uid):
            token = self._sign(account, secret)
        want = {"token": token, "ca.crt": self._ca, "namespace": ns}
        if all(_decoded(data.get(k)) == v for k, v in want.items()) and uid == sa_uid:
            return

        def fill(obj: JSON) -> JSON:
            if (obj.get("metadata") or {}).get("uid") != meta.get("uid"):
                raise errors.conflict("secrets", str(meta.get("name")), why="the Secret was replaced")
            obj.setdefault("metadata", {}).setdefault("annotations", {})[UID_ANNOTATION] = sa_uid
            obj.setdefault("data", {}).update({k: base64.b64encode(v.encode()).decode() for k, v in want.items()})
            return obj

        try:
            await self._client.patch("v1", "Secret", name=str(meta.get("name")), namespace=ns, mutate=fill)
        except errors.APIError as exc:
            if exc.code not in (404, 409):
                raise

    async def _delete(self, secret: JSON) -> None:
        meta = secret["metadata"]
        try:
            await self._client.delete("v1", "Secret", name=str(meta.get("name")), namespace=str(meta.get("namespace")),
                                      options=rest.DeleteOptions(precondition_uid=str(meta.get("uid")),
                                                                 user=self._client.user))
        except errors.APIError as exc:
            if exc.code not in (404, 409):
                raise


def _annotations(obj: JSON) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _decoded(value: Any) -> str:
    try:
        return base64.b64decode(str(value or ""), validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return ""


def _names(token: str, *, secret_name: str, sa_uid: str) -> bool:
    """Whether a legacy token's claims name this Secret and this account (its signature is the
    authenticator's to check; this only decides whether to keep it)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return False
    return (isinstance(claims, dict) and claims.get(_LEGACY + "secret.name") == secret_name
            and claims.get(_LEGACY + "service-account.uid") == sa_uid)
