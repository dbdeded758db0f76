"""nft.Fragment against the real kernel: incremental batches leave exactly the table a full sync
writes, whatever the sequence of changes; a full sync clears what a previous run left and keeps
other owners' objects; a refused batch is followed by a full sync that repairs the table."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from edgekube.net import nft, proxyrules
from tests.support import netns as netns_mod

SETTINGS = proxyrules.Settings()
POOL = [f"10.42.0.{i}" for i in range(2, 9)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fragment(ns: netns_mod.NetNS, clock: FakeClock | None = None) -> nft.Fragment:
    table = nft.Table(nft.Nft(ns.argv(["nft"])))
    return nft.Fragment(table, owns=proxyrules.owns, name="proxy", clock=clock or FakeClock())


def content(ns: netns_mod.NetNS) -> dict[str, Any]:
    """The table as comparable data: chains with their rules, sets with their elements and
    declarations (no handles)."""
    out = ns.run(["nft", "-j", "list", "table", "inet", "edgekube"], check=False)
    if out.returncode != 0:
        return {}
    table: dict[str, Any] = {}
    for item in json.loads(out.stdout)["nftables"]:
        for kind in ("chain", "set", "map"):
            if kind in item:
                body = {k: v for k, v in item[kind].items() if k not in ("handle", "elem")}
                body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in item[kind].get("elem") or [])
                table[f"{kind} {body['name']}"] = body
        if "rule" in item:
            rule = item["rule"]
            table.setdefault(f"rules {rule['chain']}", []).append(json.dumps(rule["expr"], sort_keys=True))
    return table


def random_service(rng: random.Random, i: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    name = f"s{i}"
    kind = rng.choice(["ClusterIP", "NodePort", "LoadBalancer"])
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}]
    if rng.random() < 0.3:
        ports.append({"name": "dns", "port": 53, "protocol": "UDP"})
    if kind != "ClusterIP":
        for n, p in enumerate(ports):
            p["nodePort"] = 30000 + i * 2 + n
    spec: dict[str, Any] = {"type": kind, "clusterIP": f"10.43.1.{i}", "clusterIPs": [f"10.43.1.{i}"], "ports": ports,
                            "internalTrafficPolicy": rng.choice(["Cluster", "Cluster", "Local"]),
                            "externalTrafficPolicy": rng.choice(["Cluster", "Local"])}
    if rng.random() < 0.3:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": rng.choice([60, 120])}}
    if rng.random() < 0.3:
        spec["externalIPs"] = [rng.choice(["192.0.2.1", "192.0.2.2"])]  # contested between services
    svc = {"metadata": {"name": name, "namespace": "default", "creationTimestamp": f"2024-01-{i + 1:02d}T00:00:00Z"},
           "spec": spec, "status": {}}
    endpoints = [{"addresses": [ip], "nodeName": rng.choice(["n1", "n2"]),
                  "conditions": {"ready": rng.random() < 0.7, "serving": rng.random() < 0.8,
                                 "terminating": rng.random() < 0.3}}
                 for ip in rng.sample(POOL, rng.randint(0, 4))]
    slices = [{"metadata": {"name": f"{name}-a", "namespace": "default"}, "addressType": "IPv4",
               "ports": [{"name": p["name"], "port": 8000 + n, "protocol": p["protocol"]} for n, p in enumerate(ports)],
               "endpoints": endpoints}]
    return svc, slices


def put_random(frag: nft.Fragment, rng: random.Random, i: int) -> None:
    if rng.random() < 0.2:
        frag.put(f"svc:{i}", None)
    else:
        svc, slices = random_service(rng, i)
        frag.put(f"svc:{i}", proxyrules.service_piece(svc, slices, node="n1", settings=SETTINGS))


@pytest.fixture
def two() -> Iterator[tuple[netns_mod.NetNS, netns_mod.NetNS]]:
    with netns_mod.namespaces("inc", "full") as (a, b):
        yield a, b


def test_incremental_batches_equal_a_full_sync(two: tuple[netns_mod.NetNS, netns_mod.NetNS]) -> None:
    inc_ns, full_ns = two
    rng = random.Random(14)

    async def main() -> None:
        clock = FakeClock()
        inc = fragment(inc_ns, clock)
        inc.put("", proxyrules.static_piece(SETTINGS))
        for i in range(8):
            put_random(inc, rng, i)
        await inc.sync(full=True)
        for step in range(25):
            for i in rng.sample(range(10), rng.randint(1, 3)):
                put_random(inc, rng, i)
            stats = await inc.sync()
            assert not stats.full
            clock.now += nft.STALE_DELAY  # the next sync deletes what this one flushed
            await inc.sync()
            full_ns.run(["nft", "delete", "table", "inet", "edgekube"], check=False)
            full = fragment(full_ns)
            for key in inc.keys():
                full.put(key, inc.piece(key))
            await full.sync(full=True)
            assert content(inc_ns) == content(full_ns), f"step {step}"

    asyncio.run(main())


def test_full_sync_clears_leftovers_keeps_other_owners_and_redoes_changed_hooks(netns: netns_mod.NetNS) -> None:
    netns.run(["nft", "-f", "-"], input="""
