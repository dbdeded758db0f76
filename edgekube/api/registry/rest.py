"""Generic REST semantics for every resource: the one path all writes take.

The HTTP handlers and the in-process client both call `Registry`, so an object written by a
controller obeys the same rules as one written by kubectl: metadata set by the server (uid,
creationTimestamp, generation, resourceVersion), defaults, validation, the status split,
compare-and-swap on resourceVersion, finalizers and deletionTimestamp, dry runs.

Objects are plain dicts in their wire form. Every method works on its own copy: values from the
store are freshly decoded, and nothing handed in by a caller is kept after the call returns,
except the object given to the store (which owns it from then on).
"""

from __future__ import annotations

import base64
import builtins
import copy
import dataclasses
import datetime
import ipaddress
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import orjson

from edgekube._cogs import clock as clock_mod
from edgekube._cogs import offload as offload_mod
from edgekube.api import errors, fields, jsontree, labels, quantity, ssa
from edgekube.api.auth import authz
from edgekube.api.auth import user as user_mod
from edgekube.api.registry import (
    admission,
    allocators,
    apiservices,
    chain,
    conversions,
    crds,
    decoding,
    defaults,
    fieldcheck,
    known_fields,
    resources,
    validation,
)
from edgekube.store import errors as store_errors
from edgekube.store import records
from edgekube.store import store as store_mod

JSON = dict[str, Any]
T = TypeVar("T")
log = logging.getLogger(__name__)

# Kinds whose metadata.generation tracks spec changes.
_GENERATION_KINDS = frozenset(
    {
        "Deployment.apps",
        "ReplicaSet.apps",
        "ReplicationController",
        "DaemonSet.apps",
        "StatefulSet.apps",
        "Job.batch",
        "CronJob.batch",
        "PersistentVolumeClaim",
        "CustomResourceDefinition.apiextensions.k8s.io",
    }
)
CRD_GK = "CustomResourceDefinition.apiextensions.k8s.io"
# Kinds that upstream lets PUT create when missing.
_CREATE_ON_UPDATE = frozenset(
    {
        "Endpoints",
        "Event",
        "Lease.coordination.k8s.io",
        "Role.rbac.authorization.k8s.io",
        "RoleBinding.rbac.authorization.k8s.io",
        "ClusterRole.rbac.authorization.k8s.io",
        "ClusterRoleBinding.rbac.authorization.k8s.io",
    }
)
# Kinds that keep the status a client sends on create (the node reports its own).
_STATUS_ON_CREATE = frozenset({"Node", "Event", "Lease.coordination.k8s.io"})
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CONFLICT_RETRIES = 8
_MAX_GRACE_SECONDS = (1 << 31) - 1


@dataclasses.dataclass(frozen=True)
class Options:
    dry_run: bool = False
    field_validation: str = "Strict"
    # Who writes, for metadata.managedFields: the request's fieldManager, else its user agent.
    field_manager: str | None = None
    # "Apply" when the object's managedFields were already worked out by server-side apply.
    operation: str = "Update"
    # The size of the request's body in bytes (0 in process): a write whose body or stored
    # object is large does its Python work off the event loop (see `Registry.offload`).
    cost: int = 0
    # Who asks (admission and the access reviews read it); None: the registry's own internal work.
    user: user_mod.UserInfo | None = None


@dataclasses.dataclass(frozen=True)
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    precondition_uid: str | None = None
    precondition_resource_version: str | None = None
    dry_run: bool = False
    user: user_mod.UserInfo | None = None  # as `Options.user`


@dataclasses.dataclass(frozen=True)
class ListResult:
    items: list[JSON]
    resource_version: str
    continue_token: str | None


@dataclasses.dataclass(frozen=True)
class RenderedList(Generic[T]):
    """A list whose objects are already rendered for the response (`Registry.list_rendered`)."""

    items: list[T]
    resource_version: str
    continue_token: str | None


@dataclasses.dataclass
class Warnings:
    """Warnings for the `Warning` response header (fieldValidation=Warn, deprecations,
    admission), and the audit annotations admission adds (for the audit log)."""

    messages: list[str] = dataclasses.field(default_factory=list)
    audit_annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    def report(self) -> chain.Report:
        """The admission chain's view of these: it adds to the same list and dict."""
        return chain.Report(warnings=self.messages, audit_annotations=self.audit_annotations)


@dataclasses.dataclass(frozen=True)
class ServiceNetwork:
    service_cidr: str = "10.43.0.0/16"
    node_port_range: tuple[int, int] = (30000, 32767)


