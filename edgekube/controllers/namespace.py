"""Namespace controller: a deleted namespace is emptied, then goes.

Deleting a namespace marks it Terminating (the registry keeps the `kubernetes` finalizer in
`spec.finalizers`). This controller deletes every namespaced object in it, of every resource the
catalog serves (custom resources included), waits for the ones that take time (finalizers,
graceful pods), then removes the finalizer, and the namespace is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

from edgekube.api import errors
from edgekube.api.registry import rest
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller, Requeue

log = logging.getLogger(__name__)
JSON = dict[str, Any]
FINALIZER = "kubernetes"


class NamespaceController(Controller):
    name = "namespace-controller"

    def __init__(self, client: LocalClient, namespaces: Informer) -> None:
        super().__init__()
        self._client = client
        self._namespaces = namespaces
        namespaces.add_handlers(Handlers(on_add=self._maybe, on_update=lambda _old, new: self._maybe(new)))

    def _maybe(self, ns: JSON) -> None:
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(ns["metadata"]["name"])

    async def reconcile(self, key: Hashable) -> None:
        name = str(key)
        ns = self._namespaces.get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = await self._empty(name)
        if remaining:
            log.info("namespace %s: waiting for %d objects to go", name, remaining)
            raise Requeue(1.0)
        info = self._client.resource("v1", "Namespace")

        def release(obj: JSON) -> JSON:
            spec = obj.setdefault("spec", {})
            spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != FINALIZER]
            if not spec["finalizers"]:
                del spec["finalizers"]
            return obj

        try:
            await self._client.patch_info(info, name=name, namespace=None, mutate=release)
            await self._client.delete_info(info, name=name, namespace=None)
        except errors.APIError as exc:
            if exc.code != 404:
                raise

    async def _empty(self, namespace: str) -> int:
        """Delete what is left in `namespace`; the number of objects still there."""
        remaining = 0
        seen: set[tuple[str, str]] = set()
        for info in self._client.catalog.all():
            if not info.namespaced or "delete" not in info.verbs or (info.group, info.plural) in seen:
                continue
            seen.add((info.group, info.plural))
            for obj in self._client.list_info(info, namespace=namespace).items:
                remaining += 1
                meta = obj["metadata"]
                if meta.get("deletionTimestamp"):
                    continue
                try:
                    await self._client.delete_info(info, name=meta["name"], namespace=namespace,
                                                   options=rest.DeleteOptions(propagation_policy="Background"))
                except errors.APIError as exc:
                    if exc.code != 404:
                        raise
        return remaining
