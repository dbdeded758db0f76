"""Section 1: durable creates/s through edgekube's Store vs one-fsync-per-write raw LMDB."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from pathlib import Path

import lmdb
import msgpack

from benchmarks import common
from edgekube.store import store as store_mod


@dataclasses.dataclass
class StoreResult:
    edgekube_1: float  # creates/s, one writer
    edgekube_32: float  # creates/s, 32 concurrent writers
    raw_writes: float  # writes/s, raw LMDB, one writer, one fsync'd txn per write
    raw_txn_ms: float  # mean latency of one raw fsync'd transaction
    raw_count: int
    raw_paced_p50_ms: float  # raw fsync'd txn latency when paced like the API CREATE test
    raw_paced_p99_ms: float
    counts: dict[str, int]
    stats: dict[str, object]
    data_path: Path


def raw_lmdb(path: Path, duration: float) -> tuple[float, float, int]:
    """writes/s and mean ms per committed (fsync'd) transaction, one write per transaction."""
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)
    try:
        value = msgpack.packb(common.configmap("raw"))
        lat: list[float] = []
        # A few warm-up writes so the file exists and the first page allocations are done.
        for i in range(5):
            with env.begin(write=True) as txn:
                txn.put(f"/core/configmaps/default/warm-{i}".encode(), value)
        start = time.perf_counter()
        deadline = start + duration
        i = 0
        while True:
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(f"/core/configmaps/default/raw-{i}".encode(), value)
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            i += 1
            if t1 >= deadline:
                break
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    return i / elapsed, 1000.0 * sum(lat) / len(lat), i


def raw_lmdb_paced(path: Path, rate: float, duration: float) -> tuple[float, float]:
    """p50/p99 ms of one fsync'd transaction when writes come `rate` times a second (disk idle between)."""
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)
    try:
        value = msgpack.packb(common.configmap("raw"))
        lat: list[float] = []
        interval = 1.0 / rate
        start = time.perf_counter()
        for i in range(max(1, round(rate * duration))):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(f"/core/configmaps/default/paced-{i}".encode(), value)
            lat.append(time.perf_counter() - t0)
    finally:
        env.close()
    return 1000.0 * common.percentile(lat, 50), 1000.0 * common.percentile(lat, 99)


async def _edgekube(
    path: Path, duration: float, writers: int
) -> tuple[float, int, dict[str, object]]:
    cfg = store_mod.StoreConfig(path=path)
    s = store_mod.Store(cfg, memory_prefixes=[])
    await s.start()
    counter = itertools.count()
    done = 0
    try:
        # Warm-up.
        for _ in range(5):
            n = next(counter)
            await s.create(
                f"/core/configmaps/default/w{writers}-{n}", common.configmap(f"w{writers}-{n}")
            )

        async def writer(deadline: float) -> int:
            mine = 0
            while time.perf_counter() < deadline:
                n = next(counter)
                name = f"w{writers}-{n}"
                await s.create(f"/core/configmaps/default/{name}", common.configmap(name))
                mine += 1
            return mine

        start = time.perf_counter()
        counts = await asyncio.gather(*(writer(start + duration) for _ in range(writers)))
        elapsed = time.perf_counter() - start
        done = sum(counts)
        stats_obj = s.stats() if hasattr(s, "stats") else None
        stats = dataclasses.asdict(stats_obj) if dataclasses.is_dataclass(stats_obj) else {}
    finally:
        await s.close()
    return done / elapsed, done, stats


def run(duration: float, paced_rate: float, paced_duration: float) -> StoreResult:
    raw_dir = common.temp_dir("raw-lmdb")
    ek1_dir = common.temp_dir("store-1")
    ek32_dir = common.temp_dir("store-32")
    try:
        raw_writes, raw_ms, raw_n = raw_lmdb(raw_dir, duration)
        paced_p50, paced_p99 = raw_lmdb_paced(raw_dir, paced_rate, paced_duration)
        ek1, n1, _ = asyncio.run(_edgekube(ek1_dir, duration, 1))
        ek32, n32, stats = asyncio.run(_edgekube(ek32_dir, duration, 32))
    finally:
        for d in (raw_dir, ek1_dir, ek32_dir):
            common.remove_dir(d)
    return StoreResult(
        edgekube_1=ek1,
        edgekube_32=ek32,
        raw_writes=raw_writes,
        raw_txn_ms=raw_ms,
        raw_count=raw_n,
        raw_paced_p50_ms=paced_p50,
        raw_paced_p99_ms=paced_p99,
        counts={"edgekube_1": n1, "edgekube_32": n32, "raw": raw_n},
        stats=stats,
        data_path=raw_dir.parent,
    )
