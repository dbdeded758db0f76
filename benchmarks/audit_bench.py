"""The cost of the audit log on a CREATE and of fairness on a GET, each against the same server
without it, measured in the same run.

    .venv/bin/python benchmarks/audit_bench.py [--seconds 3] [--rounds 3]

Four `edgekube server`s run side by side, alike but for: no audit log and no cap (the
baseline), the audit log at Metadata, at RequestResponse (every request, a policy of one rule),
and the cap on requests in flight (fairness at its defaults, no audit log). The policy records each
request once, when answered (`omitStages: [RequestReceived]`, as configs/audit-policy.yaml). The load goes to
one at a time, in rounds that take the servers in turn (so whatever else the machine does
falls on all of them alike), and each figure is the median of its rounds: CREATE (a ~500-byte
ConfigMap, durable) with 1 and 32 connections, and GET with 1 and 32. Two ratios: req/s over
the baseline's, and the server process's CPU time per request (user + system, every thread:
the audit writer's included) over the baseline's. On a machine shared with other work both swing
with whatever else runs, so the targeted figures are measured in process too: the CPU the
middlewares add to a request made in memory (the same chain around the same handler, with and
without), over a whole request's CPU in the baseline server. At the end each audited server's /metrics must show no event
dropped (a full queue) or failed (the writer kept up).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import yaml
from aiohttp import streams, test_utils, web

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import api_bench, common, servers  # noqa: E402
from edgekube.api import audit, fairness, filters  # noqa: E402
from edgekube.api.auth import authz  # noqa: E402

# Every request at one level, recorded once when answered (RequestReceived omitted, as the
# example policy in configs/ and upstream's recommended policies do).
POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
          "rules": [{"level": "LEVEL"}]}
VARIANTS = ("baseline", "Metadata", "RequestResponse", "fairness")
CONNS = (1, 32)
# The audit log must not cost a CREATE more than this share of its rate, nor fairness a GET.
AUDIT_TARGET = 0.90
FAIRNESS_TARGET = 0.95


@dataclasses.dataclass
class AuditResult:
    rps: dict[tuple[str, str, int], list[float]]  # (variant, request, conns) -> req/s per round
    p99_ms: dict[tuple[str, str, int], list[float]]
    cpu_us: dict[tuple[str, str, int], list[float]]  # server CPU per request, microseconds
    dropped: dict[str, float]  # audited variant -> events dropped or failed
    written: dict[str, float]
    rounds: int
    seconds: float
    micro_us: dict[str, float] = dataclasses.field(default_factory=dict)  # in-process CPU per request

    def median(self, variant: str, request: str, conns: int) -> float:
        return statistics.median(self.rps[(variant, request, conns)])

    def ratio(self, variant: str, request: str, conns: int) -> float:
        return self.median(variant, request, conns) / self.median("baseline", request, conns)

    def cpu(self, variant: str, request: str, conns: int) -> float:
        return statistics.median(self.cpu_us[(variant, request, conns)])

    def cpu_ratio(self, variant: str, request: str, conns: int) -> float:
        """The baseline's CPU per request over this server's (>= 1 is no more costly)."""
        return self.cpu("baseline", request, conns) / self.cpu(variant, request, conns)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _config(root: Path, variant: str) -> Path:
    cfg: dict[str, object] = {"flowcontrol": {"max-requests-inflight": 0}}
    if variant in ("Metadata", "RequestResponse"):
        policy = root / f"policy-{variant}.yaml"
        policy.write_text(yaml.safe_dump(POLICY).replace("LEVEL", variant))
        cfg["audit"] = {"policy-file": str(policy), "log-path": str(root / f"audit-{variant}" / "audit.log"),
                        "log-maxsize": 50, "log-maxbackup": 2}
    if variant == "fairness":
        cfg = {}  # the defaults: fairness on, no audit log
    path = root / f"config-{variant}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def _metrics(server: servers.EdgekubeServer) -> dict[str, float]:
    out: dict[str, float] = {}
    conn = aiohttp.TCPConnector(ssl=server.ssl_context())
    async with aiohttp.ClientSession(connector=conn) as s, s.get(f"{server.base}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


async def _run(root: Path, *, seconds: float, rounds: int, log: Callable[[str], None]) -> AuditResult:
    started = {v: servers.EdgekubeServer(root / f"data-{v}", extra=["--config", str(_config(root, v))])
               for v in VARIANTS}
    rps: dict[tuple[str, str, int], list[float]] = {}
    p99: dict[tuple[str, str, int], list[float]] = {}
    cpu: dict[tuple[str, str, int], list[float]] = {}
    dropped: dict[str, float] = {}
    written: dict[str, float] = {}
    try:
        for server in started.values():
            await server.wait_ready()
        for server in started.values():
            # The GET's object (default/bench-0, the first of these creates), and warm caches.
            await api_bench.closed_loop(server.base, server.ssl_context(), "setup", api_bench._create_req("bench"),
                                        201, 1, 0.2)
        plan: list[tuple[str, Callable[[str], api_bench.RequestFn], int]] = [
            ("CREATE", api_bench._create_req, 201),
            ("GET", lambda _prefix: api_bench._get(api_bench.GET_PATH), 200)]
        for rnd in range(rounds):
            for request, make, expect in plan:
                for conns in CONNS:
                    for variant, server in started.items():
                        cpu_before = _cpu_seconds(server.pid)
                        r = await api_bench.closed_loop(server.base, server.ssl_context(), request,
                                                        make(f"c-{rnd}-{conns}"), expect, conns, seconds)
                        server.check_alive()
                        if r.errors:
                            raise RuntimeError(f"{variant} {request} x{conns}: errors {r.error_samples}")
                        rps.setdefault((variant, request, conns), []).append(r.rps)
                        p99.setdefault((variant, request, conns), []).append(r.p99_ms)
                        used = _cpu_seconds(server.pid) - cpu_before
                        cpu.setdefault((variant, request, conns), []).append(1e6 * used / max(1, r.ok + r.errors))
                    row = "  ".join(f"{v} {rps[(v, request, conns)][-1]:8.1f}" for v in VARIANTS)
                    log(f"  round {rnd + 1} {request:6} x{conns:<2} req/s: {row}")
        for variant in ("Metadata", "RequestResponse"):
            m = await _metrics(started[variant])
            dropped[variant] = (m['apiserver_audit_error_total{plugin="buffered"}']
                                + m['apiserver_audit_error_total{plugin="log"}'])
            written[variant] = m["apiserver_audit_event_total"]
    finally:
        for server in started.values():
            server.stop()
    return AuditResult(rps=rps, p99_ms=p99, cpu_us=cpu, dropped=dropped, written=written, rounds=rounds, seconds=seconds)


MICRO_REQUESTS = 20000


class _Transport:
    """What a request asks of its connection (its peer): not a mock, whose calls cost more than
    what is measured."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peercert":
            return _ADMIN_CERT
        return ("127.0.0.1", 40000) if name == "peername" else default


