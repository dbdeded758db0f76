"""The authorization policy of a server, wired in one place: the chain (`system:masters`, then
RBAC), the gate that enforces it, the escalation checks of RBAC writes, and the aggregation of
ClusterRoles.

runtime.py builds a `Policy` before the registry (which takes its gate), reconciles the
bootstrap roles, then `start`s it: the index is loaded from the store and the returned tasks
keep it (and the aggregated roles) current. Every change to the index clears the gate's memo.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from edgekube.api.auth import aggregation, authz, bootstrap, escalation, rbac
from edgekube.api.registry import resources, rest
from edgekube.store import store as store_mod


class Policy:
    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog) -> None:
        prefixes = {}
        for plural in rbac.KINDS:
            info = catalog.lookup(rbac.GROUP, "v1", plural)
            assert info is not None, plural
            prefixes[plural] = info.key_prefix()
        self.rbac = rbac.RBAC(store, prefixes=prefixes)
        self.gate = authz.Gate(authz.Chain([authz.Privileged(), self.rbac]))
        self.gate.write_checks.append(escalation.Escalation(self.gate, self.rbac, index=self.rbac))
        self.rbac.on_change.append(lambda plural: self.gate.policy_changed())
        self._aggregator: aggregation.Aggregator | None = None

    async def start(self, registry: rest.Registry) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """Reconcile the bootstrap policy, load the index, aggregate once; the tasks to run."""
        await bootstrap.reconcile(registry)
        self.rbac.load()
        self._aggregator = aggregation.Aggregator(registry, policy=self.rbac)
        await self._aggregator.sync()
        return [("rbac/index", self.rbac.run()), ("rbac/aggregation", self._aggregator.run())]
