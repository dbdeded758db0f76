"""The cost of the audit log on a CREATE and of fairness on a GET, each against the same server
without it, measured in the same run.

    .venv/bin/python benchmarks/audit_bench.py [--seconds 3] [--rounds 3]

Four `edgekube server`s run side by side, alike but for: no audit log and no cap (the
baseline), the audit log at Metadata, at RequestResponse (every request, a policy of one rule),
and the cap on requests in flight (fairness at its defaults, no audit log). The load goes to
one at a time, in rounds that take the servers in turn (so whatever else the machine does
falls on all of them alike), and each figure is the median of its rounds: CREATE (a ~500-byte
ConfigMap, durable) with 1 and 32 connections, and GET with 1 and 32. Ratios are the server's
req/s over the baseline's. At the end each audited server's /metrics must show no event
dropped (a full queue) or failed (the writer kept up).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import yaml

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import api_bench, common, servers  # noqa: E402

POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "LEVEL"}]}
VARIANTS = ("baseline", "Metadata", "RequestResponse", "fairness")
CONNS = (1, 32)
# The audit log must not cost a CREATE more than this share of its rate, nor fairness a GET.
AUDIT_TARGET = 0.90
FAIRNESS_TARGET = 0.95


@dataclasses.dataclass
class AuditResult:
    rps: dict[tuple[str, str, int], list[float]]  # (variant, request, conns) -> req/s per round
    p99_ms: dict[tuple[str, str, int], list[float]]
    dropped: dict[str, float]  # audited variant -> events dropped or failed
    written: dict[str, float]
    rounds: int
    seconds: float

    def median(self, variant: str, request: str, conns: int) -> float:
        return statistics.median(self.rps[(variant, request, conns)])

    def ratio(self, variant: str, request: str, conns: int) -> float:
        return self.median(variant, request, conns) / self.median("baseline", request, conns)


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
                        r = await api_bench.closed_loop(server.base, server.ssl_context(), request,
                                                        make(f"c-{rnd}-{conns}"), expect, conns, seconds)
                        server.check_alive()
                        if r.errors:
                            raise RuntimeError(f"{variant} {request} x{conns}: errors {r.error_samples}")
                        rps.setdefault((variant, request, conns), []).append(r.rps)
                        p99.setdefault((variant, request, conns), []).append(r.p99_ms)
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
    return AuditResult(rps=rps, p99_ms=p99, dropped=dropped, written=written, rounds=rounds, seconds=seconds)


def run(seconds: float, rounds: int, log: Callable[[str], None] = print) -> AuditResult:
    root = common.temp_dir("audit")
    try:
        return asyncio.run(_run(root, seconds=seconds, rounds=rounds, log=log))
    finally:
        common.remove_dir(root)


def markdown(res: AuditResult) -> str:
    """A section of docs/performance.md."""
    rows = []
    for variant, request in (("Metadata", "CREATE"), ("RequestResponse", "CREATE"), ("fairness", "GET")):
        target = FAIRNESS_TARGET if variant == "fairness" else AUDIT_TARGET
        what = f"audit log at {variant}" if variant != "fairness" else "fairness (the cap, default sizes)"
        for conns in CONNS:
            ratio = res.ratio(variant, request, conns)
            p99_base = statistics.median(res.p99_ms[("baseline", request, conns)])
            p99 = statistics.median(res.p99_ms[(variant, request, conns)])
            rows.append(f"| {request} x{conns}, {what} | {res.median(variant, request, conns):,.0f} req/s, "
                        f"p99 {p99:.2f} ms | {res.median('baseline', request, conns):,.0f} req/s, "
                        f"p99 {p99_base:.2f} ms | {ratio:.2f} | >= {target:.2f} | "
                        f"{'PASS' if ratio >= target else 'FAIL'} |")
    lost = ", ".join(f"{v}: {res.written[v]:,.0f} events written, {res.dropped[v]:,.0f} dropped or failed"
                     for v in res.dropped)
    return "\n".join([
        "",
        "## Audit log and fairness",
        "",
        f"benchmarks/audit_bench.py: four servers side by side (no audit log and no cap; audit at Metadata; at "
        f"RequestResponse; the cap at its defaults), {res.rounds} rounds of {res.seconds:.0f} s per figure taking "
        f"the servers in turn; medians. {lost}.",
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
