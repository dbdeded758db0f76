"""Section 8: cluster DNS, queries/s and latency against a bare dnspython server, and memory
under a flood of distinct names.

    .venv/bin/python benchmarks/dns_bench.py [--seconds 5] [--rounds 3] [--flood 50000]

Root: everything runs inside a network namespace of its own (tests/support/netns.py), loopback
only, nothing in the host's namespace. In it: `edgekube server` (kubelet off) with its cluster
DNS on its default address, the pod gateway 10.42.0.1 (put on the namespace's loopback), and
`benchmarks/dns_bare_server.py` on 198.18.0.1 port 53: the least a DNS server built on the same
library does (from_wire, make_response with one fixed A record, to_wire, the same asyncio UDP
transport). edgekube's resolv.conf names the bare server, so it is also the upstream of the
forwarded rows.

The load comes from a thread of this process inside the namespace: one UDP socket, a closed loop
keeping `window` queries outstanding (each answer sends the next question), for `seconds` per
run; latency is send to receive of each query. The rows: one cluster name asked again and again
(A of kubernetes.default.svc.cluster.local, what pods do) at window 32, for queries/s, and at
window 1, for p50 and p99 latency; 65,536 distinct cluster names in turn (pod names, more than
edgekube keeps answers for, so each is computed); the bare server the same; a forwarded name
answered from edgekube's cache. The
edgekube and bare runs alternate over `rounds` rounds (medians reported), so a change in the
machine's load moves both. Then `flood` distinct names (each forwarded once, then cached) twice
over: VmRSS of edgekube before, after the first flood and after the second, to show the cache's
bound holds (the second flood evicts, it does not add).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import select
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import yaml  # noqa: E402

from benchmarks import common, servers  # noqa: E402
from tests.support import netns as netns_mod  # noqa: E402

DNS_IP = "10.42.0.1"
BARE_IP = f"{netns_mod.OUTSIDE_NET}.1"
CLUSTER_NAME = "kubernetes.default.svc.cluster.local."
FORWARDED_NAME = "www.example.com."
WINDOW = 32
EXPIRE_S = 1.0  # a query unanswered this long counts as lost and its slot is reused
IDS = 4096
DISTINCT = 65536


@dataclasses.dataclass
class Run:
    qps: float
    p50_ms: float
    p99_ms: float
    answered: int
    lost: int
    rcodes: dict[str, int]


@dataclasses.dataclass
class DnsResult:
    seconds: float
    rounds: int
    cluster: list[Run]  # edgekube, one cluster name asked again and again, window 32, per round
    bare: list[Run]  # bare server, the same queries
    distinct: list[Run]  # edgekube, 65,536 distinct cluster names in turn (each answer computed)
    bare_distinct: list[Run]
    cluster_latency: list[Run]  # window 1
    bare_latency: list[Run]
    forwarded: list[Run]  # edgekube, forwarded name from its cache, window 32
    flood: int
    rss_idle_mib: float
    rss_flood_mib: float  # after the first flood
    rss_second_mib: float  # after the second flood
    flood_qps: float
    cache_entries: int

    @staticmethod
    def median(runs: list[Run], attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in runs))

    def ratio(self) -> float:
        return self.median(self.cluster, "qps") / self.median(self.bare, "qps")

    def distinct_ratio(self) -> float:
        return self.median(self.distinct, "qps") / self.median(self.bare_distinct, "qps")


def _wires(names: Callable[[int], str], count: int) -> list[bytes]:
    out = []
    for i in range(count):
        q = dns.message.make_query(names(i), "A")
        q.id = i % IDS
        out.append(q.to_wire())
    return out


def load(address: str, wires: list[bytes], *, window: int, seconds: float, port: int = 53, once: bool = False) -> Run:
    """Closed loop: `window` queries outstanding; the wires are sent in turn (their IDs must be
    distinct modulo IDS within a window), for `seconds`, or (`once`) each wire once."""
    latencies: list[float] = []
    rcodes: collections.Counter[str] = collections.Counter()
    outstanding: dict[int, float] = {}
    lost = 0
    nxt = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((address, port))
        sock.setblocking(False)
        start = time.perf_counter()
        end = start + seconds
        while True:
            now = time.perf_counter()
            if now >= end or (once and nxt >= len(wires) and not outstanding):
                break
            while len(outstanding) < window and not (once and nxt >= len(wires)):
                wire = wires[nxt % len(wires)]
                qid = int.from_bytes(wire[:2], "big")
                if qid in outstanding:  # still in flight: wait for it (once), or skip to the next one
                    if once:
                        break
                    nxt += 1
                    continue
                nxt += 1
                outstanding[qid] = time.perf_counter()
                try:
                    sock.send(wire)
                except BlockingIOError:
                    break
            readable, _, _ = select.select([sock], [], [], 0.05)
            while readable:
                try:
                    data = sock.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                got = time.perf_counter()
                sent = outstanding.pop(int.from_bytes(data[:2], "big"), None)
                if sent is not None:
                    latencies.append(got - sent)
                    rcodes[dns.rcode.to_text(dns.rcode.from_flags(data[3], 0))] += 1
            stale = [q for q, t in outstanding.items() if now - t > EXPIRE_S]
            for q in stale:
                del outstanding[q]
                lost += 1
        elapsed = time.perf_counter() - start
    return Run(qps=len(latencies) / elapsed, p50_ms=1000 * common.percentile(latencies, 50),
               p99_ms=1000 * common.percentile(latencies, 99), answered=len(latencies), lost=lost,
               rcodes=dict(rcodes))


def _rss_mib(pid: int) -> float:
    return servers.read_rss_kib(pid) / 1024.0


def _wait_answer(ns: netns_mod.NetNS, address: str, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    q = dns.message.make_query(name, "A")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            r = ns.call(dns.query.udp, q, address, timeout=0.5)
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return
        except (OSError, dns.exception.Timeout):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no answer for {name} from {address} within 60 s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(seconds: float, rounds: int, flood: int, log: Callable[[str], None] = print) -> DnsResult:
    tmp = common.temp_dir("dns")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with netns_mod.namespaces("dnsbench") as (ns,):
            ns.run(["ip", "addr", "add", f"{DNS_IP}/32", "dev", "lo"])
            ns.run(["ip", "addr", "add", f"{BARE_IP}/32", "dev", "lo"])
            resolv = tmp / "resolv.conf"
            resolv.write_text(f"nameserver {BARE_IP}\n")
            config = tmp / "config.yaml"
            config.write_text(yaml.safe_dump({"dns": {"resolv-conf": str(resolv)}}))
            bare_log, ek_log = tmp / "bare.log", tmp / "edgekube.log"
            with bare_log.open("wb") as out:
                bare = ns.popen([sys.executable, str(_REPO / "benchmarks" / "dns_bare_server.py"), "--address", BARE_IP],
                                stdout=out, stderr=subprocess.STDOUT, cwd=_REPO)
            procs.append(bare)
            with ek_log.open("wb") as out:
                ek = ns.popen([sys.executable, "-m", "edgekube", "server", "--data-dir", str(tmp / "data"),
                               "--bind-address", "127.0.0.1", "--https-port", str(servers.free_port()),
                               "--disable", "kubelet", "--config", str(config)],
                              stdout=out, stderr=subprocess.STDOUT, cwd=_REPO)
            procs.append(ek)
            _wait_answer(ns, BARE_IP, "ready.example.", bare, bare_log)
            _wait_answer(ns, DNS_IP, CLUSTER_NAME, ek, ek_log)
            cluster_wires = _wires(lambda i: CLUSTER_NAME, IDS)
            # pod names of 65,536 addresses: more distinct questions than edgekube keeps answers for
            distinct_wires = _wires(lambda i: f"10-42-{i // 256}-{i % 256}.default.pod.cluster.local.", DISTINCT)
            forwarded_wires = _wires(lambda i: FORWARDED_NAME, IDS)
            ns.call(load, DNS_IP, cluster_wires, window=WINDOW, seconds=1.0)  # warm-up
            ns.call(load, BARE_IP, cluster_wires, window=WINDOW, seconds=1.0)
            ns.call(load, DNS_IP, forwarded_wires, window=1, seconds=0.5)
            result = DnsResult(seconds=seconds, rounds=rounds, cluster=[], bare=[], distinct=[], bare_distinct=[],
                               cluster_latency=[], bare_latency=[], forwarded=[], flood=flood, rss_idle_mib=0.0, rss_flood_mib=0.0, rss_second_mib=0.0,
                               flood_qps=0.0, cache_entries=0)
            for i in range(rounds):
                result.cluster.append(ns.call(load, DNS_IP, cluster_wires, window=WINDOW, seconds=seconds))
                result.bare.append(ns.call(load, BARE_IP, cluster_wires, window=WINDOW, seconds=seconds))
                result.distinct.append(ns.call(load, DNS_IP, distinct_wires, window=WINDOW, seconds=seconds))
                result.bare_distinct.append(ns.call(load, BARE_IP, distinct_wires, window=WINDOW, seconds=seconds))
                result.cluster_latency.append(ns.call(load, DNS_IP, cluster_wires, window=1, seconds=seconds / 2))
                result.bare_latency.append(ns.call(load, BARE_IP, cluster_wires, window=1, seconds=seconds / 2))
                result.forwarded.append(ns.call(load, DNS_IP, forwarded_wires, window=WINDOW, seconds=seconds / 2))
                log(f"  round {i + 1}: one name: edgekube {result.cluster[-1].qps:,.0f} q/s (p99 "
                    f"{result.cluster_latency[-1].p99_ms:.2f} ms), bare {result.bare[-1].qps:,.0f} q/s (p99 "
                    f"{result.bare_latency[-1].p99_ms:.2f} ms); distinct names: edgekube "
                    f"{result.distinct[-1].qps:,.0f} q/s, bare {result.bare_distinct[-1].qps:,.0f} q/s; "
                    f"forwarded from cache {result.forwarded[-1].qps:,.0f} q/s")
            time.sleep(2.0)
            result.rss_idle_mib = _rss_mib(ek.pid)
            flood_wires = _wires(lambda i: f"flood-{i}.example.org.", flood)
            started = time.perf_counter()
            answered = 0
            for n in range(2):
                # distinct names: each misses the cache, goes upstream, is cached (evicting others)
                answered += ns.call(load, DNS_IP, flood_wires, window=64, seconds=600.0, once=True).answered
                time.sleep(2.0)
                if n == 0:
                    result.rss_flood_mib = _rss_mib(ek.pid)
                else:
                    result.rss_second_mib = _rss_mib(ek.pid)
            result.flood_qps = answered / (time.perf_counter() - started - 4.0)
            result.cache_entries = _cache_entries(ns)
            log(f"  flood of {flood:,} distinct names x2: RSS {result.rss_idle_mib:.1f} -> {result.rss_flood_mib:.1f} -> "
                f"{result.rss_second_mib:.1f} MiB, {result.flood_qps:,.0f} q/s, {result.cache_entries:,} cached")
            for p in procs:
                _stop(p)
            return result
    finally:
        for p in procs:
            _stop(p)
        common.remove_dir(tmp)


def _cache_entries(ns: netns_mod.NetNS) -> int:
    def scrape() -> str:
        with urllib.request.urlopen(f"http://{DNS_IP}:9153/metrics", timeout=3) as r:
            return str(r.read().decode())
    for line in ns.call(scrape).splitlines():
        if line.startswith("coredns_cache_entries "):
            return int(line.split()[1])
    return -1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--flood", type=int, default=50000)
    args = p.parse_args()
    started = time.monotonic()
    r = run(args.seconds, args.rounds, args.flood)
    med = DnsResult.median
    print(f"cluster name: edgekube {med(r.cluster, 'qps'):,.0f} q/s, bare dnspython {med(r.bare, 'qps'):,.0f} q/s "
          f"({100 * r.ratio():.0f}%); window 1 p50/p99 edgekube {med(r.cluster_latency, 'p50_ms'):.2f}/"
          f"{med(r.cluster_latency, 'p99_ms'):.2f} ms, bare {med(r.bare_latency, 'p50_ms'):.2f}/"
          f"{med(r.bare_latency, 'p99_ms'):.2f} ms")
    print(f"distinct cluster names: edgekube {med(r.distinct, 'qps'):,.0f} q/s, bare {med(r.bare_distinct, 'qps'):,.0f} "
          f"q/s ({100 * r.distinct_ratio():.0f}%)")
    print(f"forwarded name from the cache: {med(r.forwarded, 'qps'):,.0f} q/s")
    print(f"flood: RSS idle {r.rss_idle_mib:.1f} MiB, after {r.flood:,} distinct names {r.rss_flood_mib:.1f} MiB, "
          f"after {r.flood:,} more {r.rss_second_mib:.1f} MiB; {r.cache_entries:,} entries cached")
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
