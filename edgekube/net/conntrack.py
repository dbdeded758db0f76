"""Stale UDP conntrack entries, cleared when a UDP Service's endpoints change (upstream's
pkg/proxy/conntrack).

NAT happens on a flow's first packet; conntrack then carries the flow on. For TCP that is what
keeps established connections alive across rule changes. For UDP it is a trap: a client that
keeps sending from the same port (a DNS resolver, a game client) stays on the endpoint it first
got, even after that endpoint left the Service, until the entry idles out (30 s to minutes). So
after a sync that changed a UDP Service, the proxy asks this module to delete the UDP entries
whose original destination is one of the Service's addresses (cluster IP, external and
load-balancer IPs; or a NodePort) and whose reply comes from an address that is no longer one of
its endpoints. The next packet of such a flow goes through the rules again.

Netlink (pyroute2's asyncio conntrack socket, nf_conntrack_netlink in the kernel); a failure is
logged by the caller and costs only the stale flows' idle time, as before the cleanup existed.
pyroute2 is imported on the first cleanup, not with the proxy, and through `net.netlink`'s lazy
package: a plain `import pyroute2` runs its `__init__`, which loads every pyroute2 client (about
8 MiB of a device's idle budget, for a cleanup most nodes never need).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

Address = tuple[str, int]
NODE_PORT = "*"  # a frontend (NODE_PORT, port): a NodePort, on any address of the node


async def clear_stale_udp(frontends: Mapping[Address, frozenset[Address]]) -> int:
    """Delete UDP entries sent to a frontend whose answer does not come from one of its
    endpoints (the mapping's value; empty: the frontend has none, or is gone). Returns how many."""
    if not frontends:
        return 0
    from edgekube.net import netlink  # noqa: F401  (pyroute2 as a lazy package, before its submodules)

    # isort: split
    from pyroute2.conntrack import AsyncConntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    node_ports = {port: valid for (ip, port), valid in frontends.items() if ip == NODE_PORT}
    ct = AsyncConntrack()
    deleted = 0
    try:
        stale = []
        for family in (socket.AF_INET, socket.AF_INET6):
            async for entry in await ct.dump_entries(tuple_orig=NFCTAttrTuple(family=family, proto=socket.IPPROTO_UDP)):
                orig, reply = entry.tuple_orig, entry.tuple_reply
                target = (str(orig.daddr), int(orig.dport))
                valid = frontends.get(target)
                if valid is None:
                    valid = node_ports.get(target[1])
                if valid is not None and (str(reply.saddr), int(reply.sport)) not in valid:
                    stale.append(entry)
        for entry in stale:
            try:
                await ct.delete(entry)
                deleted += 1
            except OSError:  # gone meanwhile
                continue
    finally:
        ct.close()
    return deleted
