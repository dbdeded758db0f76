"""Section 2: GET / LIST / CREATE through the real API server vs a bare aiohttp server."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson

from benchmarks import common, servers

LIST_OBJECTS = 1000
PACED_RATE = 20.0  # writes/s of the open-loop CREATE run
GET_PATH = "/api/v1/namespaces/default/configmaps/bench-0"
LIST_PATH = "/api/v1/namespaces/bench-list/configmaps"
CREATE_PATH = "/api/v1/namespaces/default/configmaps"
JSON = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclasses.dataclass
class LoadResult:
    name: str
    conns: int
    ok: int
    errors: int
    elapsed: float
    latencies: list[float]  # seconds, successful requests only
    error_samples: list[str] = dataclasses.field(default_factory=list)
    max_lag_ms: float = 0.0  # open loop only: worst lateness of a send against its schedule

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return 1000.0 * common.percentile(self.latencies, 50)

    @property
    def p99_ms(self) -> float:
        return 1000.0 * common.percentile(self.latencies, 99)


@dataclasses.dataclass
class ApiResult:
    runs: list[LoadResult]
    bare: list[LoadResult]
    paced: LoadResult  # edgekube CREATE, open loop at paced_rate
    paced_rate: float
    # Interleaved with `paced`, same client and pace: the bare aiohttp server's POST handler doing
    # one raw fsync'd LMDB put (the like-for-like baseline), and its GET (the transport alone).
    paced_bare_create: LoadResult
    paced_bare_get: LoadResult
    get_body_bytes: int
    list_body_bytes: int
    server_ready_s: float

    def run(self, name: str, conns: int) -> LoadResult:
        return next(r for r in self.runs if r.name == name and r.conns == conns)

    def bare_run(self, conns: int) -> LoadResult:
        return next(r for r in self.bare if r.conns == conns)


RequestFn = Callable[[aiohttp.ClientSession], tuple[str, str, bytes | None]]


async def _one(
    session: aiohttp.ClientSession, base: str, req: RequestFn, expect: int
) -> str | None:
    """Do one request; None when it answered `expect`, otherwise a short error description."""
    method, path, body = req(session)
    try:
        async with session.request(method, base + path, data=body, headers=JSON) as r:
            payload = await r.read()
            if r.status != expect:
                return f"{r.status} {payload[:160]!r}"
            return None
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        return repr(e)


async def closed_loop(
    base: str,
    ctx: ssl.SSLContext,
    name: str,
    req: RequestFn,
    expect: int,
    conns: int,
    duration: float,
) -> LoadResult:
    """`conns` workers, each sending its next request as soon as the last one answered."""
    connector = aiohttp.TCPConnector(limit=conns, ssl=ctx)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm-up: open the connections (TLS handshakes) and warm caches; not measured.
        warm_until = time.perf_counter() + min(0.5, duration / 4)

        async def warm() -> None:
            while time.perf_counter() < warm_until:
                await _one(session, base, req, expect)

        await asyncio.gather(*(warm() for _ in range(conns)))

        lat: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                err = await _one(session, base, req, expect)
                t1 = time.perf_counter()
                if err is None:
                    lat.append(t1 - t0)
                else:
                    errors.append(err)

        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.perf_counter() - start
    return LoadResult(name, conns, len(lat), len(errors), elapsed, lat, errors[:3])


@dataclasses.dataclass
class Stream:
    name: str
    base: str
    req: RequestFn
    expect: int


async def open_loop(
    ctx: ssl.SSLContext, streams: list[Stream], rate: float, duration: float
) -> list[LoadResult]:
    """Each stream sends one request every 1/rate s regardless of answers (open loop), on its own
    connection; the streams take turns, evenly spaced, so whatever the machine does meanwhile
    (a slow fsync, another VM on the host) falls on all of them alike. Latency from the actual send."""
    timeout = aiohttp.ClientTimeout(total=60)
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32, ssl=ctx), timeout=timeout)
        for _ in streams
    ]
    try:
        for st, session in zip(streams, sessions, strict=True):
            await _one(session, st.base, st.req, st.expect)  # warm-up: one connection each
        lat: list[list[float]] = [[] for _ in streams]
        errors: list[list[str]] = [[] for _ in streams]
        lag: list[float] = []
        interval = 1.0 / rate
        count = max(1, round(duration * rate))

        async def shot(j: int, scheduled: float) -> None:
            st = streams[j]
            t0 = time.perf_counter()
            lag.append(t0 - scheduled)
            err = await _one(sessions[j], st.base, st.req, st.expect)
            if err is None:
                lat[j].append(time.perf_counter() - t0)
            else:
                errors[j].append(err)

        start = time.perf_counter()
        tasks = []
        for i in range(count):
            for j in range(len(streams)):
                scheduled = start + i * interval + j * interval / len(streams)
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(shot(j, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    finally:
        for session in sessions:
            await session.close()
    results = []
    for j, st in enumerate(streams):
        result = LoadResult(st.name, 1, len(lat[j]), len(errors[j]), elapsed, lat[j], errors[j][:3])
        result.max_lag_ms = 1000.0 * max(lag, default=0.0)
        results.append(result)
    return results


def _create_req(prefix: str) -> RequestFn:
    counter = itertools.count()

    def make(_s: aiohttp.ClientSession) -> tuple[str, str, bytes | None]:
        return "POST", CREATE_PATH, orjson.dumps(common.configmap(f"{prefix}-{next(counter)}"))

    return make


def _get(path: str) -> RequestFn:
    def make(_s: aiohttp.ClientSession) -> tuple[str, str, bytes | None]:
        return "GET", path, None

    return make


async def _setup(base: str, ctx: ssl.SSLContext) -> tuple[bytes, int]:
    """Namespace bench-list with LIST_OBJECTS configmaps, and default/bench-0. Returns the GET body."""
    connector = aiohttp.TCPConnector(limit=32, ssl=ctx)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(path: str, obj: dict[str, object]) -> None:
            async with session.post(base + path, data=orjson.dumps(obj), headers=JSON) as r:
                text = await r.text()
                if r.status not in (200, 201, 409):
                    raise RuntimeError(f"setup POST {path} -> {r.status}: {text[:300]}")

        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-list"}}
        await post("/api/v1/namespaces", ns)
        await post(CREATE_PATH, common.configmap("bench-0"))
        names = iter(range(LIST_OBJECTS))

        async def filler() -> None:
            for i in names:
                await post(LIST_PATH, common.configmap(f"item-{i}", "bench-list"))

        await asyncio.gather(*(filler() for _ in range(32)))
        async with session.get(base + GET_PATH, headers=JSON) as r:
            get_body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET bench-0 -> {r.status}: {get_body[:300]!r}")
        async with session.get(base + LIST_PATH, headers=JSON) as r:
            list_body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"LIST -> {r.status}: {list_body[:300]!r}")
            names = {i["metadata"]["name"] for i in orjson.loads(list_body).get("items", [])}
            # Every namespace also holds the `kube-root-ca.crt` the service-account controller adds.
            names.discard("kube-root-ca.crt")
            if len(names) != LIST_OBJECTS:
                raise RuntimeError(f"LIST returned {len(names)} bench items, expected {LIST_OBJECTS}")
    return get_body, len(list_body)


async def _run(
    data_dir: Path, duration: float, paced_duration: float, log: Callable[[str], None]
) -> ApiResult:
    server = servers.EdgekubeServer(data_dir)
    bare: servers.BareServer | None = None
    try:
        ready_s = await server.wait_ready()
        log(f"  edgekube server ready in {ready_s:.1f}s on {server.base} (pid {server.pid})")
        ctx = server.ssl_context()
        get_body, list_bytes = await _setup(server.base, ctx)
        log(
            f"  set up: GET body {len(get_body)} B, LIST body {list_bytes} B ({LIST_OBJECTS} items)"
        )

        runs: list[LoadResult] = []
        plan: list[tuple[str, RequestFn, int]] = [
            ("GET", _get(GET_PATH), 200),
            ("LIST", _get(LIST_PATH), 200),
            ("CREATE", _create_req("bench-c"), 201),
        ]
        for name, req, expect in plan:
            for conns in (1, 32):
                r = await closed_loop(server.base, ctx, name, req, expect, conns, duration)
                server.check_alive()
                log(
                    f"  {name:6} x{conns:<2}: {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}"
                )
                runs.append(r)

        # The paced runs: edgekube CREATE, interleaved with the bare server's durable POST and GET
        # (same client, same pace), started now while edgekube idles.
        body_file = data_dir.parent / f"{data_dir.name}-get-body.json"
        body_file.write_bytes(get_body)
        bare = servers.BareServer(
            server.tls, body_file, data_dir.parent / f"{data_dir.name}-bare.log",
            db=data_dir.parent / f"{data_dir.name}-bare-db",
        )
        await bare.wait_ready()
        rate = PACED_RATE
        paced, paced_bare_create, paced_bare_get = await open_loop(
            ctx,
            [
                Stream("CREATE paced", server.base, _create_req("bench-p"), 201),
                Stream("bare CREATE paced", bare.base, _create_req("bench-p"), 201),
                Stream("bare GET paced", bare.base, _get(GET_PATH), 200),
            ],
            rate,
            paced_duration,
        )
        for r in (paced, paced_bare_create, paced_bare_get):
            log(
                f"  {r.name} {rate:.0f}/s: p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  errors {r.errors}  (max send lag {r.max_lag_ms:.2f} ms)"
            )

        # The closed-loop baseline runs alone: stop edgekube first so it takes no CPU from the bare server.
        server_rc = server.stop()
        bare_runs = []
        for conns in (1, 32):
            r = await closed_loop(bare.base, ctx, "bare GET", _get(GET_PATH), 200, conns, duration)
            log(
                f"  bare   x{conns:<2}: {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}"
            )
            bare_runs.append(r)
    finally:
        if bare is not None:
            bare.stop()
        server.stop()
    if server_rc not in (0, None):
        log(f"  note: edgekube server exited with {server_rc} after SIGTERM")

    for r in [*runs, *bare_runs, paced, paced_bare_create, paced_bare_get]:
        if r.ok == 0:
            raise RuntimeError(
                f"{r.name} x{r.conns}: no successful request; errors: {r.error_samples}"
            )
    return ApiResult(
        runs, bare_runs, paced, rate, paced_bare_create, paced_bare_get, len(get_body), list_bytes, ready_s
    )


def run(duration: float, paced_duration: float, log: Callable[[str], None] = print) -> ApiResult:
    data_dir = common.temp_dir("api")
    try:
        return asyncio.run(_run(data_dir / "data", duration, paced_duration, log))
    finally:
        common.remove_dir(data_dir)
