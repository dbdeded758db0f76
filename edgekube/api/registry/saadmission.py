"""The ServiceAccount admission plugin: every pod runs as an account that exists, and gets its token.

Upstream's plugin (plugin/pkg/admission/serviceaccount), on pods being created (runtime.py
installs it in `Registry.pod_admission`; a bare registry, as in unit tests, runs without it, as
an API server without the plugin would):

- The account (`spec.serviceAccountName`, which defaulting set to `default`) must exist, else
  403 `pods "<name>" is forbidden: error looking up service account <ns>/<sa>: serviceaccount
  "<sa>" not found`. The `default` account is made by the controller right after its namespace,
  so, as upstream, a missing `default` is looked up again for up to about 1.5 s (10 tries)
  before the pod is refused. Mirror pods (static pods' stand-ins) are left alone.
- Unless `automountServiceAccountToken` says false (the pod's setting first, then the
  account's), the pod gets the projected volume `kube-api-access-<5 random characters>`: a
  service account token (expirationSeconds 3607, path `token`, which the kubelet asks for through
  TokenRequest bound to the pod), the `ca.crt` of the `kube-root-ca.crt` ConfigMap, and the
  namespace through the downward API, defaultMode 0644; and every container and init
  container that does not already mount something at `/var/run/secrets/kubernetes.io/
  serviceaccount` mounts it there read-only. A pod that already has a `kube-api-access-*`
  volume keeps it.
- A pod without `imagePullSecrets` gets its account's.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from edgekube.api import errors
from edgekube.api.registry import defaults, resources, rest
from edgekube.store import errors as store_errors
from edgekube.store import store as store_mod

JSON = dict[str, Any]
VOLUME_PREFIX = "kube-api-access-"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_EXPIRATION_SECONDS = 3607  # upstream's WarnOnlyBoundTokenExpirationSeconds
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # upstream's SimpleNameGenerator
_DEFAULT_TRIES = 10


class ServiceAccountAdmission:
    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._store = store
        info = catalog.lookup("", "v1", "serviceaccounts")
        assert info is not None
        self._accounts = info
        self._sleep = sleep

    def _account(self, namespace: str, name: str) -> JSON | None:
        try:
            item = self._store.get(self._accounts.key(name, namespace))
            return None if item is None else item.object()
        except store_errors.CorruptRecordError:
            return None

    async def _lookup(self, namespace: str, name: str) -> JSON | None:
        tries = _DEFAULT_TRIES if name == "default" else 1
        for attempt in range(tries):
            if attempt:
                await self._sleep(random.uniform(0.1, 0.2))
            found = self._account(namespace, name)
            if found is not None:
                return found
        return None

    async def admit(self, pod: JSON, options: rest.Options) -> None:
        meta = pod.get("metadata") or {}
        if defaults.MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
            return
        spec = pod.setdefault("spec", {})
        namespace, name = str(meta.get("namespace") or ""), str(spec.get("serviceAccountName") or "default")
        account = await self._lookup(namespace, name)
        if account is None:
            raise errors.forbidden_object("pods", str(meta.get("name") or ""),
                                          f'error looking up service account {namespace}/{name}: '
                                          f'serviceaccount "{name}" not found')
        if _automount(account, spec):
            mount_token(spec)
        if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [dict(s) for s in account["imagePullSecrets"] if isinstance(s, dict)]


def _automount(account: JSON, spec: JSON) -> bool:
    if isinstance(spec.get("automountServiceAccountToken"), bool):
        return bool(spec["automountServiceAccountToken"])
    if isinstance(account.get("automountServiceAccountToken"), bool):
        return bool(account["automountServiceAccountToken"])
    return True


def token_volume(name: str) -> JSON:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def mount_token(spec: JSON) -> None:
    """The token volume and its mounts (upstream's mountServiceAccountToken)."""
    volumes: list[Any] = spec["volumes"] if isinstance(spec.get("volumes"), list) else []
    existing = next((v.get("name") for v in volumes if isinstance(v, dict)
                     and str(v.get("name") or "").startswith(VOLUME_PREFIX)), None)
    name = existing or VOLUME_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(5))
    needed = False
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            mounts: list[Any] = c["volumeMounts"] if isinstance(c.get("volumeMounts"), list) else []
            if any(isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH for m in mounts):
                continue
            c["volumeMounts"] = [*mounts, {"name": name, "readOnly": True, "mountPath": MOUNT_PATH}]
            needed = True
    if existing is None and needed:
        spec["volumes"] = [*volumes, token_volume(name)]
