"""The policy admission plugins, run by the registry beside `admission` (LimitRanger, quota).

Upstream's order, which this keeps:

- mutating: after the registry's defaults and the built-in mutating plugins, the
  MutatingWebhookConfigurations (`webhooks`), each webhook once, then again when
  reinvocationPolicy IfNeeded asks and a later one changed the object;
- validating: after the registry's own validation, a custom object's CRD validation rules
  (`crdrules`, upstream's part of the strategy's validation, here beside it so that CEL runs on
  the offload worker), PodSecurity (`podsecurity`), then the
  ValidatingAdmissionPolicies (`vap`), then the ValidatingWebhookConfigurations; the
  ResourceQuota charge comes after all of them (a refused object is never charged).

The registry describes each write as one `Request` (upstream's admission attributes: the
operation, the resource, the user from `Options.user`, the old object, dry run) and hands the
object; the chain answers by mutating the object in place, by raising the Status error that
refuses it, and by adding to `Report`: warnings for the `Warning` headers and audit annotations
(keyed as upstream's, `pod-security.kubernetes.io/audit-violations`, for the audit log).
Internal writes (no user) go through the chain as well: upstream's controllers are users like
any other, and a pod a controller creates in a restricted namespace must be refused as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from edgekube._cogs import offload as offload_mod
from edgekube.api import errors
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import crdrules, podsecurity, resources, vap, webhooks
from edgekube.store import store as store_mod

JSON = dict[str, Any]
_MAX_CACHED_NAMESPACES = 4096
_NONE: list[JSON] = []  # shared, never changed: no configurations of a kind


@dataclasses.dataclass(frozen=True)
class Request:
    """One write as the admission plugins see it (upstream's admission.Attributes)."""

    info: resources.ResourceInfo
    operation: str  # CREATE, UPDATE, DELETE
    name: str
    namespace: str  # "" for cluster-scoped objects
    subresource: str | None = None
    user: user_mod.UserInfo | None = None
    dry_run: bool = False
    old: JSON | None = None
    options: JSON | None = None  # the CreateOptions/UpdateOptions/DeleteOptions, for webhooks
    # (group, version, kind) of the object admitted when a subresource carries a kind of its own
    # (`scale`: an autoscaling/v1 Scale); None: the resource's kind (`status` carries the object).
    object_kind: tuple[str, str, str] | None = None

    @property
    def username(self) -> str:
        return self.user.name if self.user is not None else ""


@dataclasses.dataclass
class Report:
    """What admission adds to a response that is not a refusal."""

    warnings: list[str] = dataclasses.field(default_factory=list)
    audit_annotations: dict[str, str] = dataclasses.field(default_factory=dict)


class Chain:
    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog,
                 pod_security: podsecurity.Settings | None = None, offload: offload_mod.Offload | None = None) -> None:
        self._store = store
        self._catalog = catalog
        # Where CEL runs: never on the loop.
        self._own_offload = offload is None  # closed with the chain only when made here
        self.offload = offload or offload_mod.Offload()
        self._stamp: tuple[tuple[str, int], ...] = ()
        self._scanned_at = -1
        self._labels: dict[str, tuple[int, Mapping[str, str]]] = {}
        self._configurations: dict[str, list[JSON]] = {}
        self.webhooks = webhooks.Webhooks(store, catalog=catalog, objects=self._admission_objects,
                                          namespace_labels=self._namespace_labels, offload=self.offload)
        self.policies = vap.Policies(store, catalog=catalog, objects=self._admission_objects,
                                     namespace_object=self._namespace_object)
        self.pod_security = podsecurity.PodSecurity(
            pod_security or podsecurity.Settings(), namespace_labels=self._namespace_labels, pods=self._pods)

    def _admission_objects(self, plural: str) -> list[JSON]:
        """The stored admissionregistration objects of `plural`, by name. One scan of the group's
        keys when the store's revision moved since the last (all four kinds at once); decoded
        again only when one of their revisions moved, and then a new list, so that callers may
        cache what they derive by its identity."""
        if self._store.revision == self._scanned_at:
            return self._configurations.get(plural, _NONE)
        self._scanned_at = self._store.revision
        items = self._store.scan(f"/{webhooks.GROUP}/").items
        stamp = tuple((i.key, i.revision) for i in items)
        if stamp != self._stamp:
            grouped: dict[str, list[JSON]] = {}
            for item, obj in self._store.objects(items, reader="admission configuration"):
                grouped.setdefault(item.key.split("/")[2], []).append(obj)
            self._stamp, self._configurations = stamp, grouped
        return self._configurations.get(plural, _NONE)

    def _namespace_object(self, name: str) -> JSON | None:
        info = self._catalog.lookup("", "v1", "namespaces")
        assert info is not None
        item = self._store.get(info.key(name))
        return item.object() if item is not None else None

    def _namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """A namespace's labels (None: no such namespace), decoded again only when it changed:
        every pod write asks."""
        info = self._catalog.lookup("", "v1", "namespaces")
        assert info is not None
        item = self._store.get(info.key(name))
        if item is None:
            self._labels.pop(name, None)
            return None
        cached = self._labels.get(name)
        if cached is not None and cached[0] == item.revision:
            return cached[1]
        labels = (item.object().get("metadata") or {}).get("labels")
        found = labels if isinstance(labels, dict) else {}
        if len(self._labels) >= _MAX_CACHED_NAMESPACES:
            self._labels.clear()
        self._labels[name] = (item.revision, found)
        return found

    def _pods(self, namespace: str) -> Iterator[JSON]:
        info = self._catalog.lookup("", "v1", "pods")
        assert info is not None
        for _, pod in self._store.objects(self._store.scan(info.key_prefix(namespace)).items, reader="PodSecurity"):
            yield pod

    async def close(self) -> None:
        await self.webhooks.close()
        if self._own_offload:
            self.offload.close()

    async def mutate(self, req: Request, obj: JSON, report: Report) -> None:
        """The mutating plugins, in place on `obj` (after the registry's defaults)."""
        await self.webhooks.mutate(_call(req), obj, warnings=report.warnings, audit=report.audit_annotations)

    async def validate(self, req: Request, obj: JSON | None, report: Report) -> None:
        """The validating plugins (after the registry's validation); raises to refuse. `obj` is
        None for a delete (the object is `req.old`)."""
        await self.validate_rules(req, obj)
        if obj is not None and req.operation in ("CREATE", "UPDATE") and podsecurity.handles(req.info.group, req.info.plural):
            out = self.pod_security.admit(
                group=req.info.group, plural=req.info.plural, obj=obj, old=req.old, namespace=req.namespace,
                name=req.name, subresource=req.subresource, username=req.username)
            report.audit_annotations.update({podsecurity.LABEL_PREFIX + k: v for k, v in out.audit.items()})
            if out.refused is not None:
                raise out.refused
            report.warnings.extend(out.warnings)
        call = _call(req)
        work, refused = self.policies.work(call, obj)
        if refused is not None:
            raise refused
        if work:
            decision = await self.offload.always(vap.evaluate, work, call, obj)
            vap.apply(decision, warnings=report.warnings, audit=report.audit_annotations)
        await self.webhooks.validate(call, obj, warnings=report.warnings, audit=report.audit_annotations)

    async def validate_rules(self, req: Request, obj: JSON | None) -> None:
        """A custom object's CRD validation rules: part of its strategy's validation upstream, so
        they also hold for the object a `scale` write leaves (whose policies saw the Scale)."""
        custom = req.info.custom
        if obj is not None and req.object_kind is None and custom is not None and crdrules.has_rules(custom.schema):
            causes = await self.offload.always(crdrules.check, custom.schema, obj, req.old)
            if causes:
                raise errors.invalid(req.info.kind, req.name, causes, group=req.info.group)


def _call(req: Request) -> webhooks.Call:
    return webhooks.Call(info=req.info, operation=req.operation, name=req.name, namespace=req.namespace,
                         subresource=req.subresource, user=req.user, dry_run=req.dry_run, old=req.old,
                         options=req.options, object_kind=req.object_kind)
