"""Keeps the NetworkPolicy part of edgekube's nftables table equal to the cluster's policies.

Informers on Pods, Namespaces and NetworkPolicies (the network's shared factory) only wake the
agent; one task recomputes the plan from the caches (`policy.compile_plan`), turns it into pieces
(`policy.pieces`: the skeleton, and one piece per isolated pod of this node) and hands them to
its own `nft.Fragment` of the table the service proxy writes too. The fragment sends only what
changed, in one atomic batch, and owns only the `policy-` names (`policy.owns`), so the proxy's
full syncs never touch it and its never touch theirs.

A burst of changes (a Deployment scaling to 50) is one or two batches: changes that arrive
while a batch runs are folded into the next. A failed batch leaves the previous rules in force
(nft applies a batch whole or not at all); the fragment then does a full sync, retried with a
growing delay. Chains of pods that lost their isolation are flushed at once and deleted by a
later batch (`nft.STALE_DELAY`), as the proxy's are.

The whole plan is recomputed on each change: O(pods x policies) in Python, a few milliseconds
for the hundred pods of a device, where incremental bookkeeping would be far more code. Only the
pods of this node are isolated here (a pod's chains live where its veth is); every pod of the
cluster is a peer.

At boot the first sync is a full one: it lists the table, so the chains of pods deleted while
edgekube was down are removed, and the rules stay in force meanwhile (nothing is flushed before
the batch that replaces it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edgekube.client import informer
from edgekube.net import nft, policy

log = logging.getLogger(__name__)
JSON = dict[str, Any]
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class PolicyAgent:
    name = "network/policies"

    def __init__(self, informers: informer.InformerFactory, *, table: nft.Table, node_name: str) -> None:
        self.node_name = node_name
        self.fragment = nft.Fragment(table, owns=policy.owns, name="network policy")
        self._pods = informers.get("v1", "Pod")
        self._namespaces = informers.get("v1", "Namespace")
        self._policies = informers.get("networking.k8s.io/v1", "NetworkPolicy")
        self._wake = asyncio.Event()
        handlers = informer.Handlers(on_add=lambda _: self._wake.set(), on_update=lambda _a, _b: self._wake.set(),
                                     on_delete=lambda _: self._wake.set())
        for inf in (self._pods, self._namespaces, self._policies):
            inf.add_handlers(handlers)
        self.syncs = 0  # batches applied (tests and metrics)

    def plan(self) -> policy.Plan:
        pods, local = [], []
        for p in self._pods.list():
            info = policy.pod_info(p)
            if info is None:
                continue
            pods.append(info)
            if (p.get("spec") or {}).get("nodeName") == self.node_name:
                local.append(info)
        namespaces = {str((n.get("metadata") or {}).get("name")): dict((n.get("metadata") or {}).get("labels") or {})
                      for n in self._namespaces.list()}
        return policy.compile_plan(pods=pods, local=local, namespaces=namespaces, policies=self._policies.list())

    async def sync(self) -> bool:
        """Bring the fragment to the current plan; True when a batch was applied."""
        wanted = policy.pieces(self.plan())
        for key in self.fragment.keys():
            if key not in wanted:
                self.fragment.put(key, None)
        for key, piece in wanted.items():
            self.fragment.put(key, piece)
        if not (self.fragment.pending or self.fragment.stale_due() == 0.0):
            return False
        await self.fragment.sync()
        self.syncs += 1
        return True

    async def run(self) -> None:
        """Wait for the caches, then keep the kernel in step; never returns."""
        for inf in (self._pods, self._namespaces, self._policies):
            await inf.synced.wait()
        failures = 0
        self._wake.set()
        while True:
            due = self.fragment.stale_due()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=None if due is None else due + 0.01)
            except TimeoutError:
                pass  # a flushed chain may be deleted now
            self._wake.clear()
            try:
                await self.sync()
            except (nft.NftError, OSError, ValueError) as exc:  # ValueError: a listing nft garbled
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.error("network policies: could not update the nftables rules (retrying in %.1fs): %s",
                          delay, exc)
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                failures = 0
