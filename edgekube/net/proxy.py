"""The service proxy (kube-proxy's job): Services, EndpointSlices and host ports in nftables.

It follows the controller model (DESIGN §4). Informer handlers only enqueue keys: `svc:<ns>/<name>`
for a Service and for each EndpointSlice labelled with its name, `pod:<ns>/<name>` for a pod of
this node that has (or had) host ports. One worker takes every key waiting at once, recomputes
those objects' pieces of the table (net/proxyrules.py, pure) and hands them to the proxy's
`nft.Fragment`, which writes only what changed, in one atomic batch: a change to one Service
rewrites that Service's chains and map elements and nothing else. Changes that arrive while a
batch is in the kernel are coalesced into the next one.

Boot (`boot()`), before the network gate opens: wait until the caches hold every Service,
EndpointSlice and Pod (an empty cache would write an empty table and break every Service for
the moment until it filled), then one full sync: the whole table in one batch, which replaces
what the previous edgekube left without a moment of missing rules, while established
connections keep their NAT in conntrack. Nothing is removed at shutdown: the rules stay in the
kernel while edgekube restarts or is upgraded, and pods keep reaching Services meanwhile.

After a batch that changed a UDP Service, conntrack entries of its flows that still lead to an
endpoint it no longer has are deleted (net/conntrack.py), so UDP clients follow the change.

Failures: a refused batch is logged and the next sync is a full one, retried with backoff; a
full sync also runs every `resync_seconds` to repair anything else that edited the table.
`check_kernel()` tells at boot, in words, when this machine cannot do any of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from edgekube.client import informer
from edgekube.client.workqueue import WorkQueue
from edgekube.net import conntrack, nft, proxyrules, services

log = logging.getLogger(__name__)
JSON = dict[str, Any]

FULL = "full"  # queue key: a full sync
CLEANUP = "cleanup"  # queue key: delete chains flushed a while ago
ROUTE_LOCALNET = Path("/proc/sys/net/ipv4/conf/all/route_localnet")


async def check_kernel(nft_: nft.Nft) -> None:
    """Raise nft.Unavailable, saying what is missing, when nft or the kernel cannot run the table."""
    await nft.probe(nft_, proxyrules.PROBE)


class Proxy:
    name = "service-proxy"

    def __init__(self, informers: informer.InformerFactory, *, table: nft.Table, node_name: str,
                 settings: proxyrules.Settings, resync_seconds: float = 3600.0) -> None:
        self.node_name = node_name
        self.settings = settings
        self.resync_seconds = resync_seconds
        self.fragment = nft.Fragment(table, owns=proxyrules.owns, name="service proxy")
        self.queue = WorkQueue(base_delay=0.5, max_delay=30.0)
        self._services = informers.get("v1", "Service")
        self._slices = informers.get("discovery.k8s.io/v1", "EndpointSlice")
        self._pods = informers.get("v1", "Pod")
        self._slice_owner: dict[str, str] = {}  # slice key -> service key
        self._udp_frontends: dict[str, proxyrules.Frontends] = {}  # by key
        # UDP frontends changed since the last conntrack cleanup (all of them at boot: endpoints
        # may have left while edgekube was down), with the endpoints they may reach now.
        self._udp_changed: dict[tuple[str, int], frozenset[tuple[str, int]]] = {}
        self._service_slices: dict[str, set[str]] = {}
        self._services.add_handlers(informer.Handlers(
            on_add=self._service_changed, on_update=lambda old, new: self._service_changed(new),
            on_delete=self._service_changed))
        self._slices.add_handlers(informer.Handlers(
            on_add=self._slice_changed, on_update=lambda old, new: self._slice_changed(new),
            on_delete=lambda obj: self._slice_changed(obj, deleted=True)))
        self._pods.add_handlers(informer.Handlers(
            on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed))

    # --- handlers: keys only ------------------------------------------------------------------

    def _service_changed(self, svc: JSON) -> None:
        self.queue.add("svc:" + informer.object_key(svc))

    def _slice_changed(self, slice_: JSON, *, deleted: bool = False) -> None:
        key = informer.object_key(slice_)
        before = self._slice_owner.pop(key, None)
        if before is not None:
            self._service_slices.get(before, set()).discard(key)
            self.queue.add("svc:" + before)
        owner = None if deleted else services.slice_service(slice_)
        if owner is not None:
            self._slice_owner[key] = owner
            self._service_slices.setdefault(owner, set()).add(key)
            self.queue.add("svc:" + owner)

    def _pod_changed(self, pod: JSON) -> None:
        if proxyrules.pod_host_ports(pod):
            self.queue.add("pod:" + informer.object_key(pod))

    def _pod_updated(self, old: JSON, new: JSON) -> None:
        if proxyrules.pod_host_ports(old) or proxyrules.pod_host_ports(new):
            self.queue.add("pod:" + informer.object_key(new))

    # --- pieces -------------------------------------------------------------------------------

    def _rules(self, key: str) -> tuple[nft.Piece | None, proxyrules.Frontends]:
        """The piece of the table of object `key`, and (a Service's) UDP frontends."""
        kind, _, name = key.partition(":")
        if kind == "svc":
            svc = self._services.get(name)
            if svc is None:
                return None, {}
            slices = [s for k in self._service_slices.get(name, ()) if (s := self._slices.get(k)) is not None]
            return proxyrules.service_rules(svc, slices, node=self.node_name, settings=self.settings)
        pod = self._pods.get(name)
        return (proxyrules.hostport_piece(pod, node=self.node_name) if pod is not None else None), {}

    def _put(self, key: str) -> None:
        try:
            piece, udp = self._rules(key)
            self.fragment.put(key, piece)
        except Exception:  # a malformed object must not stop the others: keep its last rules
            log.exception("service proxy: cannot compute the rules of %s; keeping its previous ones", key)
            return
        before = self._udp_frontends.pop(key, {})
        if udp:
            self._udp_frontends[key] = udp
        for frontend in before.keys() | udp.keys():
            if before.get(frontend) != udp.get(frontend):
                self._udp_changed[frontend] = udp.get(frontend, frozenset())

    # --- running --------------------------------------------------------------------------------

    async def boot(self) -> None:
        """Once the caches are full: the whole table in one batch (raises nft.NftError)."""
        await asyncio.gather(self._services.synced.wait(), self._slices.synced.wait(), self._pods.synced.wait())
        await asyncio.to_thread(_allow_localhost_node_ports)
        started = time.monotonic()
        self.fragment.put("", proxyrules.static_piece(self.settings))
        count = 0
        for svc in self._services.list():
            self._put("svc:" + informer.object_key(svc))
            count += 1
        for pod in self._pods.list():
            if proxyrules.pod_host_ports(pod):
                self._put("pod:" + informer.object_key(pod))
        computed = time.monotonic() - started
        stats = await self.fragment.sync(full=True)
        log.info("service proxy: wrote table %s %s (%d Services, %d chains, %d map elements) in %.3f s "
                 "(rules computed in %.3f s, table listed in %.3f s, batch of %d bytes applied in %.3f s)",
                 self.fragment.table.family, self.fragment.table.name, count, stats.chains_written,
                 stats.elements_changed, computed + stats.seconds, computed, stats.listing, stats.script_bytes,
                 stats.batch)
        self.queue.add_after(FULL, self.resync_seconds)
        await self._after_sync()

    async def run(self) -> None:
        """After `boot()`: write changes as they come, every key waiting at once in one batch."""
        while True:
            first = await self.queue.get()
            if first is None:
                return
            keys: list[Hashable] = [first]
            while len(self.queue):
                more = await self.queue.get()
                if more is not None:
                    keys.append(more)
            try:
                await self._process([str(k) for k in keys])
            finally:
                for k in keys:
                    self.queue.done(k)

    async def _process(self, keys: list[str]) -> None:
        for key in keys:
            if key not in (FULL, CLEANUP):
                self._put(key)
        full = FULL in keys
        if not (full or self.fragment.pending or CLEANUP in keys):
            return
        try:
            stats = await self.fragment.sync(full=full)
        except (nft.NftError, OSError, ValueError) as exc:  # ValueError: a listing nft garbled
            delay = self.queue.add_rate_limited(FULL)
            log.error("service proxy: writing the table failed; a full sync follows in %.1f s: %s", delay, exc)
            return
        self.queue.forget(FULL)
        if full:
            log.info("service proxy: full sync (%d chains, %d map elements) in %.3f s",
                     stats.chains_written, stats.elements_changed, stats.seconds)
            self.queue.add_after(FULL, self.resync_seconds)
        else:
            log.debug("service proxy: %d keys -> %d chains, %d elements in %.3f s", len(keys),
                      stats.chains_written, stats.elements_changed, stats.seconds)
        await self._after_sync()

    async def _after_sync(self) -> None:
        """Chains the batch flushed are deleted by a later one; UDP flows still bound to
        endpoints that left are cleared (net/conntrack.py)."""
        due = self.fragment.stale_due()
        if due is not None:
            self.queue.add_after(CLEANUP, due + 0.01)
        if not self._udp_changed:
            return
        changed, self._udp_changed = self._udp_changed, {}
        try:
            deleted = await asyncio.wait_for(conntrack.clear_stale_udp(changed), 10.0)
        except (OSError, TimeoutError) as exc:
            log.warning("service proxy: clearing stale UDP conntrack entries failed (they idle out instead): %s", exc)
            return
        if deleted:
            log.info("service proxy: cleared %d stale UDP conntrack entries", deleted)


def _allow_localhost_node_ports() -> None:
    """NodePorts on 127.0.0.1 need the kernel to route DNATed loopback traffic out of `lo`
    (route_localnet, as upstream's iptables mode sets it); filter-input drops what that would
    otherwise let in from other hosts."""
    try:
        if ROUTE_LOCALNET.read_text().strip() != "1":
            ROUTE_LOCALNET.write_text("1\n")
    except OSError as exc:
        log.warning("service proxy: cannot set %s (%s): NodePorts will not answer on 127.0.0.1", ROUTE_LOCALNET, exc)
