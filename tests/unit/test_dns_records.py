"""The cluster zone's records, as CoreDNS's kubernetes plugin answers them (net/dnszone.py), the
host resolver configuration the DNS forwarder and the kubelet share (_cogs/resolvconf.py), and
the forwarder's answer cache (net/dnscache.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from edgekube._cogs import resolvconf
from edgekube.net import dnscache, dnsforward, dnsserver, dnszone

SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1700000000 7200 1800 86400 5"


def service(name: str, ns: str = "default", *, ip: str | list[str] = "10.43.0.20",
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    ips = ip if isinstance(ip, list) else [ip]
    body: dict[str, Any] = {"clusterIP": ips[0] if ips else "", "clusterIPs": ips,
                            "ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]}
    body.update(spec)
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoint(ip: str, *, ready: bool | None = True, hostname: str | None = None) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "targetRef": {"kind": "Pod", "name": f"pod-{ip}"}}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    if hostname:
        ep["hostname"] = hostname
    return ep


def endpoint_slice(name: str, svc: str, endpoints: list[dict[str, Any]], ns: str = "default",
                   ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def namespace(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


@pytest.fixture
def zone() -> dnszone.ClusterZone:
    z = dnszone.ClusterZone(domain="cluster.local", local_ips=["10.42.0.1", "127.0.0.1"], clock=lambda: 1700000000.0)
    for ns in ("default", "kube-system", "apps"):
        z.set_namespace(namespace(ns))
    z.set_service(service("kubernetes", ip="10.43.0.1", ports=[{"name": "https", "port": 443, "protocol": "TCP"}]))
    z.set_service(service("kube-dns", "kube-system", ip="10.43.0.10",
                          ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                                 {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                                 {"name": "metrics", "port": 9153, "protocol": "TCP"}]))
    z.set_slice(endpoint_slice("kube-dns", "kube-dns", [endpoint("10.42.0.1")], ns="kube-system",
                               ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]))
    z.set_service(service("web", "apps", ip="10.43.0.30",
                          ports=[{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 9000, "protocol": "UDP"}]))
    z.set_slice(endpoint_slice("web-abc", "web", [endpoint("10.42.0.7"), endpoint("10.42.0.8", ready=False)], ns="apps"))
    z.set_service(service("db", "apps", ip="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    z.set_slice(endpoint_slice("db-1", "db", [endpoint("10.42.0.11", hostname="db-0"), endpoint("10.42.0.12", hostname="db-1"),
                                               endpoint("10.42.0.13", ready=None), endpoint("10.42.0.14", ready=False)],
                               ns="apps", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    z.synced = True
    return z


def ask(z: dnszone.ClusterZone, name: str, qtype: str = "A") -> dnszone.Answer:
    out = z.answer(dns.name.from_text(name), dns.rdatatype.from_text(qtype))
    assert out is not None, f"{name} {qtype} was not answered by the zone"
    return out


def lines(rrsets: list[Any]) -> list[str]:
    return [line for rrset in rrsets for line in rrset.to_text().splitlines()]


def test_a_cluster_ip_service(zone: dnszone.ClusterZone) -> None:
    out = ask(zone, "kubernetes.default.svc.cluster.local.")
    assert out.rcode == dns.rcode.NOERROR and out.authoritative
    assert lines(out.answer) == ["kubernetes.default.svc.cluster.local. 5 IN A 10.43.0.1"]
    assert out.authority == [] and out.additional == []


def test_names_are_matched_without_case_and_answered_in_the_querys(zone: dnszone.ClusterZone) -> None:
    out = ask(zone, "KubeRNetes.DEFAULT.Svc.Cluster.LOCAL.")
    assert lines(out.answer) == ["KubeRNetes.DEFAULT.Svc.Cluster.LOCAL. 5 IN A 10.43.0.1"]
    miss = ask(zone, "nope.DEFAULT.svc.CLUSTER.local.")
    assert miss.rcode == dns.rcode.NXDOMAIN
    assert lines(miss.authority)[0].startswith("CLUSTER.local. 5 IN SOA ns.dns.CLUSTER.local. hostmaster.CLUSTER.local.")


def test_aaaa_of_a_v4_service_is_nodata_and_dual_stack_answers_both(zone: dnszone.ClusterZone) -> None:
    out = ask(zone, "kubernetes.default.svc.cluster.local.", "AAAA")
    assert out.rcode == dns.rcode.NOERROR and out.answer == [] and lines(out.authority) == [SOA]
    zone.set_service(service("dual", ip=["10.43.0.40", "fd00:43::0040"]))
    assert lines(ask(zone, "dual.default.svc.cluster.local.", "AAAA").answer) == [
        "dual.default.svc.cluster.local. 5 IN AAAA fd00:43::40"]
    assert lines(ask(zone, "dual.default.svc.cluster.local.").answer) == ["dual.default.svc.cluster.local. 5 IN A 10.43.0.40"]


def test_headless_answers_each_ready_endpoint(zone: dnszone.ClusterZone) -> None:
    out = ask(zone, "db.apps.svc.cluster.local.")
    assert lines(out.answer) == [f"db.apps.svc.cluster.local. 5 IN A 10.42.0.{n}" for n in (11, 12, 13)]
    # a StatefulSet pod's name: <hostname>.<service>; an endpoint without one: its dashed IP
    assert lines(ask(zone, "db-1.db.apps.svc.cluster.local.").answer) == ["db-1.db.apps.svc.cluster.local. 5 IN A 10.42.0.12"]
    assert lines(ask(zone, "10-42-0-13.db.apps.svc.cluster.local.").answer) == [
        "10-42-0-13.db.apps.svc.cluster.local. 5 IN A 10.42.0.13"]
    assert ask(zone, "10-42-0-14.db.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN  # not ready
    assert ask(zone, "db-9.db.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN
    # an endpoint name works under a ClusterIP Service too (CoreDNS)
    assert lines(ask(zone, "10-42-0-7.web.apps.svc.cluster.local.").answer) == [
        "10-42-0-7.web.apps.svc.cluster.local. 5 IN A 10.42.0.7"]


def test_headless_without_ready_endpoints_is_nxdomain(zone: dnszone.ClusterZone) -> None:
    zone.set_service(service("empty", "apps", ip="None"))
    assert ask(zone, "empty.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN
    zone.set_slice(endpoint_slice("empty-x", "empty", [endpoint("10.42.0.50", ready=False)], ns="apps"))
    assert ask(zone, "empty.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN
    zone.set_slice(endpoint_slice("empty-x", "empty", [endpoint("10.42.0.50")], ns="apps"))
    assert lines(ask(zone, "empty.apps.svc.cluster.local.").answer) == ["empty.apps.svc.cluster.local. 5 IN A 10.42.0.50"]


def test_srv_for_named_ports(zone: dnszone.ClusterZone) -> None:
    out = ask(zone, "_http._tcp.web.apps.svc.cluster.local.", "SRV")
    assert lines(out.answer) == ["_http._tcp.web.apps.svc.cluster.local. 5 IN SRV 0 100 80 web.apps.svc.cluster.local."]
    assert lines(out.additional) == ["web.apps.svc.cluster.local. 5 IN A 10.43.0.30"]
    assert ask(zone, "_http._udp.web.apps.svc.cluster.local.", "SRV").rcode == dns.rcode.NXDOMAIN
    assert ask(zone, "_nope._tcp.web.apps.svc.cluster.local.", "SRV").rcode == dns.rcode.NXDOMAIN
    # the plain name answers SRV for every port (two records, 53 once: its UDP and TCP ports share
    # a target and a port); the weight spreads 100 over the three ports
    out = ask(zone, "kube-dns.kube-system.svc.cluster.local.", "SRV")
    assert lines(out.answer) == [
        "kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 33 53 kube-dns.kube-system.svc.cluster.local.",
        "kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 33 9153 kube-dns.kube-system.svc.cluster.local."]
    # an A query for an SRV-shaped name answers the address, as CoreDNS
    assert lines(ask(zone, "_dns._udp.kube-dns.kube-system.svc.cluster.local.").answer) == [
        "_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN A 10.43.0.10"]


def test_srv_for_a_headless_service_names_each_endpoint(zone: dnszone.ClusterZone) -> None:
    out = ask(zone, "_pg._tcp.db.apps.svc.cluster.local.", "SRV")
    assert lines(out.answer) == [
        "_pg._tcp.db.apps.svc.cluster.local. 5 IN SRV 0 33 5432 db-0.db.apps.svc.cluster.local.",
        "_pg._tcp.db.apps.svc.cluster.local. 5 IN SRV 0 33 5432 db-1.db.apps.svc.cluster.local.",
        "_pg._tcp.db.apps.svc.cluster.local. 5 IN SRV 0 33 5432 10-42-0-13.db.apps.svc.cluster.local."]
    assert lines(out.additional) == ["db-0.db.apps.svc.cluster.local. 5 IN A 10.42.0.11",
                                     "db-1.db.apps.svc.cluster.local. 5 IN A 10.42.0.12",
                                     "10-42-0-13.db.apps.svc.cluster.local. 5 IN A 10.42.0.13"]


def test_ptr_for_service_and_endpoint_ips(zone: dnszone.ClusterZone) -> None:
    out = ask(zone, "1.0.43.10.in-addr.arpa.", "PTR")
    assert lines(out.answer) == ["1.0.43.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local."]
    assert lines(ask(zone, "12.0.42.10.in-addr.arpa.", "PTR").answer) == [
        "12.0.42.10.in-addr.arpa. 5 IN PTR db-1.db.apps.svc.cluster.local."]
    assert lines(ask(zone, "7.0.42.10.in-addr.arpa.", "PTR").answer) == [
        "7.0.42.10.in-addr.arpa. 5 IN PTR 10-42-0-7.web.apps.svc.cluster.local."]
    # IPs nobody has, partial names, other types: not the cluster's (forwarded, as k3s's fallthrough)
    for name, qtype in (("99.0.42.10.in-addr.arpa.", "PTR"), ("8.0.42.10.in-addr.arpa.", "PTR"),
                        ("42.10.in-addr.arpa.", "PTR"), ("1.0.43.10.in-addr.arpa.", "A")):
        assert zone.answer(dns.name.from_text(name), dns.rdatatype.from_text(qtype)) is None, name
    zone.set_service(service("v6", ip="fd00:43::7"))
    name = dns.name.from_text("7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.")
    out6 = zone.answer(name, dns.rdatatype.PTR)
    assert out6 is not None and lines(out6.answer)[0].endswith("IN PTR v6.default.svc.cluster.local.")


def test_pod_names(zone: dnszone.ClusterZone) -> None:
    assert lines(ask(zone, "10-42-0-5.default.pod.cluster.local.").answer) == [
        "10-42-0-5.default.pod.cluster.local. 5 IN A 10.42.0.5"]
    assert lines(ask(zone, "fd00--5.default.pod.cluster.local.", "AAAA").answer) == [
        "fd00--5.default.pod.cluster.local. 5 IN AAAA fd00::5"]
    assert ask(zone, "10-42-0-5.default.pod.cluster.local.", "AAAA").answer == []  # NODATA
    assert ask(zone, "not-an-ip.default.pod.cluster.local.").rcode == dns.rcode.NXDOMAIN
    assert ask(zone, "10-42-0-5.nowhere.pod.cluster.local.").rcode == dns.rcode.NXDOMAIN
    assert ask(zone, "default.pod.cluster.local.").rcode == dns.rcode.NOERROR


def test_unknown_names_are_nxdomain_with_the_soa(zone: dnszone.ClusterZone) -> None:
    for name in ("nope.default.svc.cluster.local.", "kubernetes.nowhere.svc.cluster.local.",
                 "nowhere.svc.cluster.local.", "www.example.com.cluster.local.", "a.b.c.d.e.default.svc.cluster.local.",
                 "x.kubernetes.default.svc.cluster.local."):
        out = ask(zone, name)
        assert out.rcode == dns.rcode.NXDOMAIN and out.answer == [] and lines(out.authority) == [SOA], name
    assert ask(zone, "nope.default.svc.cluster.local.", "MX").rcode == dns.rcode.NXDOMAIN


def test_names_that_exist_without_the_type_are_nodata(zone: dnszone.ClusterZone) -> None:
    for name, qtype in (("default.svc.cluster.local.", "A"), ("svc.cluster.local.", "A"), ("cluster.local.", "A"),
                        ("kubernetes.default.svc.cluster.local.", "MX"), ("kubernetes.default.svc.cluster.local.", "TXT"),
                        ("kubernetes.default.svc.cluster.local.", "PTR"), ("kubernetes.default.svc.cluster.local.", "NS"),
                        ("nope.default.svc.cluster.local.", "SOA")):
        out = ask(zone, name, qtype)
        assert (out.rcode, out.answer, lines(out.authority)) == (dns.rcode.NOERROR, [], [SOA]), (name, qtype)
    assert ask(zone, "default.svc.cluster.local.", "TXT").rcode == dns.rcode.NXDOMAIN  # CoreDNS's TXT rule


def test_external_name_is_a_cname(zone: dnszone.ClusterZone) -> None:
    zone.set_service(service("ext", ip=[], ports=[], type="ExternalName", externalName="www.example.com"))
    out = ask(zone, "ext.default.svc.cluster.local.")
    assert lines(out.answer) == ["ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]
    assert out.chase == (dns.name.from_text("www.example.com."), dns.rdatatype.A)
    assert lines(ask(zone, "ext.default.svc.cluster.local.", "CNAME").answer) == [
        "ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]
    assert ask(zone, "ext.default.svc.cluster.local.", "SRV").answer == []
    # a target inside the zone is followed here, not upstream
    zone.set_service(service("alias", ip=[], ports=[], type="ExternalName",
                             externalName="kubernetes.default.svc.cluster.local"))
    out = ask(zone, "alias.default.svc.cluster.local.")
    assert out.chase is None and lines(out.answer) == [
        "alias.default.svc.cluster.local. 5 IN CNAME kubernetes.default.svc.cluster.local.",
        "kubernetes.default.svc.cluster.local. 5 IN A 10.43.0.1"]
    zone.set_service(service("ipname", ip=[], ports=[], type="ExternalName", externalName="192.0.2.1"))
    assert ask(zone, "ipname.default.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN


def test_schema_version_soa_and_ns(zone: dnszone.ClusterZone) -> None:
    assert lines(ask(zone, "dns-version.cluster.local.", "TXT").answer) == [
        'dns-version.cluster.local. 28800 IN TXT "1.1.0"']
    assert lines(ask(zone, "cluster.local.", "SOA").answer) == [SOA]
    out = ask(zone, "cluster.local.", "NS")
    assert lines(out.answer) == ["cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."]
    assert lines(out.additional) == ["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.43.0.10"]
    assert lines(ask(zone, "ns.dns.cluster.local.").answer) == ["ns.dns.cluster.local. 5 IN A 10.43.0.10"]
    assert ask(zone, "cluster.local.", "AXFR").rcode == dns.rcode.REFUSED


def test_not_synced_answers_servfail_instead_of_nxdomain(zone: dnszone.ClusterZone) -> None:
    zone.synced = False
    assert ask(zone, "nope.default.svc.cluster.local.").rcode == dns.rcode.SERVFAIL
    assert ask(zone, "kubernetes.default.svc.cluster.local.").rcode == dns.rcode.NOERROR


def test_other_names_are_not_the_zones(zone: dnszone.ClusterZone) -> None:
    assert zone.answer(dns.name.from_text("www.example.com."), dns.rdatatype.A) is None
    assert zone.answer(dns.name.from_text("cluster.localhost."), dns.rdatatype.A) is None


def test_the_indexes_follow_changes(zone: dnszone.ClusterZone) -> None:
    zone.set_slice(endpoint_slice("web-abc", "web", [endpoint("10.42.0.9")], ns="apps"))
    assert zone.answer(dns.name.from_text("7.0.42.10.in-addr.arpa."), dns.rdatatype.PTR) is None
    assert lines(ask(zone, "9.0.42.10.in-addr.arpa.", "PTR").answer)[0].endswith("10-42-0-9.web.apps.svc.cluster.local.")
    # a slice moved to another Service leaves the first
    zone.set_slice(endpoint_slice("db-1", "web", [endpoint("10.42.0.21", hostname="w")], ns="apps"))
    assert ask(zone, "db.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN
    assert lines(ask(zone, "w.web.apps.svc.cluster.local.").answer) == ["w.web.apps.svc.cluster.local. 5 IN A 10.42.0.21"]
    zone.delete_slice(endpoint_slice("db-1", "web", [], ns="apps"))
    assert ask(zone, "w.web.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN
    zone.set_service(service("web", "apps", ip="10.43.0.31"))
    assert zone.answer(dns.name.from_text("30.0.43.10.in-addr.arpa."), dns.rdatatype.PTR) is None
    assert lines(ask(zone, "web.apps.svc.cluster.local.").answer) == ["web.apps.svc.cluster.local. 5 IN A 10.43.0.31"]
    zone.delete_service(service("web", "apps"))
    assert ask(zone, "web.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN
    assert zone.answer(dns.name.from_text("31.0.43.10.in-addr.arpa."), dns.rdatatype.PTR) is None
    zone.delete_namespace(namespace("apps"))
    assert ask(zone, "db.apps.svc.cluster.local.").rcode == dns.rcode.NXDOMAIN


def test_the_serial_is_the_time_of_the_last_change() -> None:
    now = [1000.0]
    z = dnszone.ClusterZone(domain="cluster.local", clock=lambda: now[0])
    z.set_namespace(namespace("default"))
    now[0] = 2000.0
    z.set_service(service("a"))
    assert z.serial == 2000
    now[0] = 3000.0
    z.set_service(service("a"))  # unchanged: no new serial
    assert z.serial == 2000


# --- resolv.conf ----------------------------------------------------------------------------------


def test_parse_as_the_kubelet() -> None:
    conf = resolvconf.parse("# c\nnameserver 192.0.2.1\nnameserver 192.0.2.2\ndomain x\nsearch a. b\n"
                            "search c.example.\noptions a\noptions ndots:2\n")
    assert conf == resolvconf.ResolvConf(("192.0.2.1", "192.0.2.2"), ("c.example",), ("ndots:2",))


def test_usable_is_k3s_test() -> None:
    assert resolvconf.usable("nameserver 192.168.1.1\nnameserver 2001:db8::1\n")
    assert not resolvconf.usable("nameserver 127.0.0.53\noptions edns0\n")
    assert not resolvconf.usable("nameserver 192.168.1.1\nnameserver 127.0.0.1\n")
    assert not resolvconf.usable("nameserver fe80::1\n")
    assert not resolvconf.usable("search x\n")


def test_locate_skips_a_local_stub_for_systemd_resolved_real_list(tmp_path: Path) -> None:
    host, resolved = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    host.write_text("nameserver 127.0.0.53\nsearch lan\n")
    assert resolvconf.locate(None, candidates=(host, resolved)) == host  # no better file: the host's
    resolved.write_text("nameserver 192.0.2.53\n")
    assert resolvconf.locate(None, candidates=(host, resolved)) == resolved
    host.write_text("nameserver 192.0.2.1\n")
    assert resolvconf.locate(None, candidates=(host, resolved)) == host
    assert resolvconf.locate(tmp_path / "mine", candidates=(host, resolved)) == tmp_path / "mine"


def test_upstreams_leave_out_loopback() -> None:
    conf = resolvconf.parse("nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\nnameserver bogus\n"
                            "nameserver 2001:DB8::0001\nnameserver 192.0.2.1\nnameserver 0.0.0.0\n")
    assert resolvconf.upstreams(conf) == ["192.0.2.1", "2001:db8::1"]


# --- the answer cache -------------------------------------------------------------------------------


def reply(rcode: int = dns.rcode.NOERROR, *, answers: tuple[tuple[str, int], ...] = (), soa: tuple[int, int] | None = None,
          tc: bool = False) -> dns.message.Message:
    msg = dns.message.make_response(dns.message.make_query("www.example.com.", "A"))
    msg.set_rcode(rcode)
    for ip, ttl in answers:
        msg.answer.append(dns.rrset.from_text("www.example.com.", ttl, "IN", "A", ip))
    if soa is not None:
        msg.authority.append(dns.rrset.from_text("example.com.", soa[0], "IN", "SOA", f"ns. host. 1 2 3 4 {soa[1]}"))
    if tc:
        msg.flags |= dns.flags.TC
    return msg


def test_cache_lifetimes_follow_the_answer() -> None:
    assert dnscache.ttl_of(reply(answers=(("192.0.2.1", 20), ("192.0.2.2", 10)))) == 10
    assert dnscache.ttl_of(reply(answers=[("192.0.2.1", 3600)])) == 30  # at most 30 s, as k3s's `cache 30`
    assert dnscache.ttl_of(reply(dns.rcode.NXDOMAIN, soa=(600, 15))) == 15  # RFC 2308: min(SOA TTL, minimum)
    assert dnscache.ttl_of(reply(dns.rcode.NOERROR, soa=(8, 60))) == 8  # NODATA
    assert dnscache.ttl_of(reply(dns.rcode.NXDOMAIN)) == 0  # no SOA: not cached
    assert dnscache.ttl_of(reply(dns.rcode.SERVFAIL)) == 5
    assert dnscache.ttl_of(reply(dns.rcode.REFUSED)) == 0
    assert dnscache.ttl_of(reply(answers=[("192.0.2.1", 20)], tc=True)) == 0
    assert dnscache.ttl_of(reply(answers=[("192.0.2.1", 0)])) == 0


def test_cache_counts_ttls_down_and_forgets_expired_answers() -> None:
    now = [100.0]
    cache = dnscache.Cache(max_bytes=1 << 20, clock=lambda: now[0])
    key = dnscache.key_of("WWW.example.com.", 1, 1, dnssec_ok=False, checking_disabled=False)
    cache.put(key, reply(answers=[("192.0.2.1", 20)]).to_wire(), 20)
    now[0] = 107.5
    got = cache.get(dnscache.key_of("www.example.com.", 1, 1, dnssec_ok=False, checking_disabled=False))
    assert got is not None
    assert dnscache.aged(*got).answer[0].ttl == 13
    assert cache.get(dnscache.key_of("www.example.com.", 1, 1, dnssec_ok=True, checking_disabled=False)) is None
    now[0] = 120.0
    assert cache.get(key) is None and len(cache) == 0 and cache.size == 0


def test_cache_is_bounded_in_bytes_least_recently_used_first() -> None:
    wire = reply(answers=[("192.0.2.1", 20)]).to_wire()
    cost = len(wire) + dnscache.ENTRY_OVERHEAD
    cache = dnscache.Cache(max_bytes=cost * 10)
    keys = [dnscache.key_of(f"n{i}.example.", 1, 1, dnssec_ok=False, checking_disabled=False) for i in range(25)]
    for i, key in enumerate(keys):
        cache.put(key, wire, 20)
        if i >= 1:
            cache.get(keys[0])  # kept in use
    assert len(cache) == 10 and cache.size <= cache.max_bytes and cache.evictions == 15
    assert cache.get(keys[0]) is not None and cache.get(keys[1]) is None and cache.get(keys[24]) is not None


# --- the server's handling of one message (no sockets) -------------------------------------------


def test_repeated_queries_get_their_own_id_and_fresh_answers_after_a_change(zone: dnszone.ClusterZone,
                                                                            tmp_path: Path) -> None:
    forwarder = dnsforward.Forwarder(dnsforward.Upstreams(tmp_path / "none"), cache=dnscache.Cache(max_bytes=1 << 20))
    informers_synced = [True]
    server = dnsserver.DnsServer(zone, forwarder, address="127.0.0.1", synced=lambda: informers_synced[0])

    def ask_server(qid: int) -> dns.message.Message:
        q = dns.message.make_query("KUBERNETES.default.svc.cluster.local.", "A")
        q.id = qid
        out = server.handle(q.to_wire(), tcp=False)
        assert isinstance(out, bytes)
        return dns.message.from_wire(out)

    first, second = ask_server(1), ask_server(2)
    assert (first.id, second.id) == (1, 2)
    assert rrsets_text(second) == rrsets_text(first) == ["KUBERNETES.default.svc.cluster.local. 5 IN A 10.43.0.1"]
    zone.set_service(service("kubernetes", ip="10.43.0.2", ports=[{"name": "https", "port": 443, "protocol": "TCP"}]))
    assert rrsets_text(ask_server(3)) == ["KUBERNETES.default.svc.cluster.local. 5 IN A 10.43.0.2"]
    zone.delete_namespace(namespace("default"))
    assert ask_server(4).rcode() == dns.rcode.NXDOMAIN
    zone.set_namespace(namespace("default"))
    zone.synced, informers_synced[0] = False, False
    nx = dns.message.make_query("nope.default.svc.cluster.local.", "A")
    assert dns.message.from_wire(server.handle(nx.to_wire(), tcp=False)).rcode() == dns.rcode.SERVFAIL  # type: ignore[arg-type]
    informers_synced[0] = True  # the server notices on the next query, and answers anew
    assert dns.message.from_wire(server.handle(nx.to_wire(), tcp=False)).rcode() == dns.rcode.NXDOMAIN  # type: ignore[arg-type]


def rrsets_text(msg: dns.message.Message) -> list[str]:
    return [line for rrset in msg.answer for line in rrset.to_text().splitlines()]
