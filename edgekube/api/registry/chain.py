"""The policy admission plugins, run by the registry beside `admission` (LimitRanger, quota).

Upstream's order, which this keeps:

- mutating: after the registry's defaults and the built-in mutating plugins, the
  MutatingWebhookConfigurations (`webhooks`), each webhook once, then again when
  reinvocationPolicy IfNeeded asks and a later one changed the object;
- validating: after the registry's own validation, PodSecurity (`podsecurity`), then the
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

from edgekube.api.auth import user as user_mod
from edgekube.api.registry import podsecurity, resources, webhooks
from edgekube.store import store as store_mod

JSON = dict[str, Any]


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
                 pod_security: podsecurity.Settings | None = None) -> None:
        self._store = store
        self._catalog = catalog
        self.webhooks = webhooks.Webhooks(store, catalog=catalog, namespace_labels=self._namespace_labels)
        self.pod_security = podsecurity.PodSecurity(
            pod_security or podsecurity.Settings(), namespace_labels=self._namespace_labels, pods=self._pods)

    def _namespace_labels(self, name: str) -> Mapping[str, str] | None:
        info = self._catalog.lookup("", "v1", "namespaces")
        assert info is not None
        item = self._store.get(info.key(name))
        if item is None:
            return None
        labels = (item.object().get("metadata") or {}).get("labels")
        return labels if isinstance(labels, dict) else {}

    def _pods(self, namespace: str) -> Iterator[JSON]:
        info = self._catalog.lookup("", "v1", "pods")
        assert info is not None
        for _, pod in self._store.objects(self._store.scan(info.key_prefix(namespace)).items, reader="PodSecurity"):
            yield pod

    async def close(self) -> None:
        await self.webhooks.close()

    async def mutate(self, req: Request, obj: JSON, report: Report) -> None:
        """The mutating plugins, in place on `obj` (after the registry's defaults)."""
        await self.webhooks.mutate(_call(req), obj, warnings=report.warnings, audit=report.audit_annotations)

    async def validate(self, req: Request, obj: JSON | None, report: Report) -> None:
        """The validating plugins (after the registry's validation); raises to refuse. `obj` is
        None for a delete (the object is `req.old`)."""
        if obj is not None and req.operation in ("CREATE", "UPDATE") and podsecurity.handles(req.info.group, req.info.plural):
            out = self.pod_security.admit(
                group=req.info.group, plural=req.info.plural, obj=obj, old=req.old, namespace=req.namespace,
                name=req.name, subresource=req.subresource, username=req.username)
            report.audit_annotations.update({podsecurity.LABEL_PREFIX + k: v for k, v in out.audit.items()})
            if out.refused is not None:
                raise out.refused
            report.warnings.extend(out.warnings)
        await self.webhooks.validate(_call(req), obj, warnings=report.warnings, audit=report.audit_annotations)


def _call(req: Request) -> webhooks.Call:
    return webhooks.Call(info=req.info, operation=req.operation, name=req.name, namespace=req.namespace,
                         subresource=req.subresource, user=req.user, dry_run=req.dry_run, old=req.old,
                         options=req.options)