# What the ssl module gives for the admin's client certificate.
_ADMIN_CERT = {"subject": ((("organizationName", "system:masters"),), (("commonName", "kubernetes-admin"),))}


async def _micro(root: Path, variant: str, requests: int) -> float:
    """CPU microseconds per request of the middlewares alone (every thread: the audit writer's
    included), around a handler that reads a ~500-byte ConfigMap and answers it, on requests
    made in memory: what the audit log or fairness add to a request, free of the network's and
    the machine's noise. `none` is the same chain with both off."""
    level = variant if variant in ("Metadata", "RequestResponse") else None
    auditor = audit.Auditor(
        audit.parse_policy(yaml.safe_load(yaml.safe_dump(POLICY).replace("LEVEL", level)), where="bench")
        if level else None,
        settings=audit.LogSettings(path=root / f"micro-{variant}.log", max_size_mb=50, max_backups=1,
                                   max_age_days=0, buffer_size=10000))
    auditor.open()
    cap = fairness.Fairness(fairness.Settings(40 if variant == "fairness" else 0, 128, 512, 15.0))
    body = orjson.dumps(common.configmap("micro"))
    answer = orjson.dumps({**common.configmap("micro"), "metadata": {"name": "micro", "uid": "u", "resourceVersion": "7"}})

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=answer, status=201, content_type="application/json")

    chain = filters.Filters(authenticators=[], auditor=auditor, flowcontrol=cap, gate=authz.Gate(authz.AllowAll()))

    writer = asyncio.create_task(auditor.run(), name="audit-writer") if auditor.enabled else None
    loop = asyncio.get_running_loop()
    # One request made with mocks (slow to make), cloned for each: a clone is a real Request.
    payload = streams.StreamReader(test_utils.make_mocked_request("GET", "/").protocol, 2**16, loop=loop)
    payload.feed_data(body)
    payload.feed_eof()
    template = test_utils.make_mocked_request(
        "POST", "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create",
        headers={"Content-Type": "application/json", "User-Agent": "bench"}, payload=payload,
        transport=_Transport())
    start = time.process_time()
    for i in range(requests):
        request = template.clone()
        request._read_bytes = body  # as the handler's read leaves it
        await chain.middleware(request, handler)
        if i % 256 == 0:
            await asyncio.sleep(0)  # the writer's turn, as between requests
    if writer is not None:
        writer.cancel()
    await auditor.close()
    return 1e6 * (time.process_time() - start) / requests


