"""The cluster's DNS zone: records for Services, their endpoints and pods, answered as CoreDNS's
kubernetes plugin answers them (plugin/kubernetes, and plugin/backend_lookup.go for how its
answers become records), which implements the Kubernetes DNS specification (kubernetes/dns,
docs/specification.md).

**Data.** The server's informers feed `set_service`/`delete_service`,
`set_slice`/`delete_slice` and `set_namespace`/`delete_namespace` with the API objects; each is
reduced at once to a small frozen record (what CoreDNS's object.ToService and
EndpointSliceToEndpoints keep: names, cluster IPs, ports, the ready addresses with their
hostnames) and put in the indexes CoreDNS keeps: services by `name.namespace`, slices by the
Service they belong to (their `kubernetes.io/service-name` label), and both by IP for PTR. A
query reads those indexes and never scans a list. `serial` (the SOA serial) is the Unix time of
the last change, as CoreDNS's.

**Names** below the zone (`cluster.local` by default), compared without case:

    <svc>.<ns>.svc                 A/AAAA: the cluster IPs; headless: every ready endpoint IP;
                                   ExternalName: a CNAME to the external name
    <endpoint>.<svc>.<ns>.svc      the endpoint whose hostname (else its dashed IP) is <endpoint>
    _<port>._<proto>.<svc>.<ns>.svc  SRV per matching named port (the plain service name answers
                                   SRV for every port); headless: one per endpoint and port, with
                                   the endpoints' A records in the additional section
    <a-b-c-d>.<ns>.pod             A a.b.c.d, unchecked (`pods insecure`, as k3s and kubeadm
                                   configure CoreDNS); IPv6 with dashes for colons
    <ns>.svc, svc, pod, the apex   NODATA (the namespace must exist)
    dns-version                    TXT "1.1.0"
    ns.dns                         A: the cluster DNS address; the apex answers SOA and NS

Everything else below the zone is NXDOMAIN, with the zone's SOA in the authority section (TTL
and minimum 5, the record TTL, as CoreDNS's defaults). A name that exists without records of
the asked type is NODATA: NOERROR, no answer, the SOA. An unknown namespace is NXDOMAIN. Until
the informers have synced, what would be NXDOMAIN is SERVFAIL (CoreDNS's answer while it
syncs), so a pod starting with the node never caches a wrong negative.

**Reverse names** (in-addr.arpa, ip6.arpa): a PTR for a Service's cluster IP
(`<svc>.<ns>.svc.<zone>`) or an endpoint's IP (`<endpoint>.<svc>.<ns>.svc.<zone>`, one per
Service that has it); any other reverse name is not this zone's (`answer` returns None) and is
forwarded upstream, as k3s's `fallthrough in-addr.arpa ip6.arpa` does.

An ExternalName whose target lies outside the zone is resolved by the caller: the answer then
carries `chase` (the target and type), and the server appends what the upstream says.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdatatype import RdataType
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

JSON = dict[str, Any]
TTL = 5  # CoreDNS's kubernetes plugin's default
SOA_TTL_CAP = 300
DNS_SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800
MAX_CNAME_CHAIN = 10
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
IN = dns.rdataclass.IN
_A, _AAAA, _SRV, _PTR, _TXT = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV, dns.rdatatype.PTR, dns.rdatatype.TXT
_CNAME, _NS, _SOA, _MX = dns.rdatatype.CNAME, dns.rdatatype.NS, dns.rdatatype.SOA, dns.rdatatype.MX
_REVERSE_ZONES = (dns.name.from_text("in-addr.arpa."), dns.name.from_text("ip6.arpa."))


# --- the records kept per object (what CoreDNS's object package keeps) ----------------------------


@dataclasses.dataclass(frozen=True)
class Port:
    name: str
    port: int  # -1: the object names no port (SRV skips it)
    protocol: str


NO_PORT = (Port("", -1, ""),)


@dataclasses.dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]  # canonical; ("None",) for a headless Service
    external_name: str
    ports: tuple[Port, ...]

    @property
    def key(self) -> str:
        return f"{self.name}.{self.namespace}"

    @property
    def headless(self) -> bool:
        return bool(self.cluster_ips) and self.cluster_ips[0] == "None"


@dataclasses.dataclass(frozen=True)
class Address:
    ip: str  # canonical
    hostname: str  # the endpoint's hostname, "" when it has none
    target_name: str  # the pod's name (kept for CoreDNS's endpoint_pod_names; unused by default)


@dataclasses.dataclass(frozen=True)
class Slice:
    namespace: str
    name: str
    service: str  # the Service's name, from the slice's kubernetes.io/service-name label
    ports: tuple[Port, ...]
    addresses: tuple[Address, ...]  # ready endpoints only, as CoreDNS keeps them

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def service_key(self) -> str:
        return f"{self.service}.{self.namespace}"


def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _ports(items: Iterable[Any], *, default_protocol: str) -> tuple[Port, ...]:
    out = []
    for p in items:
        if not isinstance(p, Mapping):
            continue
        port = p.get("port")
        out.append(Port(str(p.get("name") or ""), port if isinstance(port, int) else -1,
                        str(p.get("protocol") or default_protocol)))
    return tuple(out) or NO_PORT


def service_record(obj: Mapping[str, Any]) -> Service:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    raw_ips = spec.get("clusterIPs") or [spec.get("clusterIP") or ""]
    ips: list[str] = []
    for text in raw_ips:
        if text == "None":
            ips.append("None")
        elif (ip := _canonical_ip(str(text))) is not None:
            ips.append(ip)
    # A Service's ports default to TCP (the API server defaults them; a record without is TCP).
    return Service(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
                   type=str(spec.get("type") or "ClusterIP"), cluster_ips=tuple(ips),
                   external_name=str(spec.get("externalName") or ""),
                   ports=_ports(spec.get("ports") or [], default_protocol="TCP"))


def slice_record(obj: Mapping[str, Any]) -> Slice:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    addresses: list[Address] = []
    for ep in obj.get("endpoints") or []:
        if not isinstance(ep, Mapping):
            continue
        if (ep.get("conditions") or {}).get("ready") is False:  # unset counts as ready
            continue
        ref = ep.get("targetRef") or {}
        target = str(ref.get("name") or "") if isinstance(ref, Mapping) else ""
        for text in ep.get("addresses") or []:
            ip = _canonical_ip(str(text))
            if ip is None:  # an FQDN slice: nothing CoreDNS can answer with
                continue
            addresses.append(Address(ip=ip, hostname=str(ep.get("hostname") or ""),
                                     target_name=target if len(target) < 64 else ""))
    return Slice(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
                 service=str(labels.get(SERVICE_NAME_LABEL) or ""),
                 ports=_ports(obj.get("ports") or [], default_protocol=""), addresses=tuple(addresses))


def endpoint_hostname(addr: Address) -> str:
    """CoreDNS's endpointHostname: the hostname, else the IP with dashes (IPv6: colons become
    dashes, and a trailing dash gets a 0)."""
    if addr.hostname:
        return addr.hostname
    if "." in addr.ip:
        return addr.ip.replace(".", "-")
    dashed = addr.ip.replace(":", "-")
    return dashed + "0" if dashed.endswith("-") else dashed


# --- answers ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    """What to put in the response. `chase`: an ExternalName's outside target still to resolve
    (its records go after `answer`, which then holds the CNAME)."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = dataclasses.field(default_factory=list)
    authority: list[dns.rrset.RRset] = dataclasses.field(default_factory=list)
    additional: list[dns.rrset.RRset] = dataclasses.field(default_factory=list)
    authoritative: bool = True
    chase: tuple[dns.name.Name, RdataType] | None = None


