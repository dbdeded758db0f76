"""The kubelet's side of the pod network: the `PodNetwork` Protocol it asks, and `Loopback`, what
it uses when no network is plugged in.

The kubelet owns this Protocol and never imports `net/` (DESIGN §7); `runtime.py` hands it the
bridge network of `edgekube.net.podnet` when the `network` component is on, else `Loopback`.
The kubelet makes each pod's network namespace itself (`sandbox`, pinned by a bind mount under
`<root>/netns/<uid>`) and then asks the network to put the pod on the network:

- `setup(uid, namespace=, name=, netns=)` once per pod and process (again after an edgekube
  restart: the network finds what it set up before and answers at once, without touching the
  running pod), before the pod's /etc/hosts is written and its first container starts; it
  answers the pod's addresses, IPv4 first (dual stack: one per family, in the order of the
  cluster CIDRs). A failure (no free address, netlink refused) raises an OSError whose message
  names the pod and the cause; the kubelet turns it into a `FailedCreatePodSandBox` event and
  tries the pod again later, as upstream does with a CNI error.
- `teardown(uid)` when the pod's sandbox goes (terminal, deleted), before its namespace is
  unpinned: the address goes back to the pool and the host's end of the pod's link goes.
- `restore(live)` once at boot, when the kubelet knows the pods bound to it (informer synced),
  before it sweeps the sandboxes of the others and before any pod is synced: `live` maps each
  pod's UID to its namespace, name and network namespace path. What the network holds for any
  other pod (a pod deleted while edgekube was down) is released, and what it does not know of a
  live pod's (a lost state) is taken back from the pod's links before any address is handed out.
- `pod_cidrs`: the node's pod CIDRs, one per family, that the kubelet writes into the Node's
  `spec.podCIDR`/`spec.podCIDRs` when it registers it (empty: left as it is).

`hostNetwork: true` pods are never handed to the network: they use the node's namespace and
address.

`Loopback` is today's behaviour, kept for `--disable network`: the pod's namespace has loopback
only and its IP is 127.0.0.1 (it reaches nothing outside itself, and nothing reaches it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

LOOPBACK_IP = "127.0.0.1"
LivePod = tuple[str, str, Path]  # (namespace, name, its network namespace's path)


class PodNetwork(Protocol):
    """What the kubelet needs from the pod network (see the module's docstring)."""

    @property
    def pod_cidrs(self) -> tuple[str, ...]: ...

    async def setup(self, uid: str, *, namespace: str, name: str, netns: Path) -> tuple[str, ...]: ...

    async def teardown(self, uid: str) -> None: ...

    async def restore(self, live: Mapping[str, LivePod]) -> None: ...


class Loopback:
    """No pod network: loopback only, every pod at 127.0.0.1."""

    @property
    def pod_cidrs(self) -> tuple[str, ...]:
        return ()

    async def setup(self, uid: str, *, namespace: str, name: str, netns: Path) -> tuple[str, ...]:
        return (LOOPBACK_IP,)

    async def teardown(self, uid: str) -> None:
        return None

    async def restore(self, live: Mapping[str, LivePod]) -> None:
        return None
