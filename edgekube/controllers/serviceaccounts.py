"""The `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in every namespace.

Pods run as `default` unless they name another account, and read the cluster CA from
`kube-root-ca.crt`; both are (re)made whenever a namespace appears or one of them is deleted or
changed.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from edgekube.api import errors
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller

JSON = dict[str, Any]
ROOT_CA = "kube-root-ca.crt"


class ServiceAccountController(Controller):
    name = "serviceaccount-controller"

    def __init__(self, client: LocalClient, namespaces: Informer, accounts: Informer, configmaps: Informer,
                 *, ca_pem: str) -> None:
        super().__init__()
        self._client = client
        self._namespaces = namespaces
        self._accounts = accounts
        self._configmaps = configmaps
        self._ca = ca_pem
        namespaces.add_handlers(Handlers(on_add=lambda ns: self.queue.add(ns["metadata"]["name"])))
        accounts.add_handlers(Handlers(on_delete=self._owned_changed))
        configmaps.add_handlers(Handlers(on_delete=self._owned_changed,
                                         on_update=lambda _old, new: self._owned_changed(new)))

    def _owned_changed(self, obj: JSON) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("name") in ("default", ROOT_CA) and meta.get("namespace"):
            self.queue.add(meta["namespace"])

    async def reconcile(self, key: Hashable) -> None:
        ns_name = str(key)
        ns = self._namespaces.get(ns_name)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self._accounts.get(f"{ns_name}/default") is None:
            await self._create({"apiVersion": "v1", "kind": "ServiceAccount",
                                "metadata": {"name": "default", "namespace": ns_name}})
        cm = self._configmaps.get(f"{ns_name}/{ROOT_CA}")
        want = {"ca.crt": self._ca}
        if cm is None:
            await self._create({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": ROOT_CA, "namespace": ns_name,
                                             "annotations": {"kubernetes.io/description": _DESCRIPTION}},
                                "data": want})
        elif cm.get("data") != want:
            info = self._client.resource("v1", "ConfigMap")

            def reset(obj: JSON) -> JSON:
                obj["data"] = dict(want)
                return obj

            await self._client.patch_info(info, name=ROOT_CA, namespace=ns_name, mutate=reset)

    async def _create(self, obj: JSON) -> None:
        try:
            await self._client.create(obj)
        except errors.APIError as exc:
            if exc.code not in (409,) and exc.reason != "Forbidden":
                if exc.code == 403 or "being terminated" in exc.message:
                    return
                raise


_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
    "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
    "distributions of Kubernetes clusters."
)