add table inet edgekube
add chain inet edgekube nat-prerouting { type nat hook prerouting priority -50 ; }
add chain inet edgekube service-OLD-default/gone/tcp/http
add rule inet edgekube service-OLD-default/gone/tcp/http accept
add map inet edgekube service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add element inet edgekube service-ips { 10.43.9.9 . tcp . 80 : goto service-OLD-default/gone/tcp/http }
add set inet edgekube affinity-OLD-default/gone/tcp/http__10.42.0.2/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }
add chain inet edgekube policy-forward { type filter hook forward priority 0 ; }
add rule inet edgekube policy-forward ip saddr 10.42.0.7 drop
""")
    clock = FakeClock()

    async def main() -> None:
        frag = fragment(netns, clock)
        frag.put("", proxyrules.static_piece(SETTINGS))
        await frag.sync(full=True)
        clock.now += nft.STALE_DELAY
        await frag.sync()

    asyncio.run(main())
    table = content(netns)
    assert table["chain nat-prerouting"]["prio"] == -100
    assert "chain service-OLD-default/gone/tcp/http" not in table
    assert not any("OLD" in key for key in table)
    assert table["map service-ips"]["elem"] == []
    assert table["rules policy-forward"] and "chain policy-forward" in table  # another owner's: untouched


def test_a_refused_batch_is_followed_by_a_full_sync_that_repairs(netns: netns_mod.NetNS) -> None:
    rng = random.Random(3)

    async def main() -> None:
        frag = fragment(netns)
        frag.put("", proxyrules.static_piece(SETTINGS))
        svc, slices = random_service(rng, 1)
        svc["spec"]["type"] = "ClusterIP"
        slices[0]["endpoints"] = [{"addresses": ["10.42.0.2"]}]
        frag.put("svc:1", proxyrules.service_piece(svc, slices, node="n1", settings=SETTINGS))
        await frag.sync(full=True)
        # Someone else removes our element: the incremental delete of it is refused ...
        netns.run(["nft", "flush", "map", "inet", "edgekube", "service-ips"])
        slices[0]["endpoints"] = []
        frag.put("svc:1", proxyrules.service_piece(svc, slices, node="n1", settings=SETTINGS))
        with pytest.raises(nft.NftError, match="delete element"):
            await frag.sync()
        assert frag.need_full
        # ... and the next sync is a full one, which writes the whole truth.
        stats = await frag.sync()
        assert stats.full
        elements = content(netns)["map no-endpoint-services"]["elem"]
        assert len(elements) == len(svc["spec"]["ports"]) and "reject-chain" in elements[0]

    asyncio.run(main())


def test_the_boot_probe_says_what_is_missing(netns: netns_mod.NetNS) -> None:
    def probe(argv: list[str], features: list[tuple[str, str]]) -> str:
        try:
            asyncio.run(nft.probe(nft.Nft(netns.argv(argv)), features))
        except nft.Unavailable as exc:
            return str(exc)
        return ""

    assert probe(["nft"], list(proxyrules.PROBE)) == ""  # this kernel has it all
    # A statement the kernel refuses is named by its feature.
    bogus = [*proxyrules.PROBE[:3], ("time travel (nft_tardis)", "add rule @T p-chain meta tardis 1 accept")]
    said = probe(["nft"], bogus)
    assert "time travel (nft_tardis)" in said and "--disable network" in said
    # Without CAP_NET_ADMIN (not root) it says so.
    said = probe(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "nft"], list(proxyrules.PROBE))
    assert "CAP_NET_ADMIN" in said, said
