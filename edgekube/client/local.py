"""The in-process client: components talk to the API through the registry, never over HTTP.

Calls go through `registry.rest.Registry`, the same code the HTTP handlers use, so defaults,
validation and admission apply to a controller's writes exactly as to kubectl's. Objects are
addressed by apiVersion and kind, as in manifests.

A client made with a `user` is who it says: each call is first put to the registry's gate
(`authz.Gate`, the one the HTTP server asks) with the verb, resource, namespace and name an HTTP
request for it would carry, so an in-process component may do exactly what its role allows. The
whole-store reads of the garbage collector and the quota controller (`scan_all`, `watch_all`)
are a list and a watch of every resource in every group (`*`). A client without a user is the
registry's own work and is not asked about.

Writes are audited as HTTP ones are when the
client is given the audit log (`audit`): the policy sees the component's user and the verb and
resource the same write would have over HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from edgekube._cogs import offload as offload_mod
from edgekube.api import audit as audit_mod
from edgekube.api import errors
from edgekube.api.auth import attributes
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import resources, rest
from edgekube.store import records, watch

JSON = dict[str, Any]
T = TypeVar("T")


class LocalClient:
    def __init__(self, registry: rest.Registry, *, manager: str = "edgekube",
                 user: user_mod.UserInfo | None = None, audit: audit_mod.Auditor | None = None) -> None:
        self._registry = registry
        self.manager = manager
        # Who this component is to admission (and, with RBAC, to the authorizer).
        self.user = user
        self._audit = audit

    async def _write(self, call: Awaitable[T], info: resources.ResourceInfo, *, verb: str, namespace: str | None,
                     name: str | None, subresource: str | None = None, body: JSON | None = None,
                     code: int = 200) -> T:
        """`call`, a registry write, audited when the audit log's policy says so."""
        write = None if self._audit is None else self._audit.local(
            self.user, agent=self.manager, verb=verb, group=info.group, version=info.version, resource=info.plural,
            namespace=namespace, name=name, subresource=subresource, body=body)
        if write is None:
            return await call
        try:
            out = await call
        except errors.APIError as err:
            write.failed(err)
            raise
        write.done(out[0] if isinstance(out, tuple) else out, code=code)
        return out

    def _allow(self, verb: str, info: resources.ResourceInfo | None, *, namespace: str | None = None,
               name: str | None = None, subresource: str | None = None) -> None:
        if self.user is None:
            return
        group, resource = (info.group, info.plural) if info is not None else ("*", "*")
        self._registry.gate.check(attributes.for_resource(
            self.user, verb, group=group, resource=resource, namespace=namespace if info is None or info.namespaced else None,
            name=name, subresource=subresource))

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
        self._allow("list", info, namespace=namespace)
        return self._registry.list(info, namespace=namespace)

    async def delete_info(self, info: resources.ResourceInfo, *, name: str, namespace: str | None,
                          options: rest.DeleteOptions | None = None) -> tuple[JSON, bool]:
        self._allow("delete", info, namespace=namespace, name=name)
        return await self._write(
            self._registry.delete(info, namespace=namespace, name=name, options=options or rest.DeleteOptions(user=self.user)),
            info, verb="delete", namespace=namespace, name=name)

    async def patch_info(self, info: resources.ResourceInfo, *, name: str, namespace: str | None,
                         mutate: Callable[[JSON], JSON]) -> JSON:
        self._allow("patch", info, namespace=namespace, name=name)
        return await self._write(self._registry.patch(info, namespace=namespace, name=name, apply=mutate,
                                                      options=rest.Options(field_manager=self.manager, user=self.user)),
                                 info, verb="patch", namespace=namespace, name=name)

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
        self._allow("list", None)
        return self._registry.store.scan("/")

    async def watch_all(self, *, since: int) -> watch.Watcher:
        """Every change to every object (in-process consumers only)."""
        self._allow("watch", None)
        return await self._registry.store.watch("/", since=since)

    def resource(self, api_version: str, kind: str) -> resources.ResourceInfo:
        info = self._registry.catalog.by_kind(api_version, kind)
        if info is None:
            raise errors.not_found_path()
        return info

    def get(self, api_version: str, kind: str, *, name: str, namespace: str | None = None) -> JSON:
        info = self.resource(api_version, kind)
        self._allow("get", info, namespace=namespace, name=name)
        return self._registry.get(info, namespace=namespace, name=name)

    def list(self, api_version: str, kind: str, *, namespace: str | None = None, label_selector: str = "",
             field_selector: str = "") -> rest.ListResult:
        info = self.resource(api_version, kind)
        self._allow("list", info, namespace=namespace)
        return self._registry.list(info, namespace=namespace,
                                   label_selector=label_selector, field_selector=field_selector)

    async def create(self, obj: JSON) -> JSON:
        info = self.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        ns = (obj.get("metadata") or {}).get("namespace") if info.namespaced else None
        self._allow("create", info, namespace=ns)
        return self._handed(await self._write(
            self._registry.create(info, obj, namespace=ns, options=rest.Options(field_manager=self.manager, user=self.user)),
            info, verb="create", namespace=ns, name=None, body=obj, code=201))

    async def update(self, obj: JSON, *, subresource: str | None = None) -> JSON:
        info = self.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        self._allow("update", info, namespace=meta.get("namespace"), name=meta.get("name"), subresource=subresource)
        ns = meta.get("namespace") if info.namespaced else None
        out, _ = await self._write(
            self._registry.update(info, obj, namespace=ns, name=meta.get("name", ""), subresource=subresource,
                                  options=rest.Options(field_manager=self.manager, user=self.user)),
            info, verb="update", namespace=ns, name=meta.get("name", ""), subresource=subresource, body=obj)
        return self._handed(out)

    async def patch(self, api_version: str, kind: str, *, name: str, namespace: str | None = None,
                    mutate: Callable[[JSON], JSON], subresource: str | None = None) -> JSON:
        """Read-modify-write with a revision precondition, retried on conflicts."""
        info = self.resource(api_version, kind)
        self._allow("patch", info, namespace=namespace, name=name, subresource=subresource)
        return self._handed(await self._write(
            self._registry.patch(info, namespace=namespace, name=name, apply=mutate, subresource=subresource,
                                 options=rest.Options(field_manager=self.manager, user=self.user)),
            info, verb="patch", namespace=namespace, name=name, subresource=subresource))

    async def apply(self, obj: JSON, *, force: bool = True, cost: int = 0) -> tuple[JSON, bool]:
        """Server-side apply of a manifest (apiVersion, kind, metadata.name, and metadata.namespace
        for a namespaced kind) by this client's field manager, as `kubectl apply --server-side`
        (`force`: take over fields other managers own). Returns (object, created). `cost`: the
        manifest's size in bytes (a large one is worked on off the loop)."""
        info = self.resource(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        ns = meta.get("namespace") if info.namespaced else None
        self._allow("patch", info, namespace=ns, name=name)
        out, created = await self._write(
            self._registry.apply(info, obj, namespace=ns, name=name, force=force,
                                 options=rest.Options(field_manager=self.manager, user=self.user, cost=cost)),
            info, verb="patch", namespace=ns, name=name, body=obj, code=200)
        return self._handed(out), created

    def _handed(self, obj: JSON) -> JSON:
        """A write's answer, for a caller that mostly drops it at once: when large, freed on the
        worker once the caller is done with it (`Offload.let_go`), not on the loop."""
        if self._registry.offload.heavy_value(obj):
            self._registry.offload.let_go(obj)
        return obj

    async def delete(self, api_version: str, kind: str, *, name: str, namespace: str | None = None,
                     options: rest.DeleteOptions | None = None) -> JSON:
        info = self.resource(api_version, kind)
        self._allow("delete", info, namespace=namespace, name=name)
        out, _ = await self._write(self._registry.delete(info, namespace=namespace, name=name,
                                                         options=options or rest.DeleteOptions(user=self.user)),
                                   info, verb="delete", namespace=namespace, name=name)
        return out

    def revision(self) -> int:
        """The store's newest published revision (to watch from now on without listing)."""
        return self._registry.store.revision

    async def watch(self, api_version: str, kind: str, *, namespace: str | None = None, since: int) -> watch.Watcher:
        info = self.resource(api_version, kind)
        self._allow("watch", info, namespace=namespace)
        return await self._registry.store.watch(info.key_prefix(namespace), since=since)

    async def bind(self, *, namespace: str, name: str, node: str, uid: str | None = None) -> None:
        """pods/binding, as the scheduler binds."""
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": namespace,
                                                                       **({"uid": uid} if uid else {})},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        self._allow("create", self.resource("v1", "Pod"), namespace=namespace, name=name, subresource="binding")
        await self._write(self._registry.bind(namespace=namespace, name=name, binding=binding,
                                              options=rest.Options(field_manager=self.manager, user=self.user)),
                          self.resource("v1", "Pod"), verb="create", namespace=namespace, name=name,
                          subresource="binding", body=binding, code=201)

    async def create_subresource(self, api_version: str, kind: str, *, name: str, namespace: str, subresource: str,
                                 body: JSON) -> JSON:
        """POST to a create-only subresource (serviceaccounts/token: a TokenRequest), as over HTTPS."""
        info = self.resource(api_version, kind)
        if subresource not in info.subresources:
            raise errors.not_found(f"{info.plural}/{subresource}", name, group=info.group)
        return await self._write(
            self._registry.create_subresource(info, namespace=namespace, name=name, subresource=subresource, body=body,
                                              options=rest.Options(field_manager=self.manager, user=self.user)),
            info, verb="create", namespace=namespace, name=name, subresource=subresource, body=body, code=201)

    def get_scale(self, api_version: str, kind: str, *, name: str, namespace: str | None) -> JSON:
        """The scale subresource of an object (autoscaling/v1 Scale)."""
        info = self.resource(api_version, kind)
        if "scale" not in info.subresources:
            raise errors.not_found(f"{info.plural}/scale", name, group=info.group)
        self._allow("get", info, namespace=namespace, name=name, subresource="scale")
        return self._registry.scale_of(info, self._registry.get(info, namespace=namespace, name=name))

    async def set_scale(self, api_version: str, kind: str, *, name: str, namespace: str | None, replicas: int) -> JSON:
        info = self.resource(api_version, kind)
        self._allow("update", info, namespace=namespace, name=name, subresource="scale")
        return await self._write(self._registry.set_scale(info, namespace=namespace, name=name,
                                                          scale={"spec": {"replicas": replicas}},
                                                          options=rest.Options(field_manager=self.manager, user=self.user)),
                                 info, verb="update", namespace=namespace, name=name, subresource="scale")
