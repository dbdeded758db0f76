"""The in-process client: components talk to the API through the registry, never over HTTP.

Calls go through `registry.rest.Registry`, the same code the HTTP handlers use, so defaults,
validation and admission apply to a controller's writes exactly as to kubectl's. Objects are
addressed by apiVersion and kind, as in manifests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekube._cogs import offload as offload_mod
from edgekube.api import errors
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import resources, rest
from edgekube.store import records, watch

JSON = dict[str, Any]


class LocalClient:
    def __init__(self, registry: rest.Registry, *, manager: str = "edgekube",
                 user: user_mod.UserInfo | None = None) -> None:
        self._registry = registry
        self.manager = manager
        # Who this component is to admission (and, with RBAC, to the authorizer).
        self.user = user

    @property
    def catalog(self) -> resources.Catalog:
        return self._registry.catalog

    @property
    def offload(self) -> offload_mod.Offload:
        """The worker for large jobs' CPU work (see `_cogs.offload`), for components' own."""
        return self._registry.offload

    @property
    def damage(self) -> records.Damage:
        """Where readers note the stored records they had to skip (undecodable)."""
        return self._registry.store.damage

    def list_info(self, info: resources.ResourceInfo, *, namespace: str | None = None) -> rest.ListResult:
        return self._registry.list(info, namespace=namespace)

    async def delete_info(self, info: resources.ResourceInfo, *, name: str, namespace: str | None,
                          options: rest.DeleteOptions | None = None) -> tuple[JSON, bool]:
        return await self._registry.delete(info, namespace=namespace, name=name, options=options or rest.DeleteOptions(user=self.user))

    async def patch_info(self, info: resources.ResourceInfo, *, name: str, namespace: str | None,
                         mutate: Callable[[JSON], JSON]) -> JSON:
        return await self._registry.patch(info, namespace=namespace, name=name, apply=mutate,
                                          options=rest.Options(field_manager=self.manager, user=self.user))

    async def load_event(self, ev: records.Event) -> records.Event:
        """`ev`, its object decoded ahead off the event loop when it is large (a 1.5 MiB object
        takes some 20 ms to decode in one call; in pieces on the worker, the loop goes on)."""
        offload = self._registry.offload
        if not offload.heavy(len(ev.value)):
            return ev
        obj = await offload.always(records.decode_in_pieces, ev.value, key=ev.key, revision=ev.revision)
        return ev.loaded(obj)

    def scan_all(self) -> records.Page:
        """Every durable object (the garbage collector's initial list)."""
        return self._registry.store.scan("/")

    async def watch_all(self, *, since: int) -> watch.Watcher:
        """Every change to every object (in-process consumers only)."""
        return await self._registry.store.watch("/", since=since)

    def resource(self, api_version: str, kind: str) -> resources.ResourceInfo:
        info = self._registry.catalog.by_kind(api_version, kind)
        if info is None:
            raise errors.not_found_path()
        return info

    def get(self, api_version: str, kind: str, *, name: str, namespace: str | None = None) -> JSON:
        return self._registry.get(self.resource(api_version, kind), namespace=namespace, name=name)

    def list(self, api_version: str, kind: str, *, namespace: str | None = None, label_selector: str = "",
             field_selector: str = "") -> rest.ListResult:
        return self._registry.list(self.resource(api_version, kind), namespace=namespace,
                                   label_selector=label_selector, field_selector=field_selector)

    async def create(self, obj: JSON) -> JSON:
        info = self.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        ns = (obj.get("metadata") or {}).get("namespace") if info.namespaced else None
        return self._handed(await self._registry.create(info, obj, namespace=ns, options=rest.Options(
            field_manager=self.manager, user=self.user)))

    async def update(self, obj: JSON, *, subresource: str | None = None) -> JSON:
        info = self.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        out, _ = await self._registry.update(info, obj, namespace=meta.get("namespace") if info.namespaced else None,
                                             name=meta.get("name", ""), subresource=subresource,
                                             options=rest.Options(field_manager=self.manager, user=self.user))
        return self._handed(out)

    async def patch(self, api_version: str, kind: str, *, name: str, namespace: str | None = None,
                    mutate: Callable[[JSON], JSON], subresource: str | None = None) -> JSON:
        """Read-modify-write with a revision precondition, retried on conflicts."""
        return self._handed(await self._registry.patch(self.resource(api_version, kind), namespace=namespace,
                                                       name=name, apply=mutate, subresource=subresource,
                                                       options=rest.Options(field_manager=self.manager, user=self.user)))

    def _handed(self, obj: JSON) -> JSON:
        """A write's answer, for a caller that mostly drops it at once: when large, freed on the
        worker once the caller is done with it (`Offload.let_go`), not on the loop."""
        if self._registry.offload.heavy_value(obj):
            self._registry.offload.let_go(obj)
        return obj

    async def delete(self, api_version: str, kind: str, *, name: str, namespace: str | None = None,
                     options: rest.DeleteOptions | None = None) -> JSON:
        out, _ = await self._registry.delete(self.resource(api_version, kind), namespace=namespace, name=name,
                                             options=options or rest.DeleteOptions(user=self.user))
        return out

    def revision(self) -> int:
        """The store's newest published revision (to watch from now on without listing)."""
        return self._registry.store.revision

    async def watch(self, api_version: str, kind: str, *, namespace: str | None = None, since: int) -> watch.Watcher:
        info = self.resource(api_version, kind)
        return await self._registry.store.watch(info.key_prefix(namespace), since=since)

    async def bind(self, *, namespace: str, name: str, node: str, uid: str | None = None) -> None:
        """pods/binding, as the scheduler binds."""
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": namespace,
                                                                       **({"uid": uid} if uid else {})},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        await self._registry.bind(namespace=namespace, name=name, binding=binding,
                                  options=rest.Options(field_manager=self.manager, user=self.user))

    def get_scale(self, api_version: str, kind: str, *, name: str, namespace: str | None) -> JSON:
        """The scale subresource of an object (autoscaling/v1 Scale)."""
        info = self.resource(api_version, kind)
        if "scale" not in info.subresources:
            raise errors.not_found(f"{info.plural}/scale", name, group=info.group)
        return self._registry.scale_of(info, self._registry.get(info, namespace=namespace, name=name))

    async def set_scale(self, api_version: str, kind: str, *, name: str, namespace: str | None, replicas: int) -> JSON:
        info = self.resource(api_version, kind)
        return await self._registry.set_scale(info, namespace=namespace, name=name,
                                              scale={"spec": {"replicas": replicas}},
                                              options=rest.Options(field_manager=self.manager, user=self.user))
