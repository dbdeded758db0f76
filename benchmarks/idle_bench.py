"""Section 3: an idle server's resident memory and disk writes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from benchmarks import common, servers


@dataclasses.dataclass
class IdleResult:
    window_s: float
    settle_s: float
    write_bytes: int  # /proc/PID/io write_bytes delta over the window (reached the block layer)
    wchar: int  # bytes passed to write()-like calls, for information
    rchar: int
    syscw: int
    rss_mib: float
    rss_before_mib: float
    children: int
    children_write_bytes: int


async def _run(settle: float, window: float, log: Callable[[str], None]) -> IdleResult:
    tmp = common.temp_dir("idle")
    server = servers.EdgekubeServer(tmp / "data")
    try:
        ready_s = await server.wait_ready()
        log(
            f"  fresh edgekube server ready in {ready_s:.1f}s (pid {server.pid}); settling {settle:.0f}s"
        )
        await asyncio.sleep(settle)
        server.check_alive()
        kids = servers.children(server.pid)
        before = servers.read_proc_io(server.pid)
        kids_before = {k: _write_bytes(k) for k in kids}
        rss_before = servers.read_rss_kib(server.pid)
        log(f"  measuring {window:.0f}s idle")
        await asyncio.sleep(window)
        server.check_alive()
        after = servers.read_proc_io(server.pid)
        rss = servers.read_rss_kib(server.pid)
        kids_delta = sum(max(0, _write_bytes(k) - b) for k, b in kids_before.items())
    finally:
        server.stop()
        common.remove_dir(tmp)
    return IdleResult(
        window_s=window,
        settle_s=settle,
        write_bytes=after["write_bytes"] - before["write_bytes"],
        wchar=after["wchar"] - before["wchar"],
        rchar=after["rchar"] - before["rchar"],
        syscw=after["syscw"] - before["syscw"],
        rss_mib=rss / 1024.0,
        rss_before_mib=rss_before / 1024.0,
        children=len(kids),
        children_write_bytes=kids_delta,
    )


def _write_bytes(pid: int) -> int:
    try:
        return servers.read_proc_io(pid)["write_bytes"]
    except (OSError, KeyError):
        return 0


def run(settle: float, window: float, log: Callable[[str], None] = print) -> IdleResult:
    return asyncio.run(_run(settle, window, log))