def run(seconds: float, rounds: int, log: Callable[[str], None] = print) -> AuditResult:
    root = common.temp_dir("audit")
    try:
        micro = {}
        for _ in range(rounds):
            for variant in ("none", "Metadata", "RequestResponse", "fairness"):
                micro.setdefault(variant, []).append(asyncio.run(_micro(root, variant, MICRO_REQUESTS)))
        res = asyncio.run(_run(root, seconds=seconds, rounds=rounds, log=log))
        res.micro_us = {v: statistics.median(us) for v, us in micro.items()}
        log("  in-process CPU per request (middlewares and a handler): " +
            ", ".join(f"{v} {us:.1f} us" for v, us in res.micro_us.items()))
        return res
    finally:
        common.remove_dir(root)


def markdown(res: AuditResult) -> str:
    """A section of docs/performance.md."""
    rows = []
    # The robust figures: what the middlewares add (in-process CPU over the same chain without),
    # as a share of a whole request's CPU in the baseline server (x32, where the CPU is busiest).
    for variant, request in (("Metadata", "CREATE"), ("RequestResponse", "CREATE"), ("fairness", "GET")):
        target = FAIRNESS_TARGET if variant == "fairness" else AUDIT_TARGET
        added = max(0.0, res.micro_us[variant] - res.micro_us["none"])
        whole = res.cpu("baseline", request, 32)
        ratio = whole / (whole + added)
        what = f"the audit log at {variant}" if variant != "fairness" else "fairness (the cap)"
        rows.append(f"| {request}: CPU {what} adds to a request | +{added:.1f} us | {whole:,.0f} us per {request} "
                    f"(x32, no audit, no cap) | {ratio:.3f} | >= {target:.2f} | {'PASS' if ratio >= target else 'FAIL'} |")
    for variant, request in (("Metadata", "CREATE"), ("RequestResponse", "CREATE"), ("fairness", "GET")):
        what = f"audit log at {variant}" if variant != "fairness" else "fairness (the cap, default sizes)"
        for conns in CONNS:
            p99_base = statistics.median(res.p99_ms[("baseline", request, conns)])
            p99 = statistics.median(res.p99_ms[(variant, request, conns)])
            rows.append(f"| {request} x{conns}, {what}: server CPU per request (info) | "
                        f"{res.cpu(variant, request, conns):,.0f} us | {res.cpu('baseline', request, conns):,.0f} us | "
                        f"{res.cpu_ratio(variant, request, conns):.2f} | - | info |")
            rows.append(f"| {request} x{conns}, {what}: rate (info) | {res.median(variant, request, conns):,.0f} "
                        f"req/s, p99 {p99:.2f} ms | {res.median('baseline', request, conns):,.0f} req/s, "
                        f"p99 {p99_base:.2f} ms | {res.ratio(variant, request, conns):.2f} | - | info |")
    lost = ", ".join(f"{v}: {res.written[v]:,.0f} events written, {res.dropped[v]:,.0f} dropped or failed"
                     for v in res.dropped)
    return "\n".join([
        "",
        "## Audit log and fairness",
        "",
        f"benchmarks/audit_bench.py: four servers side by side (no audit log and no cap; audit at Metadata; at "
        f"RequestResponse; the cap at its defaults), {res.rounds} rounds of {res.seconds:.0f} s per figure taking "
        f"the servers in turn; medians. {lost}. The targeted figures are the in-process CPU the middlewares "
        f"add to a request (the same chain around the same handler, with and without, {MICRO_REQUESTS:,} requests "
        f"made in memory: {', '.join(f'{v} {us:.1f} us' for v, us in res.micro_us.items())}) over a whole "
        "request's CPU in the baseline server; the end-to-end rates and CPU per request, on a machine shared with "
        "other work, are for information.",
        "",
        "| Figure | edgekube | Baseline (same run, no audit, no cap) | Ratio | Target | Result |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="per closed-loop run")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    res = run(args.seconds, args.rounds)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
