"""ClusterRole aggregation, as upstream's clusterrole-aggregation controller.

A ClusterRole with an `aggregationRule` owns no rules of its own: its rules are those of every
other ClusterRole whose labels match one of its `clusterRoleSelectors`, taken in the order of
their names, each rule once. Whenever a ClusterRole changes (the RBAC index tells), every
aggregated role is computed again from the index and written back when it differs, as the
registry's own work (a user who may not write `admin` still grows it by labelling a role, which
is the point; the escalation check guards the aggregationRule itself).

It lives in the api layer, next to the index it reads, because the registry is the only writer
below client/; it is one task, woken by an event, so a burst of changes is one pass.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edgekube.api import errors, labels
from edgekube.api.auth import rbac
from edgekube.api.registry import rest

JSON = dict[str, Any]
log = logging.getLogger(__name__)
MANAGER = "clusterrole-aggregation-controller"
_MAX_PASSES = 4


def aggregated_rules(role: JSON, roles: dict[str, JSON]) -> list[JSON] | None:
    """The rules `role` aggregates from `roles` (name -> object); None if it aggregates nothing."""
    rule = role.get("aggregationRule")
    if not isinstance(rule, dict):
        return None
    selectors = []
    for raw in rule.get("clusterRoleSelectors") or []:
        try:
            selectors.append(labels.from_label_selector(raw))
        except labels.SelectorError:
            continue
    name = (role.get("metadata") or {}).get("name")
    out: list[JSON] = []
    for other in sorted(roles):
        if other == name:
            continue
        found = (roles[other].get("metadata") or {}).get("labels") or {}
        if not any(s.matches(found) for s in selectors):
            continue
        for r in roles[other].get("rules") or []:
            if r not in out:
                out.append(r)
    return out


class Aggregator:
    def __init__(self, registry: rest.Registry, *, policy: rbac.RBAC) -> None:
        self._registry = registry
        self._policy = policy
        self._wake = asyncio.Event()
        self._wake.set()  # one pass at start
        policy.on_change.append(self._changed)

    def _changed(self, plural: str) -> None:
        if plural in ("clusterroles", "*"):
            self._wake.set()

    async def sync(self) -> None:
        """Write every aggregated role whose rules are not what it aggregates. Aggregated roles
        may aggregate each other (admin takes edit, which takes view): passes repeat over the
        roles as just written until nothing changes (bounded: a cycle of selectors settles too)."""
        info = self._registry.catalog.lookup(rbac.GROUP, "v1", "clusterroles")
        assert info is not None
        roles = dict(self._policy.index.cluster_role_objects)
        for _ in range(_MAX_PASSES):
            changed = False
            for name, role in sorted(roles.items()):
                wanted = aggregated_rules(role, roles)
                if wanted is None or (role.get("rules") or []) == wanted:
                    continue

                def put(obj: JSON, rules: list[JSON] = wanted) -> JSON:
                    obj["rules"] = rules
                    return obj

                try:
                    roles[name] = await self._registry.patch(info, namespace=None, name=name, apply=put,
                                                             options=rest.Options(field_manager=MANAGER))
                    changed = True
                except errors.APIError as exc:
                    if exc.code != 404:  # deleted meanwhile: nothing to aggregate into
                        log.warning("aggregating the rules of ClusterRole %s: %s", name, exc.message)
            if not changed:
                return

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.sync()
