"""Cluster DNS end to end: a real `edgekube server` inside a network namespace of its own,
answering dnspython queries sent from inside that namespace over UDP and TCP, forwarding to a
fake upstream DNS server in a second namespace joined by a veth pair (198.18.0.0/24), and the
kube-dns Service as real kubectl shows it. Nothing here reaches the host's namespace.

The server listens on its default address, the pod gateway 10.42.0.1, which the test puts on the
namespace's loopback only after the server started (it binds with IP_FREEBIND, as it must before
the pod network's bridge exists).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import yaml

from tests.conftest import REPO, Server
from tests.support import netns as netns_mod
from tests.support.waiting import until

DNS_IP = "10.42.0.1"
UPSTREAM_IP = f"{netns_mod.OUTSIDE_NET}.2"
NOBODY_IP = f"{netns_mod.OUTSIDE_NET}.99"  # on the link, held by no one
KUBECTL = REPO / "tools" / "bin" / "kubectl-1.36"


# --- a fake upstream nameserver in the second namespace --------------------------------------------


class FakeUpstream:
    """A nameserver on UDP and TCP port 53 of the outside namespace, counting the questions it
    gets. example names: `*.example.com` A 192.0.2.10 (TTL 300); `nx.example.com` NXDOMAIN with
    a SOA (negative TTL 60); `tc.example.com` 40 A records, truncated over UDP; `hang.example.com`
    never answered."""

    def __init__(self, ns: netns_mod.NetNS, address: str) -> None:
        self.asked: collections.Counter[tuple[str, str]] = collections.Counter()
        self.udp = ns.call(self._bound, address, socket.SOCK_DGRAM)
        self.tcp = ns.call(self._bound, address, socket.SOCK_STREAM)
        self.tcp.listen(16)
        self._stop = False
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _bound(address: str, kind: socket.SocketKind) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, 53))
        s.settimeout(0.2)
        return s

    def answer(self, wire: bytes, *, tcp: bool) -> bytes | None:
        q = dns.message.from_wire(wire)
        name = q.question[0].name.to_text().lower()
        qtype = dns.rdatatype.to_text(q.question[0].rdtype)
        self.asked[(name, qtype)] += 1
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        if name == "hang.example.com." or name.startswith("hang"):
            return None
        if name == "nx.example.com.":
            r.set_rcode(dns.rcode.NXDOMAIN)
            r.authority.append(dns.rrset.from_text("example.com.", 600, "IN", "SOA",
                                                   "ns.example.com. host.example.com. 1 2 3 4 60"))
        elif name == "tc.example.com." and qtype == "A":
            r.answer.append(dns.rrset.from_text_list(name, 300, "IN", "A", [f"192.0.2.{i}" for i in range(1, 41)]))
            if not tcp:
                return r.to_wire(max_size=512, prefer_truncation=True)
        elif name.endswith("example.com.") and qtype == "A":
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.10"))
        return r.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop:
            try:
                data, addr = self.udp.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            out = self.answer(data, tcp=False)
            if out is not None:
                self.udp.sendto(out, addr)

    def _serve_tcp(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    size = struct.unpack("!H", conn.recv(2))[0]
                    data = b""
                    while len(data) < size:
                        data += conn.recv(size - len(data))
                    out = self.answer(data, tcp=True)
                    if out is not None:
                        conn.sendall(struct.pack("!H", len(out)) + out)
                except (OSError, struct.error):
                    pass

    def close(self) -> None:
        self._stop = True
        for t in self.threads:
            t.join(timeout=2)
        self.udp.close()
        self.tcp.close()


# --- the cluster ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Env:
    node: netns_mod.NetNS
    outside: netns_mod.NetNS
    server: Server
    upstream: FakeUpstream
    resolv: Path

    def kubectl(self, *args: str, input: str | None = None) -> str:
        done = self.node.run([str(KUBECTL), "--kubeconfig", str(self.server.kubeconfig), *args], input=input)
        return done.stdout

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", input=manifest)

    def query(self, name: str, qtype: str = "A", *, tcp: bool = False, timeout: float = 3.0,
              **make: Any) -> dns.message.Message:
        q = dns.message.make_query(name, qtype, **make)
        how = dns.query.tcp if tcp else dns.query.udp
        return self.node.call(how, q, DNS_IP, timeout=timeout)

    def raw(self, wire: bytes, *, timeout: float = 2.0) -> bytes | None:
        """One datagram to the server and its answer (None when it sends none)."""
        def exchange() -> bytes | None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(wire, (DNS_IP, 53))
                try:
                    return s.recv(65535)
                except TimeoutError:
                    return None
        return self.node.call(exchange)

    def set_upstreams(self, text: str) -> None:
        self.resolv.write_text(text)
        time.sleep(1.2)  # the server looks at the file at most once a second


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("dns")
    with netns_mod.namespaces("node", "outside") as (node, outside):
        netns_mod.link(node, outside)
        upstream = FakeUpstream(outside, UPSTREAM_IP)
        resolv = root / "resolv.conf"
        # A local stub first, as systemd-resolved's: it must be skipped, not asked.
        resolv.write_text(f"nameserver 127.0.0.53\nnameserver {UPSTREAM_IP}\nsearch corp.example\n")
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump({"dns": {"resolv-conf": str(resolv), "max-concurrent": 20}}))
        server = Server(root / "data", extra=["--config", str(config)], netns=node)
        try:
            server.start()
            node.run(["ip", "addr", "add", f"{DNS_IP}/32", "dev", "lo"])
            yield Env(node, outside, server, upstream, resolv)
        finally:
            server.close()
            upstream.close()


def headless(name: str, endpoints: list[dict[str, Any]], *, port: tuple[str, int]) -> str:
    """A headless Service without a selector and one EndpointSlice of it, as a manifest."""
    ports = [{"name": port[0], "port": port[1], "protocol": "TCP"}]
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"clusterIP": "None", "ports": ports}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "endpoints": endpoints, "ports": ports},
    ])


def rrs(msg: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(line for rrset in getattr(msg, section) for line in rrset.to_text().splitlines())


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset if rrset.rdtype == dns.rdatatype.A)


# --- tests ----------------------------------------------------------------------------------------------


def test_kube_dns_service_is_there_as_on_any_cluster(env: Env) -> None:
    out = env.kubectl("get", "svc", "-n", "kube-system")
    line = next(row for row in out.splitlines() if row.startswith("kube-dns "))
    assert line.split()[1:5] == ["ClusterIP", "10.43.0.10", "<none>", "53/UDP,53/TCP,9153/TCP"], out
    svc = json.loads(env.kubectl("get", "svc", "-n", "kube-system", "kube-dns", "-o", "json"))
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns" and "selector" not in svc["spec"]
    eps = json.loads(env.kubectl("get", "endpointslice", "-n", "kube-system", "kube-dns", "-o", "json"))
    assert [e["addresses"] for e in eps["endpoints"]] == [[DNS_IP]]
    assert sorted((p["name"], p["port"], p["protocol"]) for p in eps["ports"]) == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    assert "kube-dns" in env.kubectl("get", "svc", "-A")
    # and it answers for itself, over both transports
    for tcp in (False, True):
        r = env.query("kube-dns.kube-system.svc.cluster.local.", tcp=tcp)
        assert rrs(r) == ["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.43.0.10"]
        assert r.flags & dns.flags.AA


def test_service_names_over_udp_and_tcp(env: Env) -> None:
    env.apply("""
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, protocol: TCP}]
""")
    ip = json.loads(env.kubectl("get", "svc", "web", "-o", "json"))["spec"]["clusterIP"]
    r = until(lambda: (m := env.query("web.default.svc.cluster.local.")).rcode() == dns.rcode.NOERROR and m,
              timeout=10, what="the web Service in DNS")
    assert rrs(r) == [f"web.default.svc.cluster.local. 5 IN A {ip}"]
    assert rrs(env.query("WEB.Default.SVC.cluster.LOCAL.", tcp=True)) == [f"WEB.Default.SVC.cluster.LOCAL. 5 IN A {ip}"]
    srv = env.query("_http._tcp.web.default.svc.cluster.local.", "SRV", tcp=True)
    assert rrs(srv) == ["_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."]
    assert rrs(srv, "additional") == [f"web.default.svc.cluster.local. 5 IN A {ip}"]
    ptr = env.query(dns.name.from_text(".".join(reversed(ip.split("."))) + ".in-addr.arpa.").to_text(), "PTR")
    assert [rd.to_text() for rrset in ptr.answer for rd in rrset] == ["web.default.svc.cluster.local."]
    assert rrs(env.query("10-42-0-9.default.pod.cluster.local.")) == [
        "10-42-0-9.default.pod.cluster.local. 5 IN A 10.42.0.9"]


def test_unknown_cluster_names_are_nxdomain_with_the_soa(env: Env) -> None:
    for tcp in (False, True):
        r = env.query("nothing.default.svc.cluster.local.", tcp=tcp)
        assert r.rcode() == dns.rcode.NXDOMAIN and r.answer == []
        assert [rrset.rdtype for rrset in r.authority] == [dns.rdatatype.SOA]
        assert r.authority[0].to_text().startswith("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local.")
    nodata = env.query("kubernetes.default.svc.cluster.local.", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == [] and len(nodata.authority) == 1
    # a search-path walk of an outside name ends in the cluster with no upstream question
    before = sum(env.upstream.asked.values())
    for suffix in ("default.svc.cluster.local.", "svc.cluster.local.", "cluster.local."):
        assert env.query(f"www.example.org.{suffix}").rcode() == dns.rcode.NXDOMAIN
    assert sum(env.upstream.asked.values()) == before


def test_headless_service_endpoints_and_statefulset_names(env: Env) -> None:
    endpoints = [{"addresses": [f"10.42.0.{20 + i}"], "hostname": f"db-{i}", "conditions": {"ready": True}}
                 for i in range(3)]
    endpoints.append({"addresses": ["10.42.0.99"], "hostname": "db-9", "conditions": {"ready": False}})
    env.apply(headless("db", endpoints, port=("pg", 5432)))
    r = until(lambda: (m := env.query("db.default.svc.cluster.local.")).answer and m, timeout=10,
              what="the headless Service's endpoints in DNS")
    assert addresses(r) == ["10.42.0.20", "10.42.0.21", "10.42.0.22"]  # the not-ready one left out
    assert addresses(env.query("db-1.db.default.svc.cluster.local.", tcp=True)) == ["10.42.0.21"]
    assert env.query("db-9.db.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
    srv = env.query("_pg._tcp.db.default.svc.cluster.local.", "SRV")
    assert sorted(rd.to_text() for rrset in srv.answer for rd in rrset) == [
        f"0 33 5432 db-{i}.db.default.svc.cluster.local." for i in range(3)]
    assert rrs(srv, "additional") == [f"db-{i}.db.default.svc.cluster.local. 5 IN A 10.42.0.{20 + i}" for i in range(3)]
    ptr = env.query("21.0.42.10.in-addr.arpa.", "PTR", tcp=True)
    assert [rd.to_text() for rrset in ptr.answer for rd in rrset] == ["db-1.db.default.svc.cluster.local."]


def test_truncated_udp_answers_are_complete_over_tcp(env: Env) -> None:
    many = [{"addresses": [f"10.42.1.{i}"], "conditions": {"ready": True}} for i in range(1, 61)]
    env.apply(headless("wide", many, port=("x", 1)))
    full = until(lambda: len(addresses(m := env.query("wide.default.svc.cluster.local.", tcp=True))) == 60 and m,
                 timeout=10, what="60 endpoints over TCP")
    assert not full.flags & dns.flags.TC
    udp = env.query("wide.default.svc.cluster.local.")  # no EDNS: 512 bytes
    assert udp.flags & dns.flags.TC and len(addresses(udp)) < 60
    assert len(env.query("wide.default.svc.cluster.local.", use_edns=0, payload=4096).to_wire()) > 512


def test_outside_names_are_forwarded_once_then_cached(env: Env) -> None:
    r = env.query("www.example.com.")
    assert rrs(r) == ["www.example.com. 300 IN A 192.0.2.10"] and r.flags & dns.flags.RA
    again = env.query("WWW.example.com.", tcp=True)
    assert addresses(again) == ["192.0.2.10"] and again.question[0].name.to_text() == "WWW.example.com."
    assert env.upstream.asked[("www.example.com.", "A")] == 1  # the second answer came from the cache
    assert env.upstream.asked[("127.0.0.53", "A")] == 0
    nx = env.query("nx.example.com.")
    assert nx.rcode() == dns.rcode.NXDOMAIN and env.query("nx.example.com.").rcode() == dns.rcode.NXDOMAIN
    assert env.upstream.asked[("nx.example.com.", "A")] == 1  # negative answers are cached too
    # an answer the upstream truncates is fetched whole over TCP, then fits a client's EDNS buffer
    big = env.query("tc.example.com.", use_edns=0, payload=1232)
    assert len(addresses(big)) == 40 and not big.flags & dns.flags.TC


def test_external_name_is_a_cname_followed_upstream(env: Env) -> None:
    env.apply("""
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: api.example.com}
""")
    r = until(lambda: (m := env.query("ext.default.svc.cluster.local.")).answer and m, timeout=10,
              what="the ExternalName in DNS")
    assert rrs(r) == ["api.example.com. 300 IN A 192.0.2.10",
                      "ext.default.svc.cluster.local. 5 IN CNAME api.example.com."]


def test_an_unreachable_upstream_fails_fast(env: Env) -> None:
    env.set_upstreams(f"nameserver {NOBODY_IP}\n")
    try:
        # A client that waits 4 s gets SERVFAIL (the server gives up within its 2 s), not silence.
        r = env.query("unreachable.example.com.", timeout=4)
        assert r.rcode() == dns.rcode.SERVFAIL
        assert rrs(env.query("kubernetes.default.svc.cluster.local.", timeout=1))  # the cluster is unaffected
    finally:
        env.set_upstreams(f"nameserver {UPSTREAM_IP}\n")


def test_no_upstream_at_all_fails_at_once_and_the_cluster_still_answers(env: Env) -> None:
    env.set_upstreams("nameserver 127.0.0.53\noptions edns0 trust-ad\n")  # only a local stub: no upstream
    try:
        before = sum(env.upstream.asked.values())
        assert env.query("noupstream.example.com.", timeout=1).rcode() == dns.rcode.SERVFAIL
        assert rrs(env.query("kubernetes.default.svc.cluster.local.", timeout=1))
        assert env.query("gone.default.svc.cluster.local.", timeout=1).rcode() == dns.rcode.NXDOMAIN
        assert sum(env.upstream.asked.values()) == before
    finally:
        env.set_upstreams(f"nameserver {UPSTREAM_IP}\n")


def test_a_flood_past_max_concurrent_is_refused_not_queued(env: Env) -> None:
    """max-concurrent is 20 here and the upstream never answers `hang*` names: the first 20
    wait (and end in SERVFAIL), the rest are refused at once; cluster names keep answering."""
    def flood() -> collections.Counter[str]:
        seen: collections.Counter[str] = collections.Counter()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            for i in range(100):
                s.sendto(dns.message.make_query(f"hang{i}.example.com.", "A").to_wire(), (DNS_IP, 53))
            try:
                for _ in range(100):
                    seen[dns.rcode.to_text(dns.message.from_wire(s.recv(4096)).rcode())] += 1
            except TimeoutError:
                pass
        return seen
    seen = env.node.call(flood)
    assert seen["REFUSED"] >= 70 and seen["SERVFAIL"] <= 20, seen
    assert rrs(env.query("kubernetes.default.svc.cluster.local."))


def test_malformed_input_is_answered_or_dropped_never_fatal(env: Env) -> None:
    good = dns.message.make_query("kubernetes.default.svc.cluster.local.", "A")
    good.id = 4242
    wire = good.to_wire()
    assert env.raw(b"\x01\x02\x03") is None  # shorter than a header
    as_response = bytearray(wire)
    as_response[2] |= 0x80
    assert env.raw(bytes(as_response)) is None  # a response is never answered

    def rcode_of(data: bytes | None) -> str:
        assert data is not None
        return dns.rcode.to_text(dns.message.from_wire(data).rcode())

    no_question = wire[:4] + b"\x00\x00" + wire[6:12]
    assert rcode_of(env.raw(no_question)) == "FORMERR"
    cut = wire[:-3]  # the question ends early
    reply = env.raw(cut)
    assert reply is not None and reply[:2] == wire[:2] and rcode_of(reply) == "FORMERR"
    update = bytearray(wire)
    update[2] = (update[2] & 0x87) | (dns.opcode.UPDATE << 3)
    assert rcode_of(env.raw(bytes(update))) == "NOTIMP"
    edns1 = dns.message.make_query("kubernetes.default.svc.cluster.local.", "A", use_edns=1)
    assert rcode_of(env.raw(edns1.to_wire())) == "BADVERS"
    for _ in range(200):
        env.raw(os.urandom(12 + (_ % 50)), timeout=0.01)

    def tcp_junk() -> bytes:
        with socket.create_connection((DNS_IP, 53), timeout=3) as s:
            junk = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff"
            s.sendall(struct.pack("!H", len(junk)) + junk)
            size = struct.unpack("!H", s.recv(2))[0]
            return s.recv(size)
    assert rcode_of(env.node.call(tcp_junk)) == "FORMERR"
    # still serving, both ways
    assert rrs(env.query("kubernetes.default.svc.cluster.local."))
    assert rrs(env.query("kubernetes.default.svc.cluster.local.", tcp=True))
    assert env.server.proc is not None and env.server.proc.poll() is None


def test_metrics_are_served_as_coredns_does(env: Env) -> None:
    def scrape() -> str:
        with urllib.request.urlopen(f"http://{DNS_IP}:9153/metrics", timeout=3) as r:
            return str(r.read().decode())
    text = env.node.call(scrape)
    assert 'coredns_dns_requests_total{proto="udp"}' in text and "coredns_cache_hits_total" in text


def test_disabling_dns_removes_the_service(tmp_path: Path, netns: netns_mod.NetNS) -> None:
    server = Server(tmp_path / "data", netns=netns)
    try:
        server.start()
        kubectl = [str(KUBECTL), "--kubeconfig", str(server.kubeconfig)]
        assert "kube-dns" in netns.run([*kubectl, "get", "svc", "-n", "kube-system"]).stdout
        server.stop()
        server.extra += ["--disable", "dns"]
        server.start()
        assert "kube-dns" not in netns.run([*kubectl, "get", "svc,endpointslice,endpoints", "-n", "kube-system"]).stdout
    finally:
        server.close()
