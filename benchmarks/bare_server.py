"""Baseline: a bare aiohttp HTTPS server with one handler returning a fixed JSON body.

Run as `python benchmarks/bare_server.py --port P --cert C --key K --ca CA --body FILE [--db DIR]`;
it prints `ready` on stdout once it listens. With `--db`, POST to any path stores the request body
in that LMDB directory (opened like edgekube's: sync and metasync on) in one transaction of its own
and answers 201 with the body once it is durable: the least work a durable create can take.
A POST with `?work_ms=N` first computes for N ms in pure Python on a worker thread (one, as
edgekube's offload worker), with the interpreter's switch interval at edgekube's busy value
(1 ms) meanwhile: what the bare stack stalls while a thread of its own computes, the least an
event loop beside a worker can see on this machine (the lock's handoffs, the CPUs shared).
Same TLS settings as edgekube: server cert/key, client certificates verified when offered (optional).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import signal
import ssl
import sys
import time
from pathlib import Path

import lmdb
from aiohttp import web


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--body", required=True, help="file with the JSON body to return")
    p.add_argument("--db", help="LMDB directory: POST stores its body there, one fsync'd transaction each")
    args = p.parse_args()

    body = Path(args.body).read_bytes()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    env = lmdb.open(args.db, map_size=1 << 30, sync=True, metasync=True) if args.db else None
    counter = itertools.count()

    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="work")

    def work(seconds: float) -> int:
        end = time.monotonic() + seconds
        done = 0
        while time.monotonic() < end:
            done += sum(range(200))  # bytecode, as a walk of a JSON tree is
        return done

    def put(key: bytes, value: bytes) -> None:
        assert env is not None
        with env.begin(write=True) as txn:
            txn.put(key, value)

    async def create(request: web.Request) -> web.Response:
        data = await request.read()
        work_ms = float(request.query.get("work_ms", "0"))
        if work_ms > 0:
            before = sys.getswitchinterval()
            sys.setswitchinterval(0.001)
            try:
                await asyncio.get_running_loop().run_in_executor(worker, work, work_ms / 1000.0)
            finally:
                sys.setswitchinterval(before)
        # On the loop, like the simplest server would: no thread hop, the fastest a durable
        # answer can come through this stack.
        put(f"{request.path}/{next(counter)}".encode(), data)
        return web.Response(status=201, body=data, content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        if env is not None:
            app.router.add_post("/{tail:.*}", create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=ctx)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
