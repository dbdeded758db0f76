"""Run every edgekube benchmark against a raw baseline measured in the same run.

    .venv/bin/python benchmarks/run_all.py [--quick] [--out docs/performance.md]

Sections: (1) durable store creates/s vs raw fsync'd LMDB transactions, (2) API GET/LIST/CREATE
req/s and latency vs a bare aiohttp server with the same TLS settings, paced CREATE p99 vs the raw
fsync latency, (3) idle RSS and disk writes, (4) applying a 20-object manifest (server-side and
with kubectl) against the plain create path. Prints a table and writes it as Markdown to --out.
The exit status is 0 when the benchmark ran (missed targets included) and non-zero on errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import shlex
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import api_bench, apply_bench, common, idle_bench, store_bench  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Durations:
    store: float  # seconds per store measurement
    api: float  # seconds per closed-loop API run
    paced: float  # seconds of the 20 writes/s open-loop run
    settle: float  # idle: wait after ready
    idle: float  # idle: measured window
    raw_paced: float  # raw LMDB transactions paced at PACED_RATE, for information
    apply_rounds: int = 20  # server-side apply rounds of the 20-object manifest
    kubectl_runs: int = 3  # kubectl apply / apply --server-side / create runs of it


PACED_RATE = api_bench.PACED_RATE
FULL = Durations(store=5.0, api=5.0, paced=10.0, settle=5.0, idle=60.0, raw_paced=5.0)
QUICK = Durations(store=1.0, api=1.0, paced=3.0, settle=5.0, idle=10.0, raw_paced=2.0, apply_rounds=3, kubectl_runs=1)


@dataclasses.dataclass
class Row:
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    result: str


def _fmt(x: float, digits: int = 0) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "info"
    return "PASS" if ok else "FAIL"


def _log(msg: str) -> None:
    print(msg, flush=True)


def _command() -> str:
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(_REPO)) if exe.is_absolute() else str(exe)
    except ValueError:
        exe_s = str(exe)
    script = Path(sys.argv[0])
    try:
        script_s = str(script.resolve().relative_to(_REPO))
    except ValueError:
        script_s = sys.argv[0]
    return shlex.join([exe_s, script_s, *sys.argv[1:]])


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(out) + " |"

    sep = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(headers), "| " + " | ".join(sep) + " |", *(line(r) for r in rows)])


def summary_rows(
    st: store_bench.StoreResult, api: api_bench.ApiResult, idle: idle_bench.IdleResult,
    ap: apply_bench.ApplyResult,
) -> list[Row]:
    rows: list[Row] = []
    raw = f"{_fmt(st.raw_writes)} writes/s (raw LMDB, 1 writer)"
    r1 = st.edgekube_1 / st.raw_writes
    r32 = st.edgekube_32 / st.raw_writes
    rows.append(
        Row(
            "Store durable creates/s, 1 writer", _fmt(st.edgekube_1), raw, f"{r1:.2f}x", "-", "info"
        )
    )
    rows.append(
        Row(
            "Store durable creates/s, 32 writers",
            _fmt(st.edgekube_32),
            raw,
            f"{r32:.2f}x",
            ">= 10x",
            _verdict(r32 >= 10),
        )
    )
    rows.append(
        Row("Raw LMDB fsync'd transaction, mean", f"{st.raw_txn_ms:.3f} ms", "-", "-", "-", "info")
    )
    rows.append(
        Row(
            f"Raw LMDB fsync'd transaction at {PACED_RATE:.0f}/s, p50 / p99",
            f"{st.raw_paced_p50_ms:.3f} / {st.raw_paced_p99_ms:.3f} ms",
            "-",
            "-",
            "-",
            "info",
        )
    )

    for conns in (1, 32):
        g = api.run("GET", conns)
        b = api.bare_run(conns)
        pct = 100.0 * g.rps / b.rps
        note = f" ({g.errors} errors)" if g.errors else ""
        rows.append(
            Row(
                f"API GET req/s, {conns} conn{'s' if conns > 1 else ''}",
                _fmt(g.rps) + note,
                f"{_fmt(b.rps)} req/s (bare aiohttp)",
                f"{pct:.0f}%",
                ">= 50%",
                _verdict(pct >= 50 and not g.errors),
            )
        )
    for name in ("LIST", "CREATE"):
        for conns in (1, 32):
            r = api.run(name, conns)
            note = f" ({r.errors} errors)" if r.errors else ""
            label = f"API {name}{' (1,000 objects)' if name == 'LIST' else ''} req/s, {conns} conn{'s' if conns > 1 else ''}"
            rows.append(
                Row(label, _fmt(r.rps, 1 if r.rps < 100 else 0) + note, "-", "-", "-", "info")
            )

    p = api.paced
    limit = 2 * st.raw_txn_ms
    ratio = p.p99_ms / st.raw_txn_ms
    note = f" ({p.errors} errors)" if p.errors else ""
    rows.append(
        Row(
            f"API CREATE p99 at {api.paced_rate:.0f} writes/s (open loop)",
            f"{p.p99_ms:.2f} ms" + note,
            f"{st.raw_txn_ms:.3f} ms (raw fsync'd txn); 2x = {limit:.3f} ms",
            f"{ratio:.1f}x raw",
            "<= 2x raw",
            _verdict(p.p99_ms <= limit and not p.errors),
        )
    )
    rows.append(
        Row(
            f"Idle disk writes over {idle.window_s:.0f} s",
            f"{idle.write_bytes:,} B",
            "0 B",
            "-",
            "0 B",
            _verdict(idle.write_bytes == 0),
        )
    )
    rows.append(Row("Idle RSS", f"{idle.rss_mib:.1f} MiB", "-", "-", "-", "info"))
    rows.append(Row(
        "Server-side apply, 20-object manifest, per object p50 / p99",
        f"{ap.ssa_p50_ms:.2f} / {ap.ssa_p99_ms:.2f} ms",
        f"{ap.create_p50_ms:.2f} / {ap.create_p99_ms:.2f} ms (plain create)",
        f"{ap.ssa_p50_ms / ap.create_p50_ms:.2f}x",
        "-",
        "info",
    ))
    rows.append(Row(
        "kubectl apply of the manifest, per object (client-side / --server-side)",
        f"{ap.kubectl_apply_ms:.1f} / {ap.kubectl_ssa_ms:.1f} ms",
        f"{ap.kubectl_create_ms:.1f} ms (kubectl create -f)",
        f"{ap.kubectl_apply_ms / ap.kubectl_create_ms:.2f}x / {ap.kubectl_ssa_ms / ap.kubectl_create_ms:.2f}x",
        "-",
        "info",
    ))
    return rows


def api_detail(api: api_bench.ApiResult) -> list[list[str]]:
    out = []
    for r in [*api.runs, *api.bare, api.paced]:
        conns = f"{api.paced_rate:.0f}/s paced" if r is api.paced else str(r.conns)
        name = "GET (bare aiohttp)" if r in api.bare else r.name
        out.append(
            [
                name,
                conns,
                _fmt(r.rps, 1),
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                str(r.ok),
                str(r.errors),
            ]
        )
    return out


def render(
    *,
    quick: bool,
    command: str,
    started: datetime.datetime,
    wall: float,
    d: Durations,
    machine: dict[str, str],
    st: store_bench.StoreResult,
    api: api_bench.ApiResult,
    idle: idle_bench.IdleResult,
    ap: apply_bench.ApplyResult,
) -> str:
    rows = summary_rows(st, api, idle, ap)
    summary = _table(
        ["Figure", "edgekube", "Baseline (same run)", "Ratio", "Target", "Result"],
        [[r.figure, r.value, r.baseline, r.ratio, r.target, r.result] for r in rows],
    )
    detail = _table(
        ["Request", "Connections", "req/s", "p50 ms", "p99 ms", "OK", "Errors"],
        api_detail(api),
        right={2, 3, 4, 5, 6},
    )
    machine_tbl = _table(["", ""], [[k, v] for k, v in machine.items()])
    passed = sum(r.result == "PASS" for r in rows)
    failed = sum(r.result == "FAIL" for r in rows)
    mode = "quick (short counts; figures are noisy)" if quick else "full"
    errors = [
        f"{r.name} x{r.conns}: {r.error_samples}"
        for r in [*api.runs, *api.bare, api.paced]
        if r.errors
    ]

    parts = [
        "# Performance",
        "",
        "<!-- Generated by benchmarks/run_all.py; do not edit by hand, re-run `make bench`. -->",
        "",
        f"Generated {started.strftime('%Y-%m-%d %H:%M:%S %Z')} by `{command}` "
        f"({mode} run, {wall:.0f} s wall). Every figure is compared with a baseline measured in "
        f"the same run on the same machine. Targets: {passed} passed, {failed} failed.",
        "",
        "## Summary",
        "",
        summary,
        "",
        "## API latency detail",
        "",
        f"Closed loop, {d.api:.0f} s per row after a short warm-up; each connection sends its next "
        "request as soon as the previous one answered. Latency is per request as seen by the "
        "client. The paced row is open loop: one CREATE every "
        f"{1000 / api.paced_rate:.0f} ms for {d.paced:.0f} s (max send lag {api.paced.max_lag_ms:.2f} ms).",
        "",
        detail,
        "",
        "## Machine",
        "",
        machine_tbl,
        "",
        "## Method",
        "",
        f"- **Store**: `edgekube.store.store.Store` with every prefix durable (`memory_prefixes=[]`), "
        f"`await store.create(key, obj)` for ~500-byte ConfigMap-like dicts, {d.store:.0f} s per "
        "measurement, with 1 writer (sequential awaits) and 32 asyncio tasks creating in a loop; "
        "a create returns once its group commit is durable. Baseline: `lmdb.open(..., sync=True, "
        "metasync=True)`, one `txn.put` per write transaction (one fsync per write), one writer, "
        "msgpack values of the same objects. Both on the data dir's disk. "
        f"Counts: edgekube {st.counts['edgekube_1']:,} / {st.counts['edgekube_32']:,}, raw {st.counts['raw']:,}; "
        f"store stats at 32 writers: {st.stats}.",
        f"- **API**: `python -m edgekube server` as a subprocess (ready in {api.server_ready_s:.1f} s), "
        "HTTPS with the admin client certificate, load from an aiohttp `ClientSession` with "
        "`TCPConnector(limit=N)` in the benchmark process. GET reads one ConfigMap "
        f"({api.get_body_bytes} B body); LIST reads namespace `bench-list` holding 1,000 ConfigMaps "
        f"({api.list_body_bytes:,} B body); CREATE posts ConfigMaps with unique names. Baseline: a bare "
        "aiohttp server (`benchmarks/bare_server.py`, same server certificate, optional client "
        "certificates) whose single handler returns the exact bytes of the edgekube GET response; "
        "it runs after the edgekube server has stopped, with the same load generator.",
        f"- **Idle**: a fresh server, {d.settle:.0f} s to settle after ready, then `/proc/PID/io` "
        f"over {d.idle:.0f} s: write_bytes {idle.write_bytes:,} B, wchar {idle.wchar:,} B, "
        f"rchar {idle.rchar:,} B, write syscalls {idle.syscw:,}; VmRSS {idle.rss_before_mib:.1f} MiB "
        f"at the start of the window, {idle.rss_mib:.1f} MiB at the end. Child processes: "
        f"{idle.children} (their write_bytes: {idle.children_write_bytes:,} B).",
        f"- **Apply**: a manifest of 20 objects (5 each of Deployment, Service, ConfigMap, Secret). "
        f"Server-side apply: each object PATCHed as `application/apply-patch+yaml` (fieldManager "
        f"`bench`, force), {ap.rounds} rounds (the first creates, the others re-apply with replicas "
        "changed), one connection; baseline: the same objects POSTed under fresh names, interleaved "
        f"round by round. kubectl 1.36: `apply -f`, `apply --server-side -f` and `create -f` of the "
        f"manifest into fresh namespaces, {ap.kubectl_runs} run(s) each, wall time divided by 20 "
        "(it includes kubectl's discovery and OpenAPI fetches).",
        "- The load generator and the server share the machine's CPUs, so req/s figures are a "
        "lower bound on what the server alone could do, and the same holds for the baseline.",
    ]
    if errors:
        parts += ["", "## Errors", "", *(f"- {e}" for e in errors)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="short run with small counts (for debugging)"
    )
    ap.add_argument(
        "--out", type=Path, default=_REPO / "docs" / "performance.md", help="Markdown file to write"
    )
    args = ap.parse_args(argv)
    d = QUICK if args.quick else FULL
    started = datetime.datetime.now(datetime.UTC).astimezone()
    t0 = time.monotonic()

    probe = common.temp_dir("probe")
    try:
        machine = common.machine_info(probe.parent)
    finally:
        common.remove_dir(probe)
    _log(
        f"edgekube benchmarks ({'quick' if args.quick else 'full'}); data on {machine['disk (data dir)']}"
    )

    _log(f"[1/4] store: durable creates/s vs raw LMDB ({d.store:.0f} s each)")
    st = store_bench.run(d.store, PACED_RATE, d.raw_paced)
    _log(
        f"  raw LMDB {st.raw_writes:,.0f} writes/s ({st.raw_txn_ms:.3f} ms/txn mean; paced at "
        f"{PACED_RATE:.0f}/s p50 {st.raw_paced_p50_ms:.3f} ms, p99 {st.raw_paced_p99_ms:.3f} ms); "
        f"edgekube {st.edgekube_1:,.0f}/s at 1 writer, {st.edgekube_32:,.0f}/s at 32 writers"
    )
    _log(f"[2/4] API: GET / LIST / CREATE vs bare aiohttp ({d.api:.0f} s per run)")
    api = api_bench.run(d.api, d.paced, _log)
    _log(f"[3/4] idle: RSS and disk writes over {d.idle:.0f} s")
    idle = idle_bench.run(d.settle, d.idle, _log)
    _log(f"[4/4] apply: a 20-object manifest, server-side ({d.apply_rounds} rounds) and with kubectl")
    ap = apply_bench.run(d.apply_rounds, d.kubectl_runs, _log)

    text = render(
        quick=args.quick,
        command=_command(),
        started=started,
        wall=time.monotonic() - t0,
        d=d,
        machine=machine,
        st=st,
        api=api,
        idle=idle,
        ap=ap,
    )
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
