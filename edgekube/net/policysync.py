"""Keeps the policy chains of edgekube's nftables table equal to the cluster's NetworkPolicies.

Informers on Pods, Namespaces and NetworkPolicies (shared with the rest of the network part)
only mark the agent dirty and wake it; one task recomputes the plan from the caches
(`policy.compile_plan`), renders it, and applies it in one `nft -f` transaction when the text
differs from what the kernel was last given. A burst of pod changes (a Deployment scaling to 50)
is one or two transactions, not fifty: changes that arrive while a transaction runs are folded
into the next. A failed transaction is retried with a growing delay (and logged), and leaves the
previous rules in force: nft applies a batch whole or not at all.

The whole plan is recomputed on each change: O(pods x policies) in Python, a few milliseconds for
the hundred pods of a device, and far simpler than incremental bookkeeping. Only the pods of
this node are isolated here (a pod's chains live where its veth is); every pod of the cluster
is a peer.

At boot the agent reads which policy chains the table already holds, so that chains of pods
deleted while edgekube was down are removed, and the rules stay in force meanwhile: nothing
is flushed before the new transaction replaces it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from edgekube.client import informer
from edgekube.net import policy

log = logging.getLogger(__name__)
JSON = dict[str, Any]
TABLE = "edgekube"  # the one nftables table (inet family) edgekube owns
NFT_TIMEOUT_SECONDS = 10.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class NftError(RuntimeError):
    """`nft` refused a batch or could not run; the message is nft's own."""


async def nft(*args: str, script: str | None = None) -> str:
    """Run nft (in this process's network namespace) and return its output; a run that takes
    longer than NFT_TIMEOUT_SECONDS is killed (a wedged nft must not wedge the agent)."""
    timeout = NFT_TIMEOUT_SECONDS
    try:
        proc = await asyncio.create_subprocess_exec(
            "nft", *args, stdin=asyncio.subprocess.PIPE if script is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise NftError(f"cannot run nft: {exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(script.encode() if script is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NftError(f"nft {' '.join(args)} did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(args)} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


class PolicyAgent:
    def __init__(self, informers: informer.InformerFactory, *, node_name: str, table: str,
                 family: str = "inet") -> None:
        self.node_name = node_name
        self.table = table
        self.family = family
        self._pods = informers.get("v1", "Pod")
        self._namespaces = informers.get("v1", "Namespace")
        self._policies = informers.get("networking.k8s.io/v1", "NetworkPolicy")
        self._wake = asyncio.Event()
        self._applied: str | None = None
        self._chains: set[str] = set()
        handlers = informer.Handlers(on_add=lambda _: self._wake.set(), on_update=lambda _a, _b: self._wake.set(),
                                     on_delete=lambda _: self._wake.set())
        for inf in (self._pods, self._namespaces, self._policies):
            inf.add_handlers(handlers)
        self.syncs = 0  # transactions applied (tests and metrics)

    async def _existing_chains(self) -> set[str]:
        try:
            out = await nft("-j", "list", "table", self.family, self.table)
        except NftError:
            return set()  # no table yet: the first transaction makes it
        items = json.loads(out).get("nftables") or []
        return {str(i["chain"]["name"]) for i in items
                if "chain" in i and str(i["chain"].get("name", "")).startswith(policy.CHAIN_PREFIX)}

    def plan(self) -> policy.Plan:
        pods = [info for info in (policy.pod_info(p) for p in self._pods.list()) if info is not None]
        local = [info for p, info in ((p, policy.pod_info(p)) for p in self._pods.list())
                 if info is not None and (p.get("spec") or {}).get("nodeName") == self.node_name]
        namespaces = {str((n.get("metadata") or {}).get("name")): dict((n.get("metadata") or {}).get("labels") or {})
                      for n in self._namespaces.list()}
        return policy.compile_plan(pods=pods, local=local, namespaces=namespaces, policies=self._policies.list())

    async def sync(self) -> bool:
        """Apply the current plan if it differs from the last one applied; True when it did."""
        plan = self.plan()
        wanted = set(policy.chains(plan))
        script = (f"add table {self.family} {self.table}\n"
                  + policy.render(plan, table=self.table, family=self.family, existing=self._chains))
        if script == self._applied:
            return False
        await nft("-f", "-", script=script)
        self._applied = script
        self._chains = wanted
        self.syncs += 1
        return True

    async def run(self) -> None:
        """Wait for the caches, then keep the kernel in step; never returns."""
        for inf in (self._pods, self._namespaces, self._policies):
            await inf.synced.wait()
        self._chains = await self._existing_chains()
        failures = 0
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except NftError as exc:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.error("network policies: could not update the nftables rules (retrying in %.1fs): %s",
                          delay, exc)
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                failures = 0