@dataclasses.dataclass(frozen=True)
class _Request:
    """CoreDNS's recordRequest: the query name's labels below the zone, lowercased."""

    pod_or_svc: str = ""
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""


class _NameError(Exception):
    """The name does not exist (CoreDNS's errNoItems, errNsNotExposed, errInvalidRequest)."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One msg.Service of CoreDNS: a host (an IP, or a domain name for ExternalName), a port, and
    the record's own name as labels below the zone (an SRV's target)."""

    host: str
    port: int
    labels: tuple[str, ...]
    family: int  # 4, 6, or 0 for a name (a CNAME)


def _family(ip: str) -> int:
    """4 or 6 for a canonical IP address."""
    return 6 if ":" in ip else 4


def _strip_underscore(label: str) -> str:
    return label[1:] if label.startswith("_") else label


def _match(want: str, have: str) -> bool:
    return want == have or want.lower() == have.lower()


def _port_matches(req: _Request, port: Port) -> bool:
    return (not req.port or _match(req.port, port.name)) and (not req.protocol or _match(req.protocol, port.protocol))


def _text(label: bytes) -> str:
    return label.lower().decode("latin-1")


class ClusterZone:
    """The cluster zone and its indexes (see the module doc). Not thread-safe: the event loop
    owns it, informer handlers write it, queries read it."""

    def __init__(self, *, domain: str, ttl: int = TTL, local_ips: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.origin = dns.name.from_text(domain.strip(".") + ".")
        self.ttl = ttl
        # The addresses this server listens on that are not loopback (CoreDNS's localIPs): the
        # NS records name the Service whose endpoint each one is.
        self.local_ips = [ip for ip in (_canonical_ip(t) for t in local_ips)
                          if ip is not None and not ipaddress.ip_address(ip).is_loopback]
        self._clock = clock
        self.serial = int(clock())
        # Bumped by every change that can change an answer (namespaces and the sync too, which the
        # serial, as CoreDNS's, does not count): answers computed earlier are stale once it moves.
        self.generation = 0
        self._synced = False
        self._services: dict[str, Service] = {}
        self._slices: dict[str, Slice] = {}
        self._slices_by_service: dict[str, dict[str, Slice]] = {}
        self._services_by_ip: dict[str, dict[str, Service]] = {}
        self._slices_by_ip: dict[str, dict[str, Slice]] = {}
        self._namespaces: set[str] = set()

    # --- feeding ---------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced

    @synced.setter
    def synced(self, value: bool) -> None:
        if value != self._synced:
            self._synced = value
            self.generation += 1

    def _changed(self) -> None:
        self.serial = int(self._clock())
        self.generation += 1

    def set_service(self, obj: Mapping[str, Any]) -> None:
        svc = service_record(obj)
        old = self._services.get(svc.key)
        if old == svc:
            return
        if old is not None:
            self._unindex_service(old)
        self._services[svc.key] = svc
        for ip in svc.cluster_ips:
            self._services_by_ip.setdefault(ip, {})[svc.key] = svc
        self._changed()

    def delete_service(self, obj: Mapping[str, Any]) -> None:
        old = self._services.pop(service_record(obj).key, None)
        if old is not None:
            self._unindex_service(old)
            self._changed()

    def _unindex_service(self, svc: Service) -> None:
        for ip in svc.cluster_ips:
            _discard(self._services_by_ip, ip, svc.key)

    def set_slice(self, obj: Mapping[str, Any]) -> None:
        sl = slice_record(obj)
        if not sl.service:  # a slice of no Service (no kubernetes.io/service-name label) names nothing
            self.delete_slice(obj)
            return
        old = self._slices.get(sl.key)
        if old == sl:
            return
        if old is not None:
            self._unindex_slice(old)
        self._slices[sl.key] = sl
        self._slices_by_service.setdefault(sl.service_key, {})[sl.key] = sl
        for addr in sl.addresses:
            self._slices_by_ip.setdefault(addr.ip, {})[sl.key] = sl
        self._changed()

    def delete_slice(self, obj: Mapping[str, Any]) -> None:
        old = self._slices.pop(slice_record(obj).key, None)
        if old is not None:
            self._unindex_slice(old)
            self._changed()

    def _unindex_slice(self, sl: Slice) -> None:
        _discard(self._slices_by_service, sl.service_key, sl.key)
        for addr in sl.addresses:
            _discard(self._slices_by_ip, addr.ip, sl.key)

    def set_namespace(self, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if name not in self._namespaces:
            self._namespaces.add(name)
            self.generation += 1

    def delete_namespace(self, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if name in self._namespaces:
            self._namespaces.discard(name)
            self.generation += 1

    # --- answering -------------------------------------------------------------------------------

    def answer(self, qname: dns.name.Name, qtype: RdataType, qclass: int = IN) -> Answer | None:
        """The answer for a question, or None when the name is not this zone's (forward it)."""
        if qname.is_subdomain(self.origin):
            if qclass not in (IN, dns.rdataclass.ANY):
                return Answer(rcode=dns.rcode.REFUSED, authoritative=False)
            try:
                return self._zone_answer(qname, qtype)
            except (dns.exception.DNSException, ValueError):
                # An object this zone cannot turn into a record (an ExternalName that is no DNS
                # name, a name past 255 octets): a failure of this server, not a negative.
                return Answer(rcode=dns.rcode.SERVFAIL, authoritative=False)
        if qtype == _PTR and any(qname.is_subdomain(z) for z in _REVERSE_ZONES):
            return self._reverse_answer(qname)
        return None

    def _zone_labels(self, qname: dns.name.Name) -> tuple[bytes, ...]:
        """The zone's labels as the query spells them (CoreDNS keeps the query's case there)."""
        return qname.labels[len(qname.labels) - len(self.origin.labels):]

    def _name(self, labels: Iterable[str], zone: tuple[bytes, ...]) -> dns.name.Name:
        return dns.name.Name([label.encode("latin-1") for label in labels] + list(zone))

    def _soa(self, zone: tuple[bytes, ...]) -> dns.rrset.RRset:
        apex = dns.name.Name(zone)
        rrset = dns.rrset.RRset(apex, IN, _SOA)
        rrset.add(_soa_rdata(self._name(["ns", "dns"], zone), self._name(["hostmaster"], zone),
                             self.serial & 0xFFFFFFFF, self.ttl), min(self.ttl, SOA_TTL_CAP))
        return rrset

    def _zone_answer(self, qname: dns.name.Name, qtype: RdataType) -> Answer:
        zone = self._zone_labels(qname)
        rel = tuple(_text(label) for label in qname.labels[:len(qname.labels) - len(zone)])
        out = Answer()
        try:
            if qtype in (_A, _AAAA):
                out.answer, out.chase = self._address_records(qname, rel, zone, qtype, depth=0)
            elif qtype == _TXT:
                if rel == ("dns-version",):
                    rrset = dns.rrset.RRset(qname, IN, _TXT)
                    rrset.add(TXT(IN, _TXT, [DNS_SCHEMA_VERSION.encode()]), DNS_VERSION_TTL)
                    out.answer = [rrset]
                elif not self._records(rel):  # a name without records answers TXT with NXDOMAIN
                    raise _NameError
            elif qtype == _CNAME:
                entries = self._lookup(rel, qtype)
                if entries and entries[0].family == 0:
                    out.answer = [self._cname(qname, entries[0].host)]
            elif qtype == _SRV:
                out.answer, out.additional = self._srv(qname, rel, zone)
            elif qtype == _SOA:
                if not rel:  # only the apex has one; any other name is NODATA, existing or not
                    out.answer = [self._soa(zone)]
            elif qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
                return Answer(rcode=dns.rcode.REFUSED, authoritative=False)
            elif qtype == _NS and not rel:
                out.answer, out.additional = self._ns(qname, zone)
            else:  # PTR, MX, NS below the apex and every other type: the name exists or not; no records
                self._lookup(rel, qtype)
        except _NameError:
            # CoreDNS answers SERVFAIL until it has synced, rather than a negative a client caches.
            return Answer(rcode=dns.rcode.NXDOMAIN if self.synced else dns.rcode.SERVFAIL,
                          authority=[self._soa(zone)])
        if not out.answer and out.chase is None:
            out.authority = [self._soa(zone)]  # NODATA
        return out

    def _lookup(self, rel: tuple[str, ...], qtype: RdataType) -> list[_Entry]:
        """CoreDNS's Services (for every type but TXT and NS): `ns.dns` is this server's own
        address records; the apex has none; any other name is looked up."""
        if rel == ("ns", "dns"):
            return [_Entry(ip, -1, rel, _family(ip)) for _, ip in self._ns_addresses()
                    if qtype in (_A, _AAAA) and _family(ip) == (4 if qtype == _A else 6)]
        return self._records(rel)

    def _ns_addresses(self) -> list[tuple[tuple[str, ...], str]]:
        """CoreDNS's nsAddrs: for each local address, the Service it is an endpoint of (its
        cluster IPs under its name; a headless one's endpoints under theirs), else the address
        itself as `ns.dns.<zone>`."""
        out: list[tuple[tuple[str, ...], str]] = []
        found = False
        for ip in self.local_ips:
            for sl in self._slices_by_ip.get(ip, {}).values():
                found = True
                svc = self._services.get(sl.service_key)
                if svc is None:
                    continue
                base = (svc.name, svc.namespace, "svc")
                if svc.headless:
                    out.extend(((endpoint_hostname(a), *base), a.ip) for a in sl.addresses)
                else:
                    out.extend((base, cip) for cip in svc.cluster_ips)
        if not found:
            out = [(("ns", "dns"), ip) for ip in self.local_ips]
        return out

    def _ns(self, qname: dns.name.Name, zone: tuple[bytes, ...]) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        ns_set = dns.rrset.RRset(qname, IN, _NS)
        extra: dict[tuple[dns.name.Name, RdataType], dns.rrset.RRset] = {}
        for labels, ip in self._ns_addresses():
            target = self._name(labels, zone)
            ns_set.add(_name_rdata(NS, _NS, target), self.ttl)
            _add_address(extra, target, ip, self.ttl)
        return ([ns_set] if ns_set else []), list(extra.values())

    def _cname(self, owner: dns.name.Name, target: str) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(owner, IN, _CNAME)
        rrset.add(_name_rdata(CNAME, _CNAME, dns.name.from_text(target.rstrip(".") + ".")), self.ttl)
        return rrset

    def _address_records(self, qname: dns.name.Name, rel: tuple[str, ...], zone: tuple[bytes, ...], qtype: RdataType, *,
                         depth: int) -> tuple[list[dns.rrset.RRset], tuple[dns.name.Name, RdataType] | None]:
        """plugin.A / plugin.AAAA: address records, following an ExternalName inside the zone
        (up to 10 links), or leaving an outside target to the caller (`chase`)."""
        family = 4 if qtype == _A else 6
        # The apex: CoreDNS first tries apex.dns.<zone>, which never holds a record: NODATA.
        entries = self._lookup(rel, qtype) if rel else []
        rrset = dns.rrset.RRset(qname, IN, qtype)
        records: list[dns.rrset.RRset] = []
        chase = None
        for e in entries:
            if e.family == family:
                rrset.add((A if family == 4 else AAAA)(IN, qtype, e.host), self.ttl)
            elif e.family == 0:
                target = dns.name.from_text(e.host.rstrip(".") + ".")
                if target == qname or depth >= MAX_CNAME_CHAIN:
                    continue
                cname = self._cname(qname, e.host)
                if not target.is_subdomain(self.origin):
                    records.append(cname)
                    chase = (target, qtype)
                    continue
                t_zone = self._zone_labels(target)
                t_rel = tuple(_text(lb) for lb in target.labels[:len(target.labels) - len(t_zone)])
                try:
                    nxt, nxt_chase = self._address_records(target, t_rel, t_zone, qtype, depth=depth + 1)
                except _NameError:
                    continue
                if nxt:  # a CNAME into the zone that leads nowhere is left out, as CoreDNS does
                    records += [cname, *nxt]
                    chase = chase or nxt_chase
        if rrset:
            records.insert(0, rrset)
        return records, chase

    def _srv(self, qname: dns.name.Name, rel: tuple[str, ...],
             zone: tuple[bytes, ...]) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        """plugin.SRV: weights spread 100 over the records of a priority (all 0 here), targets
        the records' own names, their addresses in the additional section."""
        entries = [e for e in self._lookup(rel, _SRV) if e.family != 0]
        weight = max(1, math.floor(100.0 / (100 * len(entries)) * 100)) if entries else 0
        srv = dns.rrset.RRset(qname, IN, _SRV)
        extra: dict[tuple[dns.name.Name, RdataType], dns.rrset.RRset] = {}
        for e in entries:
            if e.port == -1:
                continue
            target = self._name(e.labels, zone)
            srv.add(SRV(IN, _SRV, 0, weight, e.port, target), self.ttl)  # type: ignore[no-untyped-call]
            _add_address(extra, target, e.host, self.ttl)
        return ([srv] if srv else []), list(extra.values())

    def _parse(self, rel: tuple[str, ...]) -> _Request:
        """CoreDNS's parseRequest (read from the right): pod|svc, namespace, service, then an
        endpoint, or port and protocol; more labels than that is no name at all."""
        if not rel or rel in (("svc",), ("pod",)):
            return _Request()
        segs = list(rel)
        kind = segs.pop()
        if kind not in ("svc", "pod"):
            raise _NameError
        if not segs:
            return _Request(pod_or_svc=kind)
        namespace = segs.pop()
        if not segs:
            return _Request(pod_or_svc=kind, namespace=namespace)
        service = segs.pop()
        if not segs:
            return _Request(pod_or_svc=kind, namespace=namespace, service=service)
        if len(segs) == 1:
            return _Request(pod_or_svc=kind, namespace=namespace, service=service, endpoint=segs[0])
        if len(segs) == 2:
            return _Request(pod_or_svc=kind, namespace=namespace, service=service,
                            port=_strip_underscore(segs[0]), protocol=_strip_underscore(segs[1]))
        raise _NameError

    def _records(self, rel: tuple[str, ...]) -> list[_Entry]:
        """CoreDNS's Records: the entries for a name (empty: the name exists without records),
        or _NameError."""
        req = self._parse(rel)
        if not req.pod_or_svc:
            return []
        if req.namespace not in self._namespaces:
            raise _NameError
        if req.pod_or_svc == "pod":
            return self._pod(req)
        if not req.service:
            return []
        return self._services_for(req)

    def _pod(self, req: _Request) -> list[_Entry]:
        name = req.service
        if not name:
            return []
        ip_text = name.replace("-", ".") if name.count("-") == 3 and "--" not in name else name.replace("-", ":")
        ip = _canonical_ip(ip_text)
        if ip is None:
            raise _NameError
        # Port 0, not "none": CoreDNS answers SRV for a pod name, with port 0.
        return [_Entry(ip, 0, (name, req.namespace, "pod"), _family(ip))]

    def _services_for(self, req: _Request) -> list[_Entry]:
        """CoreDNS's findServices."""
        key = f"{req.service}.{req.namespace}"
        svc = self._services.get(key)
        found = False
        out: list[_Entry] = []
        if svc is None:
            raise _NameError
        base = (svc.name, svc.namespace, "svc")
        if svc.type == "ExternalName":
            if req.endpoint or req.port or req.protocol:
                raise _NameError
            if not svc.external_name or _canonical_ip(svc.external_name) is not None:
                raise _NameError  # an IP there makes no CNAME: CoreDNS serves nothing for it
            return [_Entry(svc.external_name, -1, base, 0)]
        if svc.headless or req.endpoint:
            for sl in self._slices_by_service.get(key, {}).values():
                for addr in sl.addresses:
                    hostname = endpoint_hostname(addr)
                    if req.endpoint and not _match(req.endpoint, hostname):
                        continue
                    for p in sl.ports:
                        if _port_matches(req, p):
                            found = True
                            out.append(_Entry(addr.ip, p.port, (hostname, *base), _family(addr.ip)))
        else:
            for p in svc.ports:
                if not _port_matches(req, p):
                    continue
                found = True
                out.extend(_Entry(ip, p.port, base, _family(ip)) for ip in svc.cluster_ips if ip != "None")
        if not found:
            raise _NameError
        return out

    def _reverse_answer(self, qname: dns.name.Name) -> Answer | None:
        """CoreDNS's serviceRecordForIP: the first Service with that cluster IP, else every
        endpoint with it; nothing known: not ours (forwarded)."""
        try:
            ip = _canonical_ip(dns.reversename.to_address(qname))
        except (dns.exception.SyntaxError, ValueError):
            return None
        if ip is None:
            return None
        targets: list[tuple[str, ...]] = []
        for svc in self._services_by_ip.get(ip, {}).values():
            targets = [(svc.name, svc.namespace, "svc")]
            break
        else:
            for sl in self._slices_by_ip.get(ip, {}).values():
                targets.extend((endpoint_hostname(a), sl.service, sl.namespace, "svc") for a in sl.addresses
                               if a.ip == ip)
        if not targets:
            return None
        rrset = dns.rrset.RRset(qname, IN, _PTR)
        zone = tuple(self.origin.labels)
        for labels in targets:
            rrset.add(_name_rdata(PTR, _PTR, self._name(labels, zone)), self.ttl)
        return Answer(answer=[rrset])


def _soa_rdata(mname: dns.name.Name, rname: dns.name.Name, serial: int, minimum: int) -> SOA:
    return SOA(IN, _SOA, mname, rname, serial, 7200, 1800, 86400, minimum)  # type: ignore[no-untyped-call]


def _name_rdata(cls: type[CNAME] | type[NS] | type[PTR], rdtype: RdataType, target: dns.name.Name) -> dns.rdata.Rdata:
    return cls(IN, rdtype, target)


def _add_address(extra: dict[tuple[dns.name.Name, RdataType], dns.rrset.RRset], owner: dns.name.Name, ip: str,
                 ttl: int) -> None:
    family = _family(ip)
    rdtype: RdataType = _A if family == 4 else _AAAA
    rrset = extra.get((owner, rdtype))
    if rrset is None:
        rrset = extra[(owner, rdtype)] = dns.rrset.RRset(owner, IN, rdtype)
    rrset.add((A if family == 4 else AAAA)(IN, rdtype, ip), ttl)


def _discard(index: dict[str, dict[str, Any]], key: str, member: str) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(member, None)
        if not bucket:
            del index[key]