class Registry:
    def __init__(
        self,
        store: store_mod.Store,
        *,
        catalog: resources.Catalog,
        clock: clock_mod.Clock,
        network: ServiceNetwork,
        offload: offload_mod.Offload | None = None,
        gate: authz.Gate | None = None,
        policy: chain.Chain | None = None,
    ) -> None:
        self.store = store
        # Where every request with a user is allowed or refused (HTTP and in process alike), and
        # the escalation checks of RBAC writes; without a policy, everything is allowed.
        self.gate = gate or authz.Gate(authz.AllowAll())
        # Where the pure work of large writes runs (input checks, defaults, validation,
        # managedFields, patches): only values that belong to the request alone go there.
        self.offload = offload or offload_mod.Offload()
        self.catalog = catalog
        # What each stored CRD declares, by key, at the revision it was read: serving is synced
        # after every CRD write, and decoding every CRD again each time (a 1 MB one: some 10 ms
        # on the loop) is for changed ones only. Replaced whole, never changed in place: the
        # worker reads it too (name conflicts, as a CRD is written).
        self._crds: dict[str, _StoredCRD] = {}
        self._clock = clock
        self._network = network
        net = ipaddress.ip_network(network.service_cidr)
        self._kubernetes_ip = str(net.network_address + 1)
        self._ips = allocators.IPAllocator(network.service_cidr)
        self._ports = allocators.PortAllocator(*network.node_port_range)
        self._admission = admission.Admission(store, catalog=catalog, clock=clock)
        # Hooks other modules install (runtime.py wires them; a bare registry has none, as an
        # API server without those plugins): create-only subresources ("serviceaccounts/token":
        # (namespace, name, body) -> the answer), and mutating admission of a pod being created
        # (the ServiceAccount plugin, api/registry/saadmission.py).
        self.subresource_creators: dict[str, Callable[[str, str, JSON], Awaitable[JSON]]] = {}
        self.pod_admission: list[Callable[[JSON, Options], Awaitable[None]]] = []
        # PodSecurity, webhooks, admission policies (see `chain`).
        self.policy = policy or chain.Chain(store, catalog=catalog, offload=self.offload)

    def rebuild_allocations(self) -> None:
        """Mark the cluster IPs and node ports of stored Services as used (at boot)."""
        info = self._info("", "v1", "services")
        for _, svc in self.store.objects(self.store.scan(info.key_prefix()).items, reader="service allocations"):
            spec = svc.get("spec") or {}
            for ip in _cluster_ips(spec):
                if self._ips.contains(ip):
                    self._ips.mark_used(ip)
            for port in spec.get("ports") or []:
                np = port.get("nodePort")
                if isinstance(np, int) and self._ports.contains(np):
                    self._ports.mark_used(np)

    def _object(self, item: records.Item) -> JSON:
        """The object of a stored item; a 500 naming its key when it cannot be decoded (the
        server's own fault: input is checked before it is stored)."""
        try:
            return item.object()
        except store_errors.CorruptRecordError as exc:
            self.store.damage.note(exc, reader="a request")
            raise damaged(exc) from None

    async def _decode(self, item: records.Item, *, cost: int) -> JSON:
        """`_object`, off the loop and in pieces for a large object (the damage is noted on the
        loop)."""
        try:
            if not self.offload.heavy(cost):
                return item.object()
            return await self.offload.always(records.decode_in_pieces, item.value, key=item.key, revision=item.revision)
        except store_errors.CorruptRecordError as exc:
            self.store.damage.note(exc, reader="a request")
            raise damaged(exc) from None

    def _missing(self, key: str) -> bool:
        """Whether nothing is stored at `key` (at boot: a damaged record there is left alone,
        noted, and not written over)."""
        try:
            return self.store.get(key) is None
        except store_errors.CorruptRecordError as exc:
            self.store.damage.note(exc, reader="boot")
            return False

    def _info(self, group: str, version: str, plural: str) -> resources.ResourceInfo:
        info = self.catalog.lookup(group, version, plural)
        assert info is not None, plural
        return info

    # --- reads -------------------------------------------------------------------------------

    def get(self, info: resources.ResourceInfo, *, namespace: str | None, name: str) -> JSON:
        item = self.store.get(info.key(name, namespace))
        if item is None:
            raise errors.not_found(info.plural, name, group=info.group)
        return present(info, self._object(item))

    async def read(self, info: resources.ResourceInfo, *, namespace: str | None, name: str,
                   render: Callable[[JSON], T]) -> T:
        """`get` for a client's request, the object as `render` (a pure function) makes it: for
        a large object, decoded in pieces and rendered on the offload worker."""
        item = self.store.get(info.key(name, namespace))
        if item is None:
            raise errors.not_found(info.plural, name, group=info.group)
        cost = len(item.value)
        try:
            with self.offload.collector_paused(cost):
                return await self.offload.run(cost, _render_item, info, item, render, pieces=self.offload.heavy(cost))
        except store_errors.CorruptRecordError as exc:
            self.store.damage.note(exc, reader="a request")
            raise damaged(exc) from None

    def list(
        self,
        info: resources.ResourceInfo,
        *,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        accept, start_after, revision = self._list_query(info, namespace=namespace, label_selector=label_selector,
                                                         field_selector=field_selector, continue_token=continue_token)
        try:
            page = self.store.scan(info.key_prefix(namespace), start_after=start_after,
                                   limit=limit if limit and limit > 0 else None, accept=accept, revision=revision)
        except store_errors.CompactedError:
            raise _continue_expired() from None
        token = _encode_continue(page.next_key, page.revision) if page.next_key else None
        items = [present(info, obj) for _, obj in self.store.objects(page.items, reader="a list")]
        return ListResult(items=items, resource_version=str(page.revision), continue_token=token)

    async def list_rendered(
        self,
        info: resources.ResourceInfo,
        *,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
        limit: int | None = None,
        continue_token: str | None = None,
        render: Callable[[JSON], T],
    ) -> RenderedList[T]:
        """`list` for a client's request, each object as `render` (a pure function) makes it:
        the scan, the selectors and the rendering of every object run on the offload worker, one
        object at a time, so that neither the loop waits for thousands of them nor thousands of
        decoded objects are alive at once."""
        accept, start_after, revision = await self.offload.run(
            selector_cost(label_selector, field_selector), self._list_query, info, namespace=namespace,
            label_selector=label_selector, field_selector=field_selector, continue_token=continue_token)
        try:
            page = await self.store.scan_off_loop(info.key_prefix(namespace), offload=self.offload,
                                                  start_after=start_after, limit=limit if limit and limit > 0 else None,
                                                  accept=accept, revision=revision)
        except store_errors.CompactedError:
            raise _continue_expired() from None
        token = _encode_continue(page.next_key, page.revision) if page.next_key else None
        items = await self.offload.always(self._render_items, info, page.items, render)
        return RenderedList(items=items, resource_version=str(page.revision), continue_token=token)

    def _render_items(self, info: resources.ResourceInfo, items: builtins.list[records.Item],
                      render: Callable[[JSON], T]) -> builtins.list[T]:
        return [render(present(info, obj)) for _, obj in self.store.objects(items, reader="a list")]

    def _list_query(
        self, info: resources.ResourceInfo, *, namespace: str | None, label_selector: str, field_selector: str,
        continue_token: str | None,
    ) -> tuple[Callable[[bytes], bool] | None, str | None, int | None]:
        """(filter on stored values, key to start after, revision to list at) of a list request."""
        lsel, fsel = self._selectors(info, label_selector=label_selector, field_selector=field_selector)
        start_after = None
        revision = None
        if continue_token:
            start_after, revision = _decode_continue(continue_token, prefix=info.key_prefix(namespace))
        if lsel is None and fsel is None:
            return None, start_after, revision
        # Only the top-level fields the selectors read are decoded (a label selector: metadata).
        needed = frozenset({"metadata"}) | (fsel.fields if fsel is not None else frozenset())
        accept = _acceptor(lsel, fsel)

        def on_value(value: bytes) -> bool:
            try:
                return accept(records.decode_fields(value, needed))
            except store_errors.CorruptRecordError:
                return True  # noted and skipped with its key by the list itself

        return on_value, start_after, revision

    def _selectors(
        self, info: resources.ResourceInfo, *, label_selector: str, field_selector: str
    ) -> tuple[labels.Selector | None, fields.FieldSelector | None]:
        try:
            lsel = labels.parse(label_selector) if label_selector else None
            fsel = fields.parse(field_selector, gk=info.gk) if field_selector else None
        except labels.SelectorError as exc:
            raise errors.bad_request(str(exc)) from None
        except fields.SelectorError as exc:
            raise errors.bad_request(str(exc)) from None
        return lsel, fsel

    def matcher(
        self, info: resources.ResourceInfo, *, label_selector: str, field_selector: str
    ) -> Callable[[Mapping[str, Any]], bool] | None:
        lsel, fsel = self._selectors(info, label_selector=label_selector, field_selector=field_selector)
        if lsel is None and fsel is None:
            return None
        return _acceptor(lsel, fsel)

    # --- create ------------------------------------------------------------------------------

    async def create(
        self,
        info: resources.ResourceInfo,
        obj: JSON,
        *,
        namespace: str | None,
        options: Options = Options(),
        warnings: Warnings | None = None,
    ) -> JSON:
        cost = options.cost or _encoded_size(obj)
        with self.offload.collector_paused(cost):
            return await self._create(info, obj, namespace=namespace, options=options, warnings=warnings, cost=cost)

    async def _create(self, info: resources.ResourceInfo, obj: JSON, *, namespace: str | None, options: Options,
                      warnings: Warnings | None, cost: int) -> JSON:
        run = self.offload.run
        obj = await run(cost, self._create_input, info, obj, namespace)
        meta = obj["metadata"]
        name = meta["name"]
        if info.namespaced:
            self._check_namespace_accepts(info, namespace or "", name)
        now = clock_mod.rfc3339(self._clock.now())
        await run(cost, self._create_prepare, info, obj, now=now, options=options, warnings=warnings)
        if info.gk == CRD_GK:
            obj["status"] = self._crd_status(obj, now=now)
        if info.gk == apiservices.GK:
            obj["status"] = apiservices.status(obj, old=None, now=now)
        if info.gk == "Namespace":
            # Set at creation only (upstream's PrepareForCreate): the namespace controller removes
            # it once the namespace is empty, and an update must not bring it back.
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict) and "finalizers" not in spec:
                spec["finalizers"] = ["kubernetes"]
        if info.gk == "Job.batch":
            defaults.job_selector(obj)
        # Who owns what is settled before mutating admission, as upstream's create handler does:
        # what admission adds (a service account's token volume, LimitRanger's resources) is
        # nobody's, so a later apply that leaves it out does not remove it.
        managed = None if options.operation == "Apply" else await run(
            cost, ssa.track_update, None, obj, manager=_manager(options), api_version=info.api_version,
            schema=self.schema_for(info), now=now,
        )
        self._admission.mutate(info, obj)
        if info.gk == "Pod":
            for admit in self.pod_admission:
                await admit(obj, options)
            self._admit_priority(obj)
        request = _admission_request(info, obj, "CREATE", options=options)
        report = (warnings or Warnings()).report()
        await self.policy.mutate(request, obj, report)
        if info.gk == "Pod":  # after the webhooks, which may change what decides the QoS class
            obj.setdefault("status", {}).setdefault("phase", "Pending")
            obj["status"].setdefault("qosClass", _qos_class(obj.get("spec") or {}))
        await run(cost, self._validate, info, obj, old=None)
        self.gate.check_write(options.user, info.gk, obj, None)
        await self.policy.validate(request, obj, report)
        await self._admission.validate(info, obj, old=None, subresource=None, dry_run=options.dry_run)
        if managed is not None:
            meta["managedFields"] = managed
        allocated = self._allocate_service(obj, old=None) if info.gk == "Service" else _Allocated()
        try:
            await run(cost, _check_storable, info, obj)
        except errors.APIError:
            allocated.release(self)
            raise
        if options.dry_run:
            allocated.release(self)
            return obj
        try:
            await self.store.create(info.key(name, namespace), obj)
        except store_errors.KeyExistsError:
            allocated.release(self)
            raise errors.already_exists(info.plural, name, group=info.group) from None
        except store_errors.StoreError as exc:
            allocated.release(self)
            raise _store_failure(exc) from None
        if info.gk == CRD_GK:
            await self._sync_written_crd(obj, cost=cost)
        # What was stored, its resourceVersion set by the store, which keeps only its bytes:
        # no need to decode them again.
        return obj

    def _create_input(self, info: resources.ResourceInfo, given: JSON, namespace: str | None) -> JSON:
        """The request's own copy of an object to create, checked and named (pure: may run
        off the loop)."""
        _check_input(info, given)
        obj = copy.deepcopy(given)
        self._check_type(info, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        self._check_namespace(info, meta, namespace)
        if _expected_revision(meta.get("resourceVersion")) is not None:
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        meta.pop("resourceVersion", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise errors.invalid(
                    info.kind,
                    "",
                    [errors.Cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired")],
                    group=info.group,
                )
            meta["name"] = f"{prefix}{''.join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))}"
        return obj

    def _create_prepare(self, info: resources.ResourceInfo, obj: JSON, *, now: str, options: Options,
                        warnings: Warnings | None) -> None:
        """Server-set metadata, the decoding checks and defaults of an object to create (pure:
        may run off the loop)."""
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        if info.gk in _GENERATION_KINDS:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if info.has_status and info.gk not in _STATUS_ON_CREATE:
            obj.pop("status", None)
        defaults.status(info.gk, obj)
        self._check_fields(info, obj, options=options, warnings=warnings)
        if info.custom is not None:
            self._prepare_custom(info, obj, options=options, warnings=warnings)
            meta["generation"] = 1
        defaults.apply(info.gk, obj)

    def _check_type(self, info: resources.ResourceInfo, obj: JSON) -> None:
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if api_version and api_version != info.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({info.api_version})"
            )
        if kind and kind != info.kind:
            # Upstream's words first (kubectl's own tests look for them), then which kinds.
            raise errors.bad_request(f"the object provided is unrecognized (must be of type {info.kind}): "
                                     f"the kind in the data ({kind}) does not match the expected kind ({info.kind})")
        obj["apiVersion"] = info.api_version
        obj["kind"] = info.kind
        converted = conversions.to_storage(info.gk, info.version, obj)
        if converted is not obj:
            obj.clear()
            obj.update(converted)

    def _check_namespace(self, info: resources.ResourceInfo, meta: JSON, namespace: str | None) -> None:
        body_ns = meta.get("namespace")
        if info.namespaced:
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            if not namespace:
                raise errors.bad_request("the server could not find the requested resource: a namespace is required")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)

    def _check_namespace_accepts(self, info: resources.ResourceInfo, namespace: str, name: str) -> None:
        ns_info = self._info("", "v1", "namespaces")
        item = self.store.get(ns_info.key(namespace))
        if item is None:
            raise errors.not_found("namespaces", namespace)
        ns = self._object(item)
        if (ns.get("metadata") or {}).get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            raise errors.namespace_terminating(namespace, info.plural, name, group=info.group)

    def _check_fields(
        self, info: resources.ResourceInfo, obj: JSON, *, options: Options, warnings: Warnings | None,
        keep_nulls: bool = False,
    ) -> None:
        mode = options.field_validation
        schema = self.schema_for(info) if info.custom is None else None
        if schema is not None and not keep_nulls:
            defaults.drop_null_fields(schema, obj)
        if schema is not None:
            # Decoding as upstream does into Go structs: wrong types are a 400 whatever the
            # mode; unknown fields (at any depth) are refused, reported or dropped.
            unknown, wrong = fieldcheck.check(schema, obj, prune=mode != "Strict")
            prefix = _decode_prefix(info)
            if wrong:
                raise errors.bad_request(prefix + "; ".join(wrong))
        else:
            if mode == "Ignore":
                return
            unknown = known_fields.unknown_fields(info.gk, obj)
            prefix = ""
        if not unknown or mode == "Ignore":
            return
        if mode == "Strict":
            listed = ", ".join(f'unknown field "{f}"' for f in unknown)
            raise errors.bad_request(f"{prefix}strict decoding error: {listed}")
        if warnings is not None:
            warnings.messages.extend(f'unknown field "{f}"' for f in unknown)

    def _validate(self, info: resources.ResourceInfo, obj: JSON, *, old: JSON | None, status_only: bool = False) -> None:
        if status_only:
            causes = validation.validate_status(info.gk, obj, old=old, namespaced=info.namespaced)
        else:
            causes = validation.validate(info.gk, obj, old=old, namespaced=info.namespaced)
        if info.custom is not None:
            causes = [c for c in causes if not c.field.startswith("status.conditions")]
            causes += crds.validate_object(info.custom.schema, obj)
        if causes:
            raise errors.invalid(info.kind, (obj.get("metadata") or {}).get("name", ""), causes, group=info.group)

    # --- update ------------------------------------------------------------------------------

    async def update(
        self,
        info: resources.ResourceInfo,
        obj: JSON,
        *,
        namespace: str | None,
        name: str,
        subresource: str | None = None,
        options: Options = Options(),
        warnings: Warnings | None = None,
    ) -> tuple[JSON, bool]:
        """PUT. Returns (object, created)."""
        obj = await self.offload.run(options.cost, self._update_input, info, obj, namespace=namespace, name=name)
        meta = obj["metadata"]
        item = self.store.get(info.key(name, namespace))
        if item is None:
            if info.gk in _CREATE_ON_UPDATE and subresource is None:
                meta.pop("resourceVersion", None)
                return await self.create(info, obj, namespace=namespace, options=options, warnings=warnings), True
            raise errors.not_found(info.plural, name, group=info.group)
        expect = _expected_revision(meta.get("resourceVersion"))
        if expect is None and (info.custom is not None or info.gk == CRD_GK):
            # Their strategies refuse unconditional updates (AllowUnconditionalUpdate false).
            raise errors.invalid(
                info.plural, name,
                [errors.Cause("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")],
                group=info.group,
            )
        if expect is not None and expect != item.revision:
            raise errors.conflict(info.plural, name, group=info.group)
        await self.offload.run(max(options.cost, len(item.value)), self._check_fields, info, obj, options=options,
                               warnings=warnings)
        out = await self._write_update(info, item, obj, namespace=namespace, subresource=subresource, options=options,
                                       warnings=warnings)
        return out, False

    def _update_input(self, info: resources.ResourceInfo, given: JSON, *, namespace: str | None, name: str) -> JSON:
        """The request's own copy of an object to update, checked and named (pure: may run off
        the loop)."""
        _check_input(info, given)
        obj = copy.deepcopy(given)
        self._check_type(info, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        body_name = meta.get("name")
        if body_name and body_name != name:
            raise errors.bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        meta["name"] = name
        self._check_namespace(info, meta, namespace)
        return obj

    async def _write_update(
        self,
        info: resources.ResourceInfo,
        item: records.Item,
        new: JSON,
        *,
        namespace: str | None,
        subresource: str | None,
        options: Options,
        warnings: Warnings | None = None,
    ) -> JSON:
        cost = max(options.cost, len(item.value))
        with self.offload.collector_paused(cost):
            # The old object is let go of on the offload worker when it is large (freeing some
            # hundred thousand objects takes milliseconds too): it is `held` here alone once the
            # frame that used it is gone.
            held: builtins.list[Any] = []
            out = await self._write_update_with(info, item, new, namespace=namespace, subresource=subresource,
                                                options=options, cost=cost, held=held,
                                                report=(warnings or Warnings()).report())
            if self.offload.heavy(cost):
                await self.offload.always(held.clear)
            return out

    async def _write_update_with(self, info: resources.ResourceInfo, item: records.Item, new: JSON, *,
                                 namespace: str | None, subresource: str | None, options: Options, cost: int,
                                 held: builtins.list[Any], report: chain.Report) -> JSON:
        run = self.offload.run
        old = await self._decode(item, cost=cost)
        held.append(old)
        sent_managed = (new.get("metadata") or {}).get("managedFields")
        request = _admission_request(info, new, "UPDATE", options=options, subresource=subresource, old=old)
        new = await self._merge_update(info, old, new, subresource=subresource, options=options, cost=cost,
                                       request=request, report=report)
        name = old["metadata"]["name"]
        if options.operation != "Apply":
            base = old
            if subresource is None and _managed_fields_given(sent_managed):
                # The writer's managedFields stand, as upstream's field manager takes them when
                # they decode (kubectl moving client-side apply's entry into its own); one empty
                # entry, `[{}]`, resets them.
                base = {**old, "metadata": {**old["metadata"], "managedFields": sent_managed}}
            managed = await run(
                cost, ssa.track_update, base, new, manager=_manager(options), api_version=info.api_version,
                schema=self.schema_for(info), now=clock_mod.rfc3339(self._clock.now()), subresource=subresource,
            )
            # The entries replaced (a large object's: some hundred thousand objects) go with `old`.
            held.append(new["metadata"].get("managedFields"))
            new["metadata"]["managedFields"] = managed
        if await run(cost, _unchanged, old, new):
            return old
        self.gate.check_write(options.user, info.gk, new, old)
        if subresource == "scale":
            await self.policy.validate_rules(request, new)  # its policies saw the Scale (`set_scale`)
        else:
            await self.policy.validate(request, new, report)
        await self._admission.validate(info, new, old=old, subresource=subresource, dry_run=options.dry_run)
        new_meta = new["metadata"]
        finishing = bool(new_meta.get("deletionTimestamp") and not new_meta.get("finalizers") and not _graceful_pod(info, old))
        if not finishing:  # an object on its way out is not stored again: it may always go
            await run(cost, _check_storable, info, new)
        allocated = self._allocate_service(new, old=old) if info.gk == "Service" else _Allocated()
        if options.dry_run:
            allocated.release(self)
            return new
        if finishing:
            # The last finalizer is gone from an object being deleted: finish the delete. (Not
            # for a pod in its grace period: its kubelet finishes that delete once its
            # containers stopped, and writes the pod's final status before, as upstream.)
            try:
                applied = await self.store.delete(info.key(name, namespace), expect_revision=item.revision)
            except store_errors.StoreError as exc:
                allocated.release(self)
                raise self._map_write_error(info, name, exc) from None
            gone = await run(cost, records.decode, applied.value)
            self._release_service(info, gone)
            if info.gk == CRD_GK:
                self.sync_crds()
            return gone
        try:
            await self.store.update(info.key(name, namespace), new, expect_revision=item.revision)
        except store_errors.StoreError as exc:
            allocated.release(self)
            raise self._map_write_error(info, name, exc) from None
        if info.gk == "Service":
            _release_dropped_ports(self, old, new)
        if info.gk == CRD_GK:
            await self._sync_written_crd(new, cost=cost)
        return new  # as stored, with its new resourceVersion (see `create`)

    async def _merge_update(
        self, info: resources.ResourceInfo, old: JSON, new: JSON, *, subresource: str | None, options: Options,
        cost: int, request: chain.Request, report: chain.Report,
    ) -> JSON:
        """Build the object to store from the old one and the client's new one."""
        run = self.offload.run
        if subresource == "status":
            # Upstream's order: mutating admission sees the object the client sent (or its patch
            # left), then the status strategy keeps only what a status write may change.
            await self.policy.mutate(request, new, report)
            return await run(cost, self._merge_status, info, old, new, options=options)
        await run(cost, self._merge_spec, info, old, new, options=options)
        if info.gk == CRD_GK:
            new["status"] = self._crd_status(new, now=clock_mod.rfc3339(self._clock.now()))
        if info.gk == apiservices.GK:
            new["status"] = apiservices.status(new, old=old, now=clock_mod.rfc3339(self._clock.now()))
        if subresource != "scale":  # a scale write was admitted as a Scale (`set_scale`)
            await self.policy.mutate(request, new, report)
        await run(cost, self._merge_finish, info, old, new)
        return new

    def _merge_status(self, info: resources.ResourceInfo, old: JSON, new: JSON, *, options: Options) -> JSON:
        """A status update: the old object with the new status and metadata (pure: may run off
        the loop)."""
        merged = copy.deepcopy(old)
        merged["status"] = new.get("status", {})
        defaults.status(info.gk, merged)
        if info.custom is not None:
            self._prepare_custom(info, merged, options=options, warnings=None)
        nmeta = new.get("metadata") or {}
        for k in ("labels", "annotations", "finalizers", "ownerReferences"):
            if k in nmeta:
                merged["metadata"][k] = nmeta[k]
            else:
                merged["metadata"].pop(k, None)
        self._validate(info, merged, old=old, status_only=True)
        return merged

    def _merge_spec(self, info: resources.ResourceInfo, old: JSON, new: JSON, *, options: Options) -> None:
        """An update's object with the metadata and status it may not change carried over from
        the old one, and defaulted (pure: may run off the loop)."""
        old_meta = old["metadata"]
        new_meta = new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"):
            if k in old_meta:
                new_meta[k] = old_meta[k]
            else:
                new_meta.pop(k, None)
        new_meta.pop("selfLink", None)
        if old_meta.get("deletionTimestamp"):
            # Once deletion started, finalizers may only be removed, never added.
            added = set(new_meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid(
                    info.kind,
                    old_meta["name"],
                    [errors.Cause("metadata.finalizers", f"Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)}", "FieldValueForbidden")],
                    group=info.group,
                )
        if info.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if info.gk == "Service":
            _keep_allocated_values(old, new)
        if info.custom is not None:
            self._prepare_custom(info, new, options=options, warnings=None)
        if info.gk == "Pod":
            _keep_admitted_priority(old, new)
        defaults.apply(info.gk, new)
        defaults.status(info.gk, new)

    def _merge_finish(self, info: resources.ResourceInfo, old: JSON, new: JSON) -> None:
        """The generation and validation of an update (pure: may run off the loop)."""
        if info.gk in _GENERATION_KINDS or info.custom is not None:
            gen = int(old["metadata"].get("generation") or 1)
            if _spec_of(old) != _spec_of(new):
                gen += 1
            new["metadata"]["generation"] = gen
        self._validate(info, new, old=old)

    def _map_write_error(self, info: resources.ResourceInfo, name: str, exc: store_errors.StoreError) -> errors.APIError:
        if isinstance(exc, store_errors.ConflictError):
            return errors.conflict(info.plural, name, group=info.group)
        if isinstance(exc, store_errors.NotFoundError):
            return errors.not_found(info.plural, name, group=info.group)
        return _store_failure(exc)

    # --- patch -------------------------------------------------------------------------------

    async def patch(
        self,
        info: resources.ResourceInfo,
        *,
        namespace: str | None,
        name: str,
        apply: Callable[[JSON], JSON],
        subresource: str | None = None,
        options: Options = Options(),
        warnings: Warnings | None = None,
        shown_as: Callable[[JSON], str] | None = None,
        pure: bool = False,
    ) -> JSON:
        """Read, patch with `apply`, and write with a revision precondition; retry on races.

        A resourceVersion inside the patch is the client's own precondition: a mismatch is a
        409, not a retry. A result that does not decode as the kind is upstream's 422 on the
        field `patch`, whose value `shown_as` renders (see `decoding`). `pure`: `apply` and
        `shown_as` depend on nothing but what they are given (a client's patch), so for a large
        object they run off the loop too; an in-process caller's callback always runs on it.
        """
        run = self.offload.run
        for _ in range(_CONFLICT_RETRIES):
            item = self.store.get(info.key(name, namespace))
            if item is None:
                raise errors.not_found(info.plural, name, group=info.group)
            cost = max(options.cost, len(item.value))
            try:
                with self.offload.collector_paused(cost):
                    current = await self._decode(item, cost=cost)  # decoded for this call alone
                    if pure:
                        # Handed over, so that a large one is freed on the worker once patched.
                        handed = [current]
                        del current
                        patched = await run(cost, _patch_with, apply, info, handed)
                    else:
                        patched = apply(present(info, current))
                        if self.offload.heavy(cost):
                            self.offload.let_go(current)  # freed on the worker once written
                        del current
                    patched = await run(cost, self._patched, info, patched, revision=item.revision, name=name,
                                        namespace=namespace, options=options, warnings=warnings, shown_as=shown_as)
                    return await self._write_update(
                        info, item, patched, namespace=namespace, subresource=subresource, options=options,
                        warnings=warnings,
                    )
            except errors.APIError as exc:
                # Lost a race: read again. A resourceVersion the patch itself carries no longer
                # matches the new read, and the check above answers 409.
                if exc.reason == "Conflict":
                    continue
                raise
        raise errors.conflict(info.plural, name, group=info.group, why="too many concurrent updates, try again")

    def _patched(self, info: resources.ResourceInfo, patched: Any, *, revision: int, name: str,
                 namespace: str | None, options: Options, warnings: Warnings | None,
                 shown_as: Callable[[JSON], str] | None) -> JSON:
        """A patch's result checked as the object to write (pure when `shown_as` is: may run off
        the loop)."""
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch result is not an object")
        _check_input(info, patched)
        pmeta = patched.get("metadata")
        if not isinstance(pmeta, dict):
            raise errors.bad_request("metadata must be an object")
        expect = _expected_revision(pmeta.get("resourceVersion"))
        if expect is not None and expect != revision:
            raise errors.conflict(info.plural, name, group=info.group)
        if pmeta.get("name", name) != name:
            raise errors.bad_request(f"the name of the object ({pmeta.get('name')}) does not match the name on the URL ({name})")
        self._check_type(info, patched)
        self._check_namespace(info, pmeta, namespace)
        try:
            self._check_fields(info, patched, options=options, warnings=warnings)
        except errors.APIError as exc:
            if exc.code != 400 or shown_as is None:
                raise
            raise self._undecodable_patch(info, patched, exc, shown_as=shown_as) from None
        return patched

    def _undecodable_patch(
        self, info: resources.ResourceInfo, patched: JSON, exc: errors.APIError, *, shown_as: Callable[[JSON], str]
    ) -> errors.APIError:
        detail = exc.message.removeprefix(_decode_prefix(info))
        if info.custom is None and not detail.startswith("strict decoding error"):
            detail = decoding.restore_error(self.schema_for(info), patched) or detail
        return decoding.patch_invalid(shown_as(patched), detail)

    # --- custom resources ---------------------------------------------------------------------

    def _prepare_custom(
        self, info: resources.ResourceInfo, obj: JSON, *, options: Options, warnings: Warnings | None
    ) -> None:
        """Unknown fields (per fieldValidation), pruning and schema defaults for a custom object."""
        assert info.custom is not None
        schema = info.custom.schema
        unknown = crds.unknown_fields(schema, obj)
        if unknown and options.field_validation == "Strict":
            listed = ", ".join(f'unknown field "{f}"' for f in unknown)
            raise errors.bad_request(f"strict decoding error: {listed}")
        if unknown and warnings is not None and options.field_validation == "Warn":
            warnings.messages.extend(f'unknown field "{f}"' for f in unknown)
        crds.prune(schema, obj)
        crds.apply_defaults(schema, obj)
        if not info.has_status:
            return
        if not isinstance(obj.get("status", {}), dict):
            obj.pop("status", None)

    def _crd_status(self, crd: JSON, *, now: str) -> JSON:
        spec = crd.get("spec") or {}
        group = spec.get("group", "")
        names = spec.get("names") or {}
        conflict = ""
        if self.catalog.builtin(group, names.get("plural", "")):
            conflict = f'"{names.get("plural")}" is already in use'
        else:
            for other in self._stored_crds(reader="CRD names"):
                if other.name == crd["metadata"]["name"]:
                    continue
                if other.group == group and other.kind == names.get("kind"):
                    conflict = f'"{names.get("kind")}" is already in use'
        return crds.status(crd, now=now, accepted=not conflict, conflict=conflict)

    async def _sync_written_crd(self, crd: JSON, *, cost: int) -> None:
        """`sync_crds` after a write of `crd` (as stored): what it declares read from a copy of
        it, off the loop when large, rather than decoded again from the store on the loop."""
        meta = crd.get("metadata") or {}
        key = self._info("apiextensions.k8s.io", "v1", "customresourcedefinitions").key(meta.get("name", ""), None)
        stored = await self.offload.run(cost, _StoredCRD.of_copy, crd, revision=int(meta.get("resourceVersion") or 0))
        self._crds = {**self._crds, key: stored}
        self.sync_crds()

    def sync_crds(self) -> None:
        """Serve exactly what the stored, accepted CRDs declare (at boot and after CRD writes)."""
        wanted: builtins.list[resources.ResourceInfo] = []
        for stored in self._stored_crds(reader="CRD serving"):
            wanted.extend(stored.served)
        self.catalog.set_custom(wanted)

    def _stored_crds(self, *, reader: str) -> builtins.list[_StoredCRD]:
        """Every stored CRD's declarations, decoding only those changed since last read."""
        info = self._info("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        known = self._crds
        fresh: dict[str, _StoredCRD] = {}
        for item in self.store.scan(info.key_prefix()).items:
            seen = known.get(item.key)
            if seen is not None and seen.revision == item.revision:
                fresh[item.key] = seen
                continue
            try:
                fresh[item.key] = _StoredCRD.of(item.object(), revision=item.revision)
            except store_errors.CorruptRecordError as exc:
                self.store.damage.note(exc, reader=reader)
        self._crds = fresh
        return builtins.list(fresh.values())

    async def finish_crd_deletion(self, crd: JSON) -> tuple[JSON, bool]:
        """Delete every object of a CRD being deleted, then let the CRD go."""
        spec = crd.get("spec") or {}
        prefix = f"/{spec.get('group', '')}/{(spec.get('names') or {}).get('plural', '')}/"
        for item in self.store.scan(prefix).items:
            try:
                await self.store.delete(item.key, expect_revision=None)
            except store_errors.NotFoundError:
                continue
        info = self._info("apiextensions.k8s.io", "v1", "customresourcedefinitions")

        def release(obj: JSON) -> JSON:
            meta = obj["metadata"]
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != crds.CLEANUP_FINALIZER]
            if not meta["finalizers"]:
                del meta["finalizers"]
            return obj

        out = await self.patch(info, namespace=None, name=crd["metadata"]["name"], apply=release)
        self.sync_crds()
        return out, not (out.get("metadata") or {}).get("finalizers")

    async def resume_crd_deletions(self) -> None:
        """At boot: finish CRD deletions a crash interrupted."""
        info = self._info("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for _, crd in self.store.objects(self.store.scan(info.key_prefix()).items, reader="CRD deletions"):
            if crd["metadata"].get("deletionTimestamp") and crds.CLEANUP_FINALIZER in (crd["metadata"].get("finalizers") or []):
                await self.finish_crd_deletion(crd)

    # --- server-side apply --------------------------------------------------------------------

    def schema_for(self, info: resources.ResourceInfo) -> ssa.Schema:
        if info.custom is not None:
            return info.custom.schema
        return ssa.kind_schema(info.group, conversions.storage_version(info.gk, info.version), info.kind)

    async def apply(
        self,
        info: resources.ResourceInfo,
        config: JSON,
        *,
        namespace: str | None,
        name: str,
        force: bool,
        subresource: str | None = None,
        options: Options = Options(),
        warnings: Warnings | None = None,
    ) -> tuple[JSON, bool]:
        """Server-side apply of `config` by `options.field_manager`. Returns (object, created)."""
        manager = options.field_manager
        if not manager:
            raise errors.invalid(
                "PatchOptions", "", [errors.Cause("fieldManager", "Required value: is required for apply patch", "FieldValueRequired")],
                group="meta.k8s.io",
            )
        run = self.offload.run
        config = await run(options.cost, self._apply_input, info, config, namespace=namespace, name=name,
                           options=options, warnings=warnings)
        schema = self.schema_for(info)
        applying = dataclasses.replace(options, operation="Apply")
        for _ in range(_CONFLICT_RETRIES):
            now = clock_mod.rfc3339(self._clock.now())
            item = self.store.get(info.key(name, namespace))
            cost = max(options.cost, len(item.value)) if item is not None else options.cost
            with self.offload.collector_paused(cost):
                live = await self._decode(item, cost=cost) if item is not None else None
                try:
                    merged, managed = await run(
                        cost, ssa.apply, live, config, manager=manager, api_version=info.api_version, schema=schema,
                        force=force, now=now, subresource=subresource,
                    )
                except ssa.ConflictError as exc:
                    raise _apply_conflict(exc) from None
                finally:
                    if live is not None and self.offload.heavy(cost):
                        self.offload.let_go(live)  # freed on the worker, not when this frame ends
                    live = None
            merged.setdefault("metadata", {})["managedFields"] = managed
            if item is None:
                if subresource is not None:
                    raise errors.not_found(info.plural, name, group=info.group)
                return await self.create(info, merged, namespace=namespace, options=applying, warnings=warnings), True
            try:
                return await self._write_update(
                    info, item, merged, namespace=namespace, subresource=subresource, options=applying,
                    warnings=warnings,
                ), False
            except errors.APIError as exc:
                if exc.reason == "Conflict":
                    continue
                raise
        raise errors.conflict(info.plural, name, group=info.group, why="too many concurrent updates, try again")

    def _apply_input(self, info: resources.ResourceInfo, given: JSON, *, namespace: str | None, name: str,
                     options: Options, warnings: Warnings | None) -> JSON:
        """The request's own copy of an applied configuration, checked (pure: may run off the
        loop)."""
        _check_input(info, given)
        config = copy.deepcopy(given)
        self._check_type(info, config)
        meta = config.get("metadata")
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if meta.get("name") not in (None, name):
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        meta["name"] = name
        self._check_namespace(info, meta, namespace)
        self._check_fields(info, config, options=options, warnings=warnings, keep_nulls=True)
        return config

    # --- delete ------------------------------------------------------------------------------

    async def delete(
        self,
        info: resources.ResourceInfo,
        *,
        namespace: str | None,
        name: str,
        options: DeleteOptions = DeleteOptions(),
        warnings: Warnings | None = None,
    ) -> tuple[JSON, bool]:
        """Returns (object, deleted_now). Not deleted now: marked with deletionTimestamp.
        Admission's warnings and audit annotations go to `warnings`, as for any write."""
        if (refused := admission.refuse_delete(info, name)) is not None:
            raise refused
        for _ in range(_CONFLICT_RETRIES):
            try:
                item = self.store.get(info.key(name, namespace))
                if item is None:
                    raise errors.not_found(info.plural, name, group=info.group)
                obj = item.object()
            except store_errors.CorruptRecordError as exc:
                return await self._delete_damaged(info, namespace=namespace, name=name, exc=exc, options=options)
            meta = obj["metadata"]
            if options.precondition_uid and options.precondition_uid != meta.get("uid"):
                raise errors.conflict(
                    info.plural,
                    name,
                    group=info.group,
                    why=f"Precondition failed: UID in precondition: {options.precondition_uid}, UID in object meta: {meta.get('uid')}",
                )
            if options.precondition_resource_version and options.precondition_resource_version != meta.get("resourceVersion"):
                raise errors.conflict(
                    info.plural,
                    name,
                    group=info.group,
                    why=f"Precondition failed: ResourceVersion in precondition: {options.precondition_resource_version}, "
                    f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                )
            await self.policy.validate(chain.Request(
                info=info, operation="DELETE", name=name, namespace=namespace or "", user=options.user,
                dry_run=options.dry_run, old=obj), None, (warnings or Warnings()).report())
            try:
                out, deleted = await self._delete_once(info, item, obj, namespace=namespace, options=options)
                if info.gk == CRD_GK and not options.dry_run:
                    if deleted:
                        self.sync_crds()
                    else:
                        out, deleted = await self.finish_crd_deletion(out)
                return out, deleted
            except store_errors.ConflictError:
                continue
            except store_errors.NotFoundError:
                raise errors.not_found(info.plural, name, group=info.group) from None
            except store_errors.StoreError as exc:
                raise _store_failure(exc) from None
        raise errors.conflict(info.plural, name, group=info.group, why="too many concurrent updates, try again")

    async def _delete_damaged(self, info: resources.ResourceInfo, *, namespace: str | None, name: str,
                              exc: store_errors.CorruptRecordError, options: DeleteOptions) -> tuple[JSON, bool]:
        """A stored object that cannot be decoded can always be deleted, at once: finalizers,
        grace periods and preconditions cannot be read from it (the way back `edgekube store
        check` points to). Its tombstone and DELETED event carry a stand-in with its name."""
        self.store.damage.note(exc, reader="a delete")
        if options.precondition_uid or options.precondition_resource_version:
            raise errors.conflict(info.plural, name, group=info.group,
                                  why="the stored object cannot be decoded, so its preconditions cannot be checked; "
                                      "delete it without preconditions") from None
        meta: JSON = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        stand_in: JSON = {"apiVersion": info.api_version, "kind": info.kind, "metadata": meta}
        if options.dry_run:
            return stand_in, True
        try:
            applied = await self.store.delete(info.key(name, namespace), expect_revision=None, stand_in=stand_in)
        except store_errors.NotFoundError:
            raise errors.not_found(info.plural, name, group=info.group) from None
        except store_errors.StoreError as err:
            raise _store_failure(err) from None
        log.warning("deleted %s, whose stored object could not be decoded", exc.key)
        if info.gk == CRD_GK:
            self.sync_crds()
        return records.decode(applied.value), True

    async def _delete_once(
        self,
        info: resources.ResourceInfo,
        item: records.Item,
        obj: JSON,
        *,
        namespace: str | None,
        options: DeleteOptions,
    ) -> tuple[JSON, bool]:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        policy = options.propagation_policy
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise errors.invalid(
                "DeleteOptions", "", [errors.Cause("propagationPolicy", f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"', "FieldValueNotSupported")]
            )
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        grace = self._grace_period(info, obj, options)
        if info.gk == "Namespace":
            # Namespaces always go through Terminating; the namespace controller empties them
            # and removes the `kubernetes` finalizer.
            finalizers_spec = (obj.get("spec") or {}).get("finalizers") or []
            if finalizers_spec or finalizers:
                if options.dry_run:
                    return obj, False
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = clock_mod.rfc3339(self._clock.now())
                    meta["deletionGracePeriodSeconds"] = 0
                obj.setdefault("status", {})["phase"] = "Terminating"
                meta["finalizers"] = finalizers or meta.get("finalizers") or []
                if not meta["finalizers"]:
                    meta.pop("finalizers")
                applied = await self.store.update(item.key, obj, expect_revision=item.revision)
                return records.decode(applied.value), False
        if finalizers or grace > 0:
            if options.dry_run:
                return obj, False
            if meta.get("deletionTimestamp"):
                # Already being deleted: a shorter grace period may still shorten it.
                current = meta.get("deletionGracePeriodSeconds")
                if grace > 0 and (current is None or grace >= current) and not (policy and finalizers != list(meta.get("finalizers") or [])):
                    return obj, False
            now = self._clock.now()
            meta["deletionTimestamp"] = clock_mod.rfc3339(now + datetime.timedelta(seconds=grace))
            meta["deletionGracePeriodSeconds"] = grace
            if finalizers:
                meta["finalizers"] = finalizers
            applied = await self.store.update(item.key, obj, expect_revision=item.revision)
            return records.decode(applied.value), False
        if options.dry_run:
            return obj, True
        applied = await self.store.delete(item.key, expect_revision=item.revision)
        self._release_service(info, obj)
        return records.decode(applied.value), True

    def _grace_period(self, info: resources.ResourceInfo, obj: JSON, options: DeleteOptions) -> int:
        """Only pods running on a node are deleted gracefully; the kubelet finishes the delete."""
        if info.gk != "Pod":
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            return 0
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return 0
        if options.grace_period_seconds is not None:
            grace = max(0, options.grace_period_seconds)
        else:
            grace = max(0, int(spec.get("terminationGracePeriodSeconds", 30)))
        # The field is an int64; a deletionTimestamp must still be a date (68 years is plenty).
        return min(grace, _MAX_GRACE_SECONDS)

    async def delete_collection(
        self,
        info: resources.ResourceInfo,
        *,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
        options: DeleteOptions = DeleteOptions(),
        warnings: Warnings | None = None,
    ) -> builtins.list[JSON]:
        listed = await self.list_rendered(info, namespace=namespace, label_selector=label_selector,
                                          field_selector=field_selector, render=_same)
        out: builtins.list[JSON] = []
        for obj in listed.items:
            meta = obj["metadata"]
            if admission.refuse_delete(info, meta["name"]) is not None:
                continue  # kept (upstream's deletecollection removes system PriorityClasses until its next restart)
            try:
                deleted, _ = await self.delete(info, namespace=meta.get("namespace"), name=meta["name"], options=options,
                                               warnings=warnings)
            except errors.APIError as exc:
                if exc.code == 404:
                    continue
                raise
            out.append(deleted)
        return out

    # --- subresources ------------------------------------------------------------------------

    async def create_subresource(self, info: resources.ResourceInfo, *, namespace: str, name: str, subresource: str,
                                 body: JSON, options: Options = Options()) -> JSON:
        """POST to a create-only subresource served by a hook (`subresource_creators`);
        `options.user` is who asks (for the authorizer: `create` on `<plural>/<subresource>`)."""
        creator = self.subresource_creators.get(f"{info.plural}/{subresource}")
        if creator is None:
            raise errors.not_found_path()
        return await creator(namespace, name, body)

    async def bind(self, *, namespace: str, name: str, binding: JSON, options: Options = Options()) -> None:
        """pods/binding: assign a pod to a node, once."""
        info = self._info("", "v1", "pods")
        target = binding.get("target") or {}
        node = target.get("name")
        if not node:
            raise errors.invalid("Binding", name, [errors.Cause("target.name", "Required value", "FieldValueRequired")])
        uid = ((binding.get("metadata") or {}).get("uid")) or None

        def assign(pod: JSON) -> JSON:
            if uid and pod["metadata"].get("uid") != uid:
                raise errors.conflict("pods", name, why=f"Precondition failed: UID in precondition: {uid}, UID in object meta: {pod['metadata'].get('uid')}")
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.conflict("pods", name, why="pod is being deleted, cannot be assigned to a host")
            spec = pod.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.conflict("pods", name, why=f"pod {name} is already assigned to node \"{spec['nodeName']}\"")
            spec["nodeName"] = node
            # One write, as upstream's binding storage: the node and the PodScheduled condition.
            status = pod.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": clock_mod.rfc3339(self._clock.now())})
            status["conditions"] = conds
            status.pop("nominatedNodeName", None)
            return pod

        await self._patch_raw(info, namespace=namespace, name=name, apply=assign, options=options)

    async def _patch_raw(
        self, info: resources.ResourceInfo, *, namespace: str, name: str, apply: Callable[[JSON], JSON], options: Options
    ) -> JSON:
        """Write a spec change that normal updates forbid (binding sets spec.nodeName once)."""
        for _ in range(_CONFLICT_RETRIES):
            item = self.store.get(info.key(name, namespace))
            if item is None:
                raise errors.not_found(info.plural, name, group=info.group)
            new = apply(self._object(item))
            _check_storable(info, new)
            if options.dry_run:
                return new
            try:
                applied = await self.store.update(item.key, new, expect_revision=item.revision)
            except store_errors.ConflictError:
                continue
            except store_errors.StoreError as exc:
                raise _store_failure(exc) from None
            return records.decode(applied.value)
        raise errors.conflict(info.plural, name, group=info.group)

    def scale_of(self, info: resources.ResourceInfo, obj: JSON) -> JSON:
        meta = obj["metadata"]
        # A custom object's spec or status may be any JSON its schema allows (an int, a string).
        spec = _as_dict(obj.get("spec"))
        status = _as_dict(obj.get("status"))
        selector = spec.get("selector")
        sel_text = ""
        if info.gk == "ReplicationController" and isinstance(selector, dict):
            selector = {"matchLabels": selector}  # a map of labels, not a LabelSelector
        if isinstance(selector, dict):
            sel_text = str(labels.from_label_selector(selector))
        replicas, current = spec.get("replicas", 0), status.get("replicas", 0)
        if info.custom is not None and info.custom.scale:
            # A CRD's scale subresource reads the paths it declares.
            paths = info.custom.scale
            replicas = next(iter(crds.jsonpath(obj, str(paths.get("specReplicasPath", "")))), 0)
            current = next(iter(crds.jsonpath(obj, str(paths.get("statusReplicasPath", "")))), 0)
            found = crds.jsonpath(obj, str(paths.get("labelSelectorPath", ""))) if paths.get("labelSelectorPath") else []
            sel_text = str(found[0]) if found else ""
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": replicas},
            "status": {"replicas": current, "selector": sel_text},
        }

    async def set_scale(
        self, info: resources.ResourceInfo, *, namespace: str | None, name: str, scale: JSON, options: Options = Options(),
        warnings: Warnings | None = None,
    ) -> JSON:
        """PUT or PATCH of `<plural>/scale`, admitted as upstream's ScaleREST is: the admission
        plugins see an UPDATE of the subresource `scale` whose object and old object are
        autoscaling/v1 Scales (webhooks and policies that name `deployments/scale`, not those
        that name `deployments`); a mutating webhook's change to the Scale is what is written."""
        item = self.store.get(info.key(name, namespace))
        if item is None:
            raise errors.not_found(info.plural, name, group=info.group)
        old_scale = self.scale_of(info, self._object(item))
        scale = copy.deepcopy(scale)
        scale_meta = scale.setdefault("metadata", {})
        if not isinstance(scale_meta, dict):
            raise errors.bad_request("metadata must be an object")
        for k in ("name", "namespace", "uid", "creationTimestamp"):
            if old_scale["metadata"].get(k) is not None:
                scale_meta.setdefault(k, old_scale["metadata"][k])
        report = (warnings or Warnings()).report()
        request = chain.Request(info=info, operation="UPDATE", name=name, namespace=namespace or "", subresource="scale",
                                user=options.user, dry_run=options.dry_run, old=old_scale,
                                object_kind=("autoscaling", "v1", "Scale"))
        await self.policy.mutate(request, scale, report)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(
                "Scale", name, [errors.Cause("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")], group="autoscaling"
            )
        expect = _expected_revision((scale.get("metadata") or {}).get("resourceVersion"))

        def set_replicas(obj: JSON) -> JSON:
            if expect is not None and str(expect) != obj["metadata"].get("resourceVersion"):
                raise errors.conflict(info.plural, name, group=info.group)
            path = ".spec.replicas"
            if info.custom is not None and info.custom.scale:
                path = str(info.custom.scale.get("specReplicasPath") or path)
            node = obj
            parts = [p for p in path.split(".") if p]
            for i, part in enumerate(parts[:-1]):
                node = node.setdefault(part, {})
                if not isinstance(node, dict):  # a custom object whose schema lets this be a scalar
                    raise errors.invalid(info.kind, name, [errors.Cause(
                        path.lstrip("."), f"Invalid value: {replicas}: .{'.'.join(parts[:i + 1])} is not an object")],
                        group=info.group)
            node[parts[-1]] = replicas
            return obj

        await self.policy.validate(request, scale, report)
        out = await self.patch(info, namespace=namespace, name=name, apply=set_replicas, subresource="scale",
                               options=options, warnings=warnings)
        return self.scale_of(info, out)

    # --- services ----------------------------------------------------------------------------

    def _allocate_service(self, obj: JSON, *, old: JSON | None) -> _Allocated:
        spec = obj.setdefault("spec", {})
        done = _Allocated()
        stype = spec.get("type", "ClusterIP")
        try:
            if stype != "ExternalName":
                ip = spec.get("clusterIP")
                old_ips = set(_cluster_ips((old or {}).get("spec") or {}))
                if not ip:
                    ip = self._ips.allocate()
                    done.ips.append(ip)
                    spec["clusterIP"] = ip
                    spec["clusterIPs"] = [ip]
                elif ip != "None" and ip not in old_ips:
                    if ip == self._kubernetes_ip and _is_kubernetes_service(obj):
                        self._ips.allocate_specific(ip)
                    else:
                        self._ips.allocate_specific(ip)
                    done.ips.append(ip)
                    spec.setdefault("clusterIPs", [ip])
                elif ip == "None":
                    spec["clusterIPs"] = ["None"]
            if stype in ("NodePort", "LoadBalancer"):
                old_ports = {p.get("nodePort") for p in ((old or {}).get("spec") or {}).get("ports") or []}
                for port in spec.get("ports") or []:
                    np = port.get("nodePort")
                    if not np:
                        np = self._ports.allocate()
                        done.ports.append(np)
                        port["nodePort"] = np
                    elif np not in old_ports:
                        self._ports.allocate_specific(int(np))
                        done.ports.append(int(np))
        except allocators.AllocationError as exc:
            done.release(self)
            field = "spec.clusterIPs" if exc.what == "ip" else "spec.ports[*].nodePort"
            raise errors.invalid("Service", (obj.get("metadata") or {}).get("name", ""), [errors.Cause(field, str(exc))]) from None
        return done

    def _release_service(self, info: resources.ResourceInfo, obj: JSON) -> None:
        if info.gk != "Service":
            return
        spec = obj.get("spec") or {}
        for ip in _cluster_ips(spec):
            if self._ips.contains(ip):
                self._ips.release(ip)
        for port in spec.get("ports") or []:
            np = port.get("nodePort")
            if isinstance(np, int) and self._ports.contains(np):
                self._ports.release(np)

    # --- namespaces at boot ------------------------------------------------------------------

    def _admit_priority(self, pod: JSON) -> None:
        """The Priority admission plugin: spec.priority (and preemptionPolicy) from the pod's
        PriorityClass, or from the cluster's globalDefault class."""
        spec = pod.setdefault("spec", {})
        info = self._info("scheduling.k8s.io", "v1", "priorityclasses")
        name = spec.get("priorityClassName")
        refused = f'pods "{pod["metadata"].get("name", "")}" is forbidden: '

        pc: JSON | None = None
        if name:
            item = self.store.get(info.key(name))
            if item is None:
                raise errors.forbidden(refused + f"no PriorityClass with name {name} was found")
            pc = self._object(item)
        else:
            classes = self.store.objects(self.store.scan(info.key_prefix()).items, reader="pod priority")
            defaults_ = [o for _, o in classes if o.get("globalDefault")]
            if defaults_:
                pc = min(defaults_, key=lambda o: int(o.get("value") or 0))
                spec["priorityClassName"] = pc["metadata"]["name"]
        value = int(pc.get("value") or 0) if pc else 0
        given = spec.get("priority")
        if given is not None and given != value and not (pc is None and given == 0):
            raise errors.forbidden(
                refused + f"the integer value of priority ({given}) must not be provided in pod spec; priority admission "
                f"controller computed {value} from the given PriorityClass name")
        spec["priority"] = value
        if pc is not None:
            spec["preemptionPolicy"] = pc.get("preemptionPolicy") or "PreemptLowerPriority"

    async def ensure_system_priority_classes(self) -> None:
        info = self._info("scheduling.k8s.io", "v1", "priorityclasses")
        for name, value in validation.SYSTEM_PRIORITY_CLASSES.items():
            if self._missing(info.key(name)):
                desc = ("Used for system critical pods that must not be moved from their current node."
                        if name == "system-node-critical" else "Used for system critical pods that must run in the cluster, "
                        "but can be moved to another node if necessary.")
                try:
                    await self.create(info, {"metadata": {"name": name}, "value": value, "description": desc},
                                      namespace=None)
                except errors.APIError as exc:
                    if exc.code != 409:
                        raise

    async def ensure_system_namespaces(self) -> None:
        info = self._info("", "v1", "namespaces")
        for ns in admission.SYSTEM_NAMESPACES:
            if self._missing(info.key(ns)):
                try:
                    await self.create(info, {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}, namespace=None)
                except errors.APIError as exc:
                    if exc.code != 409:
                        raise


@dataclasses.dataclass
class _Allocated:
    ips: list[str] = dataclasses.field(default_factory=list)
    ports: list[int] = dataclasses.field(default_factory=list)

    def release(self, registry: Registry) -> None:
        for ip in self.ips:
            registry._ips.release(ip)
        for port in self.ports:
            registry._ports.release(port)
        self.ips.clear()
        self.ports.clear()


def _cluster_ips(spec: Mapping[str, Any]) -> list[str]:
    ips = [ip for ip in (spec.get("clusterIPs") or []) if ip and ip != "None"]
    ip = spec.get("clusterIP")
    if ip and ip != "None" and ip not in ips:
        ips.append(ip)
    return ips


def _is_kubernetes_service(obj: JSON) -> bool:
    meta = obj.get("metadata") or {}
    return bool(meta.get("name") == "kubernetes" and meta.get("namespace") == "default")


def _keep_allocated_values(old: JSON, new: JSON) -> None:
    """An update that omits allocated values keeps them (as upstream's patchAllocatedValues)."""
    ospec = old.get("spec") or {}
    nspec = new.setdefault("spec", {})
    if not nspec.get("clusterIP") and ospec.get("clusterIP") and nspec.get("type", "ClusterIP") != "ExternalName":
        nspec["clusterIP"] = ospec["clusterIP"]
        nspec["clusterIPs"] = ospec.get("clusterIPs", [ospec["clusterIP"]])
    if nspec.get("type") in ("NodePort", "LoadBalancer"):
        by_port = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in ospec.get("ports") or []}
        for p in nspec.get("ports") or []:
            if not p.get("nodePort"):
                np = by_port.get((p.get("port"), p.get("protocol", "TCP")))
                if np:
                    p["nodePort"] = np


def _admission_request(info: resources.ResourceInfo, obj: JSON, operation: str, *, options: Options,
                       subresource: str | None = None, old: JSON | None = None) -> chain.Request:
    meta = obj.get("metadata") or {}
    return chain.Request(info=info, operation=operation, name=str(meta.get("name") or ""),
                         namespace=str(meta.get("namespace") or "") if info.namespaced else "",
                         subresource=subresource, user=options.user, dry_run=options.dry_run, old=old)


def _decode_prefix(info: resources.ResourceInfo) -> str:
    """Upstream's words for a body that does not decode as the kind."""
    return f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '


def _managed_fields_given(sent: Any) -> bool:
    """Whether a write carries managedFields of its own (a non-empty list of entries); an
    empty or missing list keeps the stored ones (clients that do not know the field)."""
    return isinstance(sent, list) and bool(sent) and all(isinstance(e, dict) for e in sent)


def _keep_admitted_priority(old: JSON, new: JSON) -> None:
    """An update that omits what Priority admission set at create keeps it (upstream's plugin
    carries spec.priority and preemptionPolicy over on update), so that a pod written back as it
    was sent (`kubectl replace -f`) is no change."""
    ospec = old.get("spec") or {}
    nspec = new.get("spec")
    if not isinstance(nspec, dict):
        return
    for key in ("priority", "preemptionPolicy"):
        if nspec.get(key) is None and ospec.get(key) is not None:
            nspec[key] = ospec[key]


def _release_dropped_ports(registry: Registry, old: JSON, new: JSON) -> None:
    old_spec = old.get("spec") or {}
    new_spec = new.get("spec") or {}
    kept = {p.get("nodePort") for p in new_spec.get("ports") or []} if new_spec.get("type") in ("NodePort", "LoadBalancer") else set()
    for p in old_spec.get("ports") or []:
        np = p.get("nodePort")
        if isinstance(np, int) and np not in kept and registry._ports.contains(np):
            registry._ports.release(np)


def _spec_of(obj: JSON) -> Any:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _graceful_pod(info: resources.ResourceInfo, old: JSON) -> bool:
    """A pod being deleted with a grace period (upstream's shouldDeleteDuringUpdate keeps it)."""
    return info.gk == "Pod" and int((old.get("metadata") or {}).get("deletionGracePeriodSeconds") or 0) > 0


def _unchanged(old: JSON, new: JSON) -> bool:
    a = dict(old)
    b = dict(new)
    a["metadata"] = {k: v for k, v in old["metadata"].items() if k != "resourceVersion"}
    b["metadata"] = {k: v for k, v in new["metadata"].items() if k != "resourceVersion"}
    return a == b


def _qos_class(spec: Mapping[str, Any]) -> str:
    """Upstream's GetPodQOS: only non-zero cpu and memory count, compared as quantities."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True

    def amounts(values: Any) -> dict[str, Any]:
        out = {}
        for r in ("cpu", "memory"):
            if isinstance(values, Mapping) and r in values:
                try:
                    q = quantity.parse(values[r])
                except quantity.QuantityError:
                    continue
                if q:
                    out[r] = q
        return out

    for c in containers:
        res = c.get("resources") or {}
        req, lim = amounts(res.get("requests")), amounts(res.get("limits"))
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and req[r] != lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _expected_revision(rv: Any) -> int | None:
    """The revision a write's resourceVersion asks for; None when unset. As upstream's
    versioner, "0" parses to revision 0, which means unset: an unconditional update, or a create."""
    if rv is None or rv == "":
        return None
    try:
        value = int(str(rv))
    except ValueError:
        raise errors.bad_request(f'invalid resourceVersion "{rv}"') from None
    return value or None


def _encode_continue(key: str, revision: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"v": 1, "rv": revision, "start": key})).decode().rstrip("=")


def _decode_continue(token: str, *, prefix: str) -> tuple[str, int]:
    """(key to start after, revision of the list's snapshot)."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        start = data["start"]
        revision = data["rv"]
        if not isinstance(start, str) or not start.startswith(prefix):
            raise ValueError("continue token is for another list")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise ValueError("continue token carries no revision")
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request("continue key is not valid: the continue token was not issued for this list") from None
    return start, revision


def _same(obj: JSON) -> JSON:
    return obj


def _acceptor(lsel: labels.Selector | None, fsel: fields.FieldSelector | None) -> Callable[[Mapping[str, Any]], bool]:
    def accept(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if lsel is not None and not lsel.matches(meta.get("labels") or {}):
            return False
        return fsel is None or fsel.matches(obj)

    return accept


def _continue_expired() -> errors.APIError:
    return errors.gone(
        "The provided continue parameter is too old to display a consistent list result. "
        "You can start a new list without the continue parameter."
    )


def damaged(exc: store_errors.CorruptRecordError) -> errors.APIError:
    return errors.internal(f"{exc}. Run `edgekube store check`; deleting the object removes it")


def _render_item(info: resources.ResourceInfo, item: records.Item, render: Callable[[JSON], T], *, pieces: bool) -> T:
    obj = records.decode_in_pieces(item.value, key=item.key, revision=item.revision) if pieces else item.object()
    return render(present(info, obj))


def _encoded_size(obj: Any) -> int:
    """What an in-process caller's object will cost to write, by its encoded size (msgpack, in C:
    microseconds for an object of a few KB); anything that does not encode counts as large, for
    the checks to refuse it off the loop."""
    try:
        return len(records.encode(obj))
    except Exception:
        return 1 << 62


def _patch_with(apply: Callable[[JSON], JSON], info: resources.ResourceInfo, handed: builtins.list[JSON]) -> JSON:
    return apply(present(info, handed.pop()))


def _as_dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _check_input(info: resources.ResourceInfo, obj: Any) -> None:
    """An object handed to a write, before anything walks it: JSON, and not too deep."""
    jsontree.check(obj, where=f"{info.kind} in version \"{info.version}\" cannot be handled as a {info.kind}")


def _check_storable(info: resources.ResourceInfo, obj: JSON) -> None:
    """The gate in front of the store, on every object any write is about to commit: what
    fails here could not be decoded by its readers (jsontree)."""
    jsontree.check(obj, where=f"{info.kind} in version \"{info.version}\" cannot be handled as a {info.kind}", ints=True)
    jsontree.check_size(obj, plural=errors.qualified(info.plural, info.group),
                        name=str((obj.get("metadata") or {}).get("name", "")))


def _store_failure(exc: store_errors.StoreError) -> errors.APIError:
    if isinstance(exc, store_errors.StoreFullError):
        return errors.storage_full(str(exc))
    if isinstance(exc, store_errors.ClosedError):
        return errors.APIError(503, "ServiceUnavailable", "the server is shutting down; retry shortly")
    if isinstance(exc, store_errors.CorruptRecordError):
        return damaged(exc)
    return errors.internal(str(exc))


def _manager(options: Options) -> str:
    return options.field_manager or "unknown"


def _apply_conflict(exc: ssa.ConflictError) -> errors.APIError:
    causes = [
        errors.Cause(c.field(), f'conflict with "{c.manager}" using {c.api_version}', "FieldManagerConflict")
        for c in exc.conflicts
    ]
    return errors.APIError(409, "Conflict", str(exc), details={"causes": [c.to_dict() for c in causes]})


def selector_cost(label_selector: str, field_selector: str) -> int:
    """What parsing and compiling these selectors costs, in the offload's units (bytes of an
    object a write walks): a character of a selector costs about as much as 16 such bytes (a
    1,500-term label selector: some 8 ms of CPU), so a long one is parsed on the worker."""
    return 16 * (len(label_selector) + len(field_selector))


def present(info: resources.ResourceInfo, obj: JSON) -> JSON:
    """An object as served through `info`: custom objects take the requested version's
    apiVersion (all versions of a CRD share storage; conversion is `None`); built-in views
    (autoscaling/v1 HPAs) are converted from their stored version."""
    if info.custom is not None and obj.get("apiVersion") != info.api_version:
        obj["apiVersion"] = info.api_version
        return obj
    return conversions.from_storage(info.gk, info.version, defaults.with_status(info.gk, obj))


@dataclasses.dataclass(frozen=True)
class _StoredCRD:
    """What the registry needs of a stored CRD: its names, and the resources it serves (none
    unless Established)."""

    revision: int
    name: str
    group: str
    kind: str
    served: tuple[resources.ResourceInfo, ...]

    @classmethod
    def of_copy(cls, crd: JSON, *, revision: int) -> _StoredCRD:
        """`of` a copy of `crd` (whose owner may change it later; what is served keeps parts)."""
        return cls.of(copy.deepcopy(crd), revision=revision)

    @classmethod
    def of(cls, crd: JSON, *, revision: int) -> _StoredCRD:
        spec = crd.get("spec") or {}
        conditions = {c.get("type"): c.get("status") for c in (crd.get("status") or {}).get("conditions") or []}
        served = tuple(resources.custom_info(cr) for cr in crds.served(crd)) \
            if conditions.get("Established") == "True" else ()
        return cls(revision=revision, name=str((crd.get("metadata") or {}).get("name", "")),
                   group=str(spec.get("group", "")), kind=str((spec.get("names") or {}).get("kind", "")),
                   served=served)
