"""The pod network's pure parts: the address state (one write per change, restart, round robin,
exhaustion, dual stack) and the choice of the node's pod CIDRs. The netlink side is tested with
real links in tests/e2e/test_pod_network.py."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekube import config as config_mod
from edgekube.kubelet import network as kubelet_network
from edgekube.net import ipam as ipam_mod
from edgekube.net import links, podnet
from tests.conftest import REPO

V4 = ipaddress.ip_network("10.42.0.0/24")
V6 = ipaddress.ip_network("fd42::/64")


def _ipam(path: Path, *ranges: ipam_mod.Network) -> ipam_mod.Ipam:
    ipam = ipam_mod.Ipam(path / "network" / "ipam.json", ranges=ranges or (V4,))
    ipam.load()
    return ipam


def test_allocations_are_distinct_skip_the_gateway_and_survive_a_restart(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path)
    a = ipam.allocate("uid-a", namespace="ns", name="a")
    b = ipam.allocate("uid-b", namespace="ns", name="b")
    assert a.ips == ("10.42.0.2",) and b.ips == ("10.42.0.3",)  # .0 network, .1 the bridge's
    assert ipam.allocate("uid-a", namespace="ns", name="a") == a  # set up again: the same address
    assert oct(ipam.path.stat().st_mode & 0o777) == "0o600"
    again = _ipam(tmp_path)  # a new process
    assert again.get("uid-a") == a and again.get("uid-b") == b
    assert again.allocate("uid-c", namespace="ns", name="c").ips == ("10.42.0.4",)


def test_one_write_per_change_and_none_for_lookups(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path)
    ipam.allocate("uid-a", namespace="ns", name="a")
    inode = ipam.path.stat().st_ino
    ipam.allocate("uid-a", namespace="ns", name="a")  # held already
    ipam.get("uid-a")
    ipam.release("nobody")
    assert ipam.retain({"uid-a"}) == []
    assert ipam.path.stat().st_ino == inode  # nothing rewritten (write_atomic renames a new file in)
    ipam.release("uid-a")
    assert ipam.path.stat().st_ino != inode
    assert json.loads(ipam.path.read_text())["pods"] == {}


def test_round_robin_reuses_a_freed_address_last(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path, ipaddress.ip_network("10.42.0.0/29"))  # .2 .. .6: 5 pods
    got = [ipam.allocate(f"u{i}", namespace="ns", name=f"p{i}").ips[0] for i in range(3)]
    assert got == ["10.42.0.2", "10.42.0.3", "10.42.0.4"]
    ipam.release("u0")
    assert ipam.allocate("u3", namespace="ns", name="p3").ips == ("10.42.0.5",)
    assert ipam.allocate("u4", namespace="ns", name="p4").ips == ("10.42.0.6",)
    assert ipam.allocate("u5", namespace="ns", name="p5").ips == ("10.42.0.2",)  # wrapped: the freed one


def test_exhaustion_names_the_range_and_the_pod(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path, ipaddress.ip_network("10.42.0.0/30"))  # one pod: .2
    assert ipam.allocate("u0", namespace="ns", name="first").ips == ("10.42.0.2",)
    with pytest.raises(ipam_mod.ExhaustedError) as err:
        ipam.allocate("u1", namespace="ns", name="second")
    assert isinstance(err.value, OSError)
    assert "10.42.0.0/30" in str(err.value) and "ns/second" in str(err.value) and "all 1 " in str(err.value)
    assert ipam.get("u1") is None
    ipam.release("u0")
    assert ipam.allocate("u1", namespace="ns", name="second").ips == ("10.42.0.2",)


def test_retain_releases_the_pods_deleted_meanwhile_in_one_write(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path)
    for i in range(4):
        ipam.allocate(f"u{i}", namespace="ns", name=f"p{i}")
    gone = ipam.retain({"u1", "u3", "someone-else"})
    assert sorted(a.uid for a in gone) == ["u0", "u2"]
    assert sorted(json.loads(ipam.path.read_text())["pods"]) == ["u1", "u3"]


def test_dual_stack_gives_one_address_per_family_ipv4_first(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path, V4, V6)
    a = ipam.allocate("u0", namespace="ns", name="a")
    assert a.ips == ("10.42.0.2", "fd42::2")
    assert ipam_mod.gateway(V6) == ipaddress.ip_address("fd42::1")
    assert ipam_mod.capacity(V6) == 2**64 - 2 and ipam_mod.capacity(V4) == 253


def test_a_damaged_state_is_moved_aside_and_claims_restore_it(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path)
    ipam.allocate("u0", namespace="ns", name="a")
    ipam.path.write_text("{not json")
    again = _ipam(tmp_path)
    assert again.allocations() == []
    assert [p.name for p in ipam.path.parent.iterdir() if ".damaged-" in p.name]
    # The running pod's link says what it holds: recorded again, and never handed out twice.
    again.claim("u0", namespace="ns", name="a", ips=["10.42.0.2"])
    assert again.allocate("u1", namespace="ns", name="b").ips == ("10.42.0.3",)
    with pytest.raises(ipam_mod.IpamError, match="ns/a"):
        again.claim("u2", namespace="ns", name="c", ips=["10.42.0.2"])


def test_a_failed_write_allocates_nothing(tmp_path: Path) -> None:
    ipam = _ipam(tmp_path)
    blocker = ipam.path.with_name(f".{ipam.path.name}.tmp")  # write_atomic's temporary file cannot be made
    blocker.mkdir()
    with pytest.raises(ipam_mod.IpamError, match=r"ipam\.json"):
        ipam.allocate("u0", namespace="ns", name="a")
    assert ipam.get("u0") is None
    blocker.rmdir()
    assert ipam.allocate("u0", namespace="ns", name="a").ips == ("10.42.0.2",)  # the same address: nothing moved


def _node(name: str, *cidrs: str) -> dict[str, object]:
    spec = {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)} if cidrs else {}
    return {"metadata": {"name": name}, "spec": spec}


def test_the_node_cidr_is_its_own_else_the_first_free_slice() -> None:
    cluster = podnet.parse_cidrs("10.42.0.0/16")
    assert podnet.choose_cidrs(cluster, node_name="a", nodes=[]) == (ipaddress.ip_network("10.42.0.0/24"),)
    others = [_node("b", "10.42.0.0/24"), _node("c", "10.42.1.0/24")]
    assert podnet.choose_cidrs(cluster, node_name="a", nodes=others) == (ipaddress.ip_network("10.42.2.0/24"),)
    mine = [*others, _node("a", "10.42.7.0/24")]
    assert podnet.choose_cidrs(cluster, node_name="a", nodes=mine) == (ipaddress.ip_network("10.42.7.0/24"),)
    small = podnet.parse_cidrs("10.42.0.0/26")  # smaller than a /24: taken whole
    assert podnet.choose_cidrs(small, node_name="a", nodes=[]) == small
    with pytest.raises(podnet.StartError, match=r"10\.42\.0\.0/26"):
        podnet.choose_cidrs(small, node_name="a", nodes=[_node("b", "10.42.0.0/26")])


def test_dual_stack_cluster_cidrs_give_a_slice_per_family_ipv4_first() -> None:
    cluster = podnet.parse_cidrs("fd42::/56, 10.42.0.0/16")
    assert [str(c) for c in cluster] == ["10.42.0.0/16", "fd42::/56"]
    chosen = podnet.choose_cidrs(cluster, node_name="a", nodes=[_node("b", "10.42.0.0/24", "fd42::/64")])
    assert [str(c) for c in chosen] == ["10.42.1.0/24", "fd42:0:0:1::/64"]
    with pytest.raises(ValueError, match="one range per family"):
        podnet.parse_cidrs("10.42.0.0/16,10.44.0.0/16")


def test_host_link_names_are_stable_short_and_ours() -> None:
    name = links.host_ifname("0b9a7c0e-1d2f-4a4b-9c4e-3f2a1b0c9d8e")
    assert name == links.host_ifname("0b9a7c0e-1d2f-4a4b-9c4e-3f2a1b0c9d8e")
    assert len(name) <= 15 and links.HOST_NAME.match(name)
    assert not links.HOST_NAME.match("veth1234567890") and name != links.host_ifname("another")


def test_pod_network_settings_are_checked() -> None:
    assert config_mod.load(overrides={}).pod_network == config_mod.PodNetworkSettings(bridge="ek0", mtu=0)
    with pytest.raises(config_mod.ConfigError, match="bridge"):
        config_mod.load(overrides={"pod-network": {"bridge": "a-name-far-too-long"}})
    with pytest.raises(config_mod.ConfigError, match="mtu"):
        config_mod.load(overrides={"pod-network": {"mtu": 100}})


async def test_loopback_is_what_pods_get_without_a_network() -> None:
    lo = kubelet_network.Loopback()
    assert await lo.setup("u", namespace="ns", name="p", netns=Path("/nonexistent")) == ("127.0.0.1",)
    assert lo.pod_cidrs == ()
    await lo.teardown("u")
    await lo.restore({})


def test_only_the_rtnetlink_part_of_pyroute2_is_loaded_and_the_rest_still_imports() -> None:
    """edgekube.net.netlink skips pyroute2's __init__ (5 MiB of clients the pod network never
    uses); any other user of pyroute2 in the process still gets the whole package."""
    probe = (
        "import sys; import edgekube.net.netlink as n\n"
        "few = sorted(m for m in sys.modules if m.startswith('pyroute2'))\n"
        "assert 'pyroute2.ndb.main' not in few and 'pyroute2.conntrack' not in few, few\n"
        "from pyroute2 import NDB, IPRoute, NetlinkError\n"
        "import pyroute2\n"
        "assert IPRoute is n.IPRoute and NetlinkError is n.NetlinkError and pyroute2.__version__\n"
        "print(len(few), len([m for m in sys.modules if m.startswith('pyroute2')]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    few, full = map(int, done.stdout.split())
    assert few < full
