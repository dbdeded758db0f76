"""APIService registration: one local APIService per group-version this server serves.

Upstream's kube-apiserver runs two controllers for this: autoregister (an APIService
`<version>.<group>` for every built-in group-version, with the group and version priorities of
its fixed table, labelled `kube-aggregator.kubernetes.io/automanaged: onstart`) and
crdRegistration (one for every served version of every CRD, priorities 1000 and 100, labelled
`automanaged: true`, removed when no CRD serves it any more). Both are this one controller:

- the desired set is computed from the served catalog (built-in kinds) and the CRD cache;
- a key is an APIService name; reconcile creates a missing entry, puts back a changed spec, and
  deletes an automanaged entry nothing serves any more (with a uid precondition, so a new one
  made meanwhile survives);
- entries without the automanaged label are the user's: never touched, even when their name is
  one we would use (upstream's rule too).

Unlike upstream's `onstart` entries, built-in ones are kept continuously (a deleted `v1.apps`
comes back at once rather than at the next restart): the APIService list then always says what
is served. The registry derives every entry's status from its spec (api/registry/apiservices.py:
Available=True, reason Local, for a local one); a status written through the status subresource
is put back here, as upstream's availability controllers overwrite what they did not observe.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.api import errors
from edgekube.api.registry import apiservices as apiservice_status
from edgekube.api.registry import rest
from edgekube.client.informer import Handlers, Informer
from edgekube.client.local import LocalClient
from edgekube.controllers.base import Controller

JSON = dict[str, Any]
API_VERSION = "apiregistration.k8s.io/v1"
MANAGED_LABEL = "kube-aggregator.kubernetes.io/automanaged"
# Upstream kube-apiserver's table (group priority, version priority) for the built-in
# group-versions edgekube may serve; a group-version missing here gets no APIService (upstream's
# rule: an unknown one could be a CRD's and must not be pinned as built-in).
PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apiregistration.k8s.io", "v1"): (18000, 15),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v1"): (17500, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
    ("flowcontrol.apiserver.k8s.io", "v1"): (16100, 21),
}
# crdRegistration's priorities: CRDs sort after the built-in groups, versions kube-like.
CRD_PRIORITY = (1000, 100)


def apiservice_name(group: str, version: str) -> str:
    return f"{version}.{group}"


def desired(group: str, version: str, *, priority: tuple[int, int], managed: str) -> JSON:
    return {
        "apiVersion": API_VERSION,
        "kind": "APIService",
        "metadata": {"name": apiservice_name(group, version), "labels": {MANAGED_LABEL: managed}},
        # The core group is "" and, as upstream's omitempty encoding, left out.
        "spec": {**({"group": group} if group else {}), "version": version, "groupPriorityMinimum": priority[0],
                 "versionPriority": priority[1]},
    }


def _crd_versions(crd: JSON) -> Iterable[tuple[str, str]]:
    spec = crd.get("spec") or {}
    for v in spec.get("versions") or []:
        if isinstance(v, dict) and v.get("served") and v.get("name"):
            yield str(spec.get("group", "")), str(v["name"])


class APIServiceRegistrationController(Controller):
    name = "apiservice-registration-controller"

    def __init__(self, client: LocalClient, apiservices: Informer, crds: Informer, *, clock: clock_mod.Clock) -> None:
        super().__init__()
        self._client = client
        self._clock = clock
        self._apiservices = apiservices
        self._crds = crds
        apiservices.add_handlers(Handlers(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
                                          on_delete=self._enqueue))
        crds.add_handlers(Handlers(on_add=self._crd_changed, on_update=self._crd_updated, on_delete=self._crd_changed))
        for group, version in self._builtin():
            self.queue.add(apiservice_name(group, version))

    def _enqueue(self, obj: JSON) -> None:
        self.queue.add(obj["metadata"]["name"])

    def _crd_changed(self, crd: JSON) -> None:
        spec = crd.get("spec") or {}
        for v in spec.get("versions") or []:
            if isinstance(v, dict) and v.get("name"):
                self.queue.add(apiservice_name(str(spec.get("group", "")), str(v["name"])))

    def _crd_updated(self, old: JSON, new: JSON) -> None:
        self._crd_changed(old)
        self._crd_changed(new)

    def _builtin(self) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        for info in self._client.catalog.all():
            gv = (info.group, info.version)
            if info.custom is None and gv in PRIORITIES and gv not in seen:
                seen.append(gv)
        return seen

    def want(self, name: str) -> JSON | None:
        """The APIService `name` should be, or None when nothing served needs it."""
        for group, version in self._builtin():
            if apiservice_name(group, version) == name:
                return desired(group, version, priority=PRIORITIES[(group, version)], managed="onstart")
        for crd in self._crds.list():
            for group, version in _crd_versions(crd):
                if apiservice_name(group, version) == name:
                    return desired(group, version, priority=CRD_PRIORITY, managed="true")
        return None

    async def reconcile(self, key: Hashable) -> None:
        name = str(key)
        want = self.want(name)
        have = self._apiservices.get(name)
        if have is None:
            if want is not None:
                try:
                    await self._client.create(want)
                except errors.APIError as exc:
                    if exc.code != 409:  # made meanwhile: its add event brings us back
                        raise
            return
        await self._keep_status(have)
        if MANAGED_LABEL not in ((have.get("metadata") or {}).get("labels") or {}):
            return  # the user's own entry
        if want is None:
            try:
                await self._client.delete(API_VERSION, "APIService", name=name, namespace=None,
                                          options=rest.DeleteOptions(precondition_uid=have["metadata"].get("uid")))
            except errors.APIError as exc:
                if exc.code not in (404, 409):
                    raise
            return
        if have.get("spec") != want["spec"]:
            def reset(obj: JSON) -> JSON:
                obj["spec"] = dict(want["spec"])
                return obj

            try:
                await self._client.patch(API_VERSION, "APIService", name=name, namespace=None, mutate=reset)
            except errors.APIError as exc:
                if exc.code != 404:
                    raise

    async def _keep_status(self, have: JSON) -> None:
        now = clock_mod.rfc3339(self._clock.now())
        if apiservice_status.status(have, old=have, now=now) == (have.get("status") or {}):
            return

        def derive(obj: JSON) -> JSON:
            obj["status"] = apiservice_status.status(obj, old=obj, now=clock_mod.rfc3339(self._clock.now()))
            return obj

        try:
            await self._client.patch(API_VERSION, "APIService", name=have["metadata"]["name"], namespace=None,
                                     mutate=derive, subresource="status")
        except errors.APIError as exc:
            if exc.code != 404:
                raise
