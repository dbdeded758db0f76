"""Section 8: the service proxy (nftables), inside network namespaces of its own.

    .venv/bin/python benchmarks/proxy_bench.py [--quick]

Everything runs in namespaces made for the run (tests/support/netns.py, tests/support/nspods.py):
edgekube (network on, kubelet off) in a `node` namespace with a bridge and stand-in pods, each a
namespace with a veth on the bridge. No packet leaves them; they are deleted at the end.

- Rule sync: 100 Services of 2 endpoints each. One at a time, one EndpointSlice is rewritten
  with a new endpoint address (HTTPS PUT from inside the namespace); `nft monitor rules` in the
  node namespace timestamps the moment the new DNAT rule is in the kernel. Latency from the PUT
  sent and from its answer. Baseline: the kernel's own cost of such a change: an `nft -f` batch
  of the same shape (a new endpoint chain, the service chain flushed and rewritten) from exec to
  the same monitor line. The same again with 1,000 Services (for information).
- Full table: 1,000 Services of 2 endpoints each in the store; edgekube restarted; the proxy's
  boot sync (rules computed, table listed, one batch) as the proxy logs it. Baseline: `nft -f` of
  the very table edgekube wrote (`nft list table` output) into an empty namespace.
- Throughput and connection rate through a ClusterIP against the endpoint's own address, from a
  client pod to a server pod (Python sockets on both ends, interleaved rounds, medians):
  MB/s sending 64 MiB per connection, and connections/s (connect, read one byte, close).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import queue
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import aiohttp  # noqa: E402

from benchmarks import common, servers  # noqa: E402
from tests.support import netns as netns_mod  # noqa: E402
from tests.support import nspods  # noqa: E402

SYNC_TARGET_MS = 50.0
FULL_TARGET_S = 1.0
RATIO_TARGET = 0.9
SMALL, LARGE = 100, 1000
SINK_PORT, CONN_PORT = 9000, 9001
_FULL_LINE = re.compile(r"wrote table .*\((\d+) Services.*in ([0-9.]+) s \(rules computed in ([0-9.]+) s, "
                        r"table listed in ([0-9.]+) s, batch of (\d+) bytes applied in ([0-9.]+) s")

BENCH_SERVER = f"SINK_PORT, CONN_PORT = {SINK_PORT}, {CONN_PORT}\n" + r"""
import socket, sys, threading
def sink():
    s = socket.create_server(("0.0.0.0", SINK_PORT), backlog=512)
    while True:
        c, _ = s.accept()
        def drain(c=c):
            with c:
                n = 0
                while True:
                    b = c.recv(1 << 20)
                    if not b:
                        break
                    n += len(b)
                c.sendall(str(n).encode())
        threading.Thread(target=drain, daemon=True).start()
def conns():
    s = socket.create_server(("0.0.0.0", CONN_PORT), backlog=4096)
    while True:
        c, _ = s.accept()
        c.sendall(b"x")
        c.close()
threading.Thread(target=sink, daemon=True).start()
print("ready", flush=True)
conns()
"""


@dataclasses.dataclass
class FullSync:
    seconds: float  # informers synced -> batch applied
    computed: float  # of which the rules computed
    listed: float  # the table's names read
    batch_bytes: int
    batch: float  # nft applying the batch


@dataclasses.dataclass
class ProxyResult:
    sync_answered_ms: list[float]  # 100 Services: API answer -> rule in the kernel
    sync_sent_ms: list[float]  # PUT sent -> rule in the kernel
    raw_sync_ms: list[float]  # nft -f of the same shape: exec -> rule in the kernel
    large_sync_answered_ms: list[float]  # the same with 1,000 Services
    full: list[FullSync]  # boot syncs of 1,000 Services into an empty namespace, as the proxy logged them
    restart: list[FullSync]  # the same over the table the previous run left
    raw_full_s: list[float]  # nft -f of the same table into an empty namespace
    table_bytes: int
    ready_s: list[float]  # restart -> /readyz ok with 1,000 Services
    mbps_cluster: list[float] = dataclasses.field(default_factory=list)
    mbps_direct: list[float] = dataclasses.field(default_factory=list)
    cps_cluster: list[float] = dataclasses.field(default_factory=list)
    cps_direct: list[float] = dataclasses.field(default_factory=list)

    def sync_p(self, pct: float, which: str = "answered") -> float:
        return common.percentile(getattr(self, f"sync_{which}_ms"), pct)

    @staticmethod
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")


class Monitor:
    """`nft monitor rules` in the current namespace; lines with their arrival time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["nft", "monitor", "rules"], stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.2)  # subscribed before anything is measured

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))

    def drain(self) -> None:
        while not self.lines.empty():
            self.lines.get_nowait()

    async def wait(self, needle: str, within: float = 10.0) -> float:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                at, line = await asyncio.to_thread(self.lines.get, True, 0.5)
            except queue.Empty:
                continue
            if needle in line:
                return at
        raise RuntimeError(f"nft monitor never showed {needle!r}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def _slice(name: str, ips: list[str], *, rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": name}}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


