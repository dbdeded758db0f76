"""Section 7: what idle TLS connections cost in resident memory, and what is left once they close.

    .venv/bin/python benchmarks/conns_bench.py [--connections 300] [--rounds 5]

A fresh `edgekube server` and the bare aiohttp TLS server (`bare_server.py`, same certificates)
each settle, then take `rounds` rounds of: open `connections` anonymous TLS connections (handshake
done, no request, as an idle client leaves them), VmRSS while they are held, close them all, wait
for the server to let go, VmRSS again. The first round's held figure is the cost per connection;
the last round's closed figure is what stays after repeated bursts (it must not keep growing).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import common, servers  # noqa: E402

SETTLE_S = 5.0  # after ready, and after each close (edgekube gives freed memory back 2 s after closes)
HOLD_S = 1.0  # connections held this long before VmRSS is read


@dataclasses.dataclass
class Rounds:
    idle_mib: float
    held_mib: list[float]  # VmRSS with the connections open, per round
    closed_mib: list[float]  # VmRSS after they closed, per round

    def held_cost(self) -> float:
        return self.held_mib[0] - self.idle_mib

    def left(self) -> float:
        return self.closed_mib[-1] - self.idle_mib


@dataclasses.dataclass
class ConnsResult:
    connections: int
    rounds: int
    edgekube: Rounds
    bare: Rounds


def _rss_mib(pid: int) -> float:
    return servers.read_rss_kib(pid) / 1024.0


def _open(port: int, ctx: ssl.SSLContext, count: int) -> list[ssl.SSLSocket]:
    out = []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        out.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
    return out


async def _rounds(proc: servers.Proc, port: int, ctx: ssl.SSLContext, *, connections: int, rounds: int,
                  log: Callable[[str], None]) -> Rounds:
    await asyncio.sleep(SETTLE_S)
    proc.check_alive()
    result = Rounds(idle_mib=_rss_mib(proc.pid), held_mib=[], closed_mib=[])
    for i in range(rounds):
        socks = await asyncio.to_thread(_open, port, ctx, connections)
        await asyncio.sleep(HOLD_S)
        result.held_mib.append(_rss_mib(proc.pid))
        for s in socks:
            s.close()
        await asyncio.sleep(SETTLE_S)
        proc.check_alive()
        result.closed_mib.append(_rss_mib(proc.pid))
        log(f"  {proc.name} round {i + 1}: idle {result.idle_mib:.1f} MiB, {connections} held "
            f"{result.held_mib[-1]:.1f} MiB, closed {result.closed_mib[-1]:.1f} MiB")
    return result


async def _run(connections: int, rounds: int, log: Callable[[str], None]) -> ConnsResult:
    tmp = common.temp_dir("conns")
    edgekube = servers.EdgekubeServer(tmp / "data")
    bare: servers.BareServer | None = None
    try:
        await edgekube.wait_ready()
        ctx = ssl.create_default_context(cafile=str(edgekube.tls / "ca.crt"))
        ek = await _rounds(edgekube, edgekube.port, ctx, connections=connections, rounds=rounds, log=log)
        edgekube.stop()
        body = tmp / "body.json"
        body.write_text('{"kind":"Status"}')
        bare = servers.BareServer(edgekube.tls, body, tmp / "bare.log")
        await bare.wait_ready()
        bk = await _rounds(bare, bare.port, ctx, connections=connections, rounds=rounds, log=log)
    finally:
        edgekube.stop()
        if bare is not None:
            bare.stop()
        common.remove_dir(tmp)
    return ConnsResult(connections=connections, rounds=rounds, edgekube=ek, bare=bk)


def run(connections: int, rounds: int, log: Callable[[str], None] = print) -> ConnsResult:
    return asyncio.run(_run(connections, rounds, log))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    started = time.monotonic()
    r = run(args.connections, args.rounds)
    n = r.connections
    for name, x in (("edgekube", r.edgekube), ("bare aiohttp", r.bare)):
        print(f"{name}: idle {x.idle_mib:.1f} MiB; {n} idle TLS connections +{x.held_cost():.1f} MiB "
              f"({1024 * x.held_cost() / n:.0f} KiB each); after {r.rounds} rounds closed +{x.left():.1f} MiB")
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