async def _post(session: aiohttp.ClientSession, base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(base + path, json=body) as r:
        if r.status >= 300:
            raise RuntimeError(f"POST {path}: {r.status} {await r.text()}")
        return await r.json()  # type: ignore[no-any-return]


async def _make_services(session: aiohttp.ClientSession, base: str, first: int, last: int) -> dict[str, str]:
    """svc-<i> for i in [first, last) with 2 endpoints each; name -> resourceVersion of its slice."""
    sem = asyncio.Semaphore(16)
    versions: dict[str, str] = {}

    async def one(i: int) -> None:
        name = f"svc-{i}"
        async with sem:
            await _post(session, base, "/api/v1/namespaces/default/services", _service(name))
            created = await _post(session, base, SLICES, _slice(name, [f"10.42.{1 + i // 200}.{i % 200 + 2}",
                                                                        f"10.42.{1 + i // 200}.{i % 200 + 3}"]))
            versions[name] = created["metadata"]["resourceVersion"]

    await asyncio.gather(*(one(i) for i in range(first, last)))
    return versions


async def _sync_trials(session: aiohttp.ClientSession, base: str, monitor: Monitor, versions: dict[str, str],
                       *, count: int, offset: int) -> tuple[list[float], list[float]]:
    answered, sent = [], []
    names = sorted(versions)
    for t in range(count):
        name = names[(t * 7) % len(names)]
        new_ip = f"10.42.{100 + (offset + t) // 200}.{(offset + t) % 200 + 2}"
        body = _slice(name, [new_ip, "10.42.99.2"], rv=versions[name])
        monitor.drain()
        t_sent = time.monotonic()
        async with session.put(f"{base}{SLICES}/{name}", json=body) as r:
            out = await r.json()
            if r.status != 200:
                raise RuntimeError(f"PUT {name}: {r.status} {out}")
        t_answered = time.monotonic()
        versions[name] = out["metadata"]["resourceVersion"]
        seen = await monitor.wait(f"dnat ip to {new_ip}:8080")
        answered.append((seen - t_answered) * 1000)
        sent.append((seen - t_sent) * 1000)
        await asyncio.sleep(0.1)
    return answered, sent


async def _raw_sync(monitor: Monitor, count: int) -> list[float]:
    """nft -f of one endpoint change, shaped as the proxy's: exec -> the rule in the kernel."""
    setup = ("add table inet bench-raw\nadd chain inet bench-raw svc\nadd chain inet bench-raw ep-old\n"
             "add rule inet bench-raw ep-old meta l4proto tcp dnat ip to 10.42.99.2:8080\n"
             "add rule inet bench-raw svc numgen random mod 1 vmap { 0 : goto ep-old }\n")
    await _nft(setup)
    out = []
    for t in range(count):
        ip = f"10.42.250.{t % 200 + 2}"
        batch = (f"add chain inet bench-raw ep-{t}\n"
                 f"add rule inet bench-raw ep-{t} ip saddr {ip} jump ep-old\n"
                 f"add rule inet bench-raw ep-{t} meta l4proto tcp dnat ip to {ip}:8080\n"
                 "flush chain inet bench-raw svc\n"
                 f"add rule inet bench-raw svc numgen random mod 2 vmap {{ 0 : goto ep-old, 1 : goto ep-{t} }}\n")
        monitor.drain()
        t0 = time.monotonic()
        await _nft(batch)
        seen = await monitor.wait(f"dnat ip to {ip}:8080")
        out.append((seen - t0) * 1000)
        await asyncio.sleep(0.1)
    await _nft("delete table inet bench-raw\n")
    return out


async def _nft(script: str, *argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, "nft", "-f", "-", stdin=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise RuntimeError(f"nft: {err.decode()}")


def _full_sync_from_log(log: Path, services: int) -> FullSync:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        m = _FULL_LINE.search(line)
        if m and int(m.group(1)) >= services:
            return FullSync(seconds=float(m.group(2)), computed=float(m.group(3)), listed=float(m.group(4)),
                            batch_bytes=int(m.group(5)), batch=float(m.group(6)))
    raise RuntimeError(f"no full sync of {services} Services in {log}")


def _throughput(address: str, size: int) -> float:
    chunk = b"\0" * (1 << 20)
    t0 = time.perf_counter()
    with socket.create_connection((address, SINK_PORT), timeout=30) as s:
        for _ in range(size // len(chunk)):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
    if got != size:
        raise RuntimeError(f"sent {size} bytes through {address}, {got} arrived")
    return size / (time.perf_counter() - t0) / 1e6


def _conn_rate(address: str, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with socket.create_connection((address, CONN_PORT), timeout=5) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            if s.recv(1) != b"x":
                raise RuntimeError(f"no byte from {address}")
        n += 1
    return n / (time.perf_counter() - t0)


async def _rates(result: ProxyResult, pods: nspods.PodNet, cluster_ip: str, *, quick: bool) -> None:
    """Interleaved rounds, the order swapped every round (the machine's load moves both alike)."""
    client = pods.pods["client"]
    size = (16 if quick else 64) << 20
    direct = pods.addresses["server"]
    for r in range(2 if quick else 5):
        pairs = [(direct, result.mbps_direct, result.cps_direct), (cluster_ip, result.mbps_cluster, result.cps_cluster)]
        for target, mbps, _ in pairs[:: 1 if r % 2 == 0 else -1]:
            mbps.append(await asyncio.to_thread(client.call, _throughput, target, size))
        for target, _, cps in pairs[:: -1 if r % 2 == 0 else 1]:
            cps.append(await asyncio.to_thread(client.call, _conn_rate, target, 1.0 if quick else 2.0))


def run(*, quick: bool = False, log: Callable[[str], None] = print) -> ProxyResult:
    tmp = common.temp_dir("proxy")
    try:
        with netns_mod.namespaces("node", "raw") as (node, raw):
            pods = nspods.PodNet(node)
            try:
                pods.pod("server", 2)
                pods.pod("client", 10)
                proc = pods.pods["server"].popen([sys.executable, "-c", BENCH_SERVER], stdout=subprocess.PIPE)
                try:
                    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
                    return node.call(lambda: asyncio.run(_run(tmp, node, raw, pods, quick=quick, log=log)))
                finally:
                    proc.kill()
                    proc.wait()
            finally:
                pods.close()
    finally:
        common.remove_dir(tmp)


async def _run(tmp: Path, node: netns_mod.NetNS, raw: netns_mod.NetNS, pods: nspods.PodNet, *, quick: bool,
               log: Callable[[str], None]) -> ProxyResult:
    data = tmp / "data"
    trials = 10 if quick else 40
    srv = servers.EdgekubeServer(data, network=True)
    monitor = Monitor()
    try:
        await srv.wait_ready()
        conn = aiohttp.TCPConnector(ssl=srv.ssl_context(), limit=16)
        async with aiohttp.ClientSession(connector=conn) as session:
            versions = await _make_services(session, srv.base, 0, SMALL)
            await monitor.wait(f"dnat ip to 10.42.1.{SMALL - 1 + 3}:8080", within=30)
            answered, sent = await _sync_trials(session, srv.base, monitor, versions, count=trials, offset=0)
            log(f"  rule sync, {SMALL} Services: p50 {common.percentile(answered, 50):.1f} ms, "
                f"p99 {common.percentile(answered, 99):.1f} ms after the API answer")
            raw_ms = await _raw_sync(monitor, trials)
            log(f"  raw nft -f of such a change: p50 {common.percentile(raw_ms, 50):.1f} ms")
            bench = await _post(session, srv.base, "/api/v1/namespaces/default/services",
                                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench", "namespace": "default"},
                                 "spec": {"ports": [{"name": "sink", "port": SINK_PORT}, {"name": "conn", "port": CONN_PORT}]}})
            await _post(session, srv.base, SLICES, {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "bench", "namespace": "default", "labels": {"kubernetes.io/service-name": "bench"}},
                "addressType": "IPv4", "endpoints": [{"addresses": [pods.addresses["server"]]}],
                "ports": [{"name": "sink", "port": SINK_PORT, "protocol": "TCP"},
                          {"name": "conn", "port": CONN_PORT, "protocol": "TCP"}]})
            cluster_ip = bench["spec"]["clusterIP"]
            await monitor.wait(f"dnat ip to {pods.addresses['server']}:{CONN_PORT}")
            result = ProxyResult(sync_answered_ms=answered, sync_sent_ms=sent, raw_sync_ms=raw_ms,
                                 large_sync_answered_ms=[], full=[], restart=[], raw_full_s=[], table_bytes=0,
                                 ready_s=[])
            await _rates(result, pods, cluster_ip, quick=quick)
            log(f"  ClusterIP {ProxyResult.med(result.mbps_cluster):.0f} MB/s vs direct "
                f"{ProxyResult.med(result.mbps_direct):.0f} MB/s; {ProxyResult.med(result.cps_cluster):.0f} vs "
                f"{ProxyResult.med(result.cps_direct):.0f} connections/s")
            versions.update(await _make_services(session, srv.base, SMALL, LARGE))
            await monitor.wait(f"dnat ip to 10.42.{1 + (LARGE - 1) // 200}.{(LARGE - 1) % 200 + 3}:8080", within=60)
            await asyncio.sleep(2.0)  # the controllers' first pass over the new Services
            result.large_sync_answered_ms, _ = await _sync_trials(session, srv.base, monitor, versions,
                                                                  count=max(5, trials // 4), offset=trials)
            log(f"  rule sync, {LARGE} Services: p50 {common.percentile(result.large_sync_answered_ms, 50):.1f} ms")
        srv.stop()
        for fresh in [True, False] * (1 if quick else 3):
            if fresh:  # as after a reboot: nothing in the kernel
                await _nft("delete table inet edgekube\n")
            srv = servers.EdgekubeServer(data, network=True)
            result.ready_s.append(await srv.wait_ready())
            (result.full if fresh else result.restart).append(_full_sync_from_log(srv.log_path, LARGE))
            srv.stop()
        log(f"  full table of {LARGE} Services at boot: {ProxyResult.med([f.seconds for f in result.full]):.3f} s "
            f"into an empty kernel, {ProxyResult.med([f.seconds for f in result.restart]):.3f} s over the previous one")
        table = (await asyncio.to_thread(subprocess.run, ["nft", "list", "table", "inet", "edgekube"],
                                         capture_output=True, text=True, check=True)).stdout
        result.table_bytes = len(table.encode())
        for _ in range(3):
            t0 = time.monotonic()
            await _nft(table, *raw.argv([]))
            result.raw_full_s.append(time.monotonic() - t0)
            await _nft("delete table inet edgekube\n", *raw.argv([]))
        log(f"  raw nft -f of that table ({result.table_bytes:,} bytes): {ProxyResult.med(result.raw_full_s):.3f} s")
        return result
    finally:
        monitor.close()
        srv.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    r = run(quick=args.quick)
    print(json.dumps(dataclasses.asdict(r), indent=1, default=str)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
