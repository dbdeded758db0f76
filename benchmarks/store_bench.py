"""Section 1: durable creates/s through edgekube's Store vs one-fsync-per-write raw LMDB."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import lmdb
import msgpack

from benchmarks import common
from edgekube.store import store as store_mod

T = TypeVar("T")


@dataclasses.dataclass
class Round:
    raw_writes: float  # writes/s, raw LMDB
    raw_txn_ms: float
    edgekube_1: float  # creates/s
    edgekube_32: float


@dataclasses.dataclass
class StoreResult:
    """Medians over rounds that interleave raw LMDB and edgekube, so a disk that changes speed
    during the run (as shared virtual disks do) moves baseline and edgekube alike; the ratios are
    the median of the per-round ratios."""

    edgekube_1: float  # creates/s, one writer
    edgekube_32: float  # creates/s, 32 concurrent writers
    raw_writes: float  # writes/s, raw LMDB, one writer, one fsync'd txn per write
    raw_txn_ms: float  # mean latency of one raw fsync'd transaction
    ratio_1: float
    ratio_32: float
    rounds: list[Round]
    raw_count: int
    raw_paced_p50_ms: float  # raw fsync'd txn latency when paced like the API CREATE test
    raw_paced_p99_ms: float
    counts: dict[str, int]
    stats: dict[str, object]
    data_path: Path
    # The same rounds in a child process whose writes to the data dir's disk are throttled (cgroup
    # v1 blkio) to SLOW_DISK_IOPS, so one raw fsync'd transaction costs what it does on an SD card
    # (several ms); None when that could not be set up (not root, no blkio controller), with why.
    slow_disk: SlowDisk | None = None
    slow_disk_skipped: str = ""


@dataclasses.dataclass
class SlowDisk:
    iops: int
    raw_writes: float
    raw_txn_ms: float
    edgekube_1: float
    edgekube_32: float
    ratio_1: float
    ratio_32: float


SLOW_DISK_IOPS = 1000
BLKIO = Path("/sys/fs/cgroup/blkio")


def raw_lmdb(path: Path, duration: float, tag: str = "") -> tuple[float, float, int]:
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
                txn.put(f"/core/configmaps/default/raw{tag}-{i}".encode(), value)
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


async def _edgekube_round(s: store_mod.Store, duration: float, writers: int, prefix: str) -> tuple[float, int]:
    """creates/s for `duration` seconds with `writers` concurrent writers on an open store."""
    counter = itertools.count()

    async def writer(deadline: float) -> int:
        mine = 0
        while time.perf_counter() < deadline:
            name = f"{prefix}-{next(counter)}"
            await s.create(f"/core/configmaps/default/{name}", common.configmap(name))
            mine += 1
        return mine

    # Warm-up.
    for _ in range(5):
        name = f"{prefix}-{next(counter)}"
        await s.create(f"/core/configmaps/default/{name}", common.configmap(name))
    start = time.perf_counter()
    counts = await asyncio.gather(*(writer(start + duration) for _ in range(writers)))
    elapsed = time.perf_counter() - start
    done = sum(counts)
    return done / elapsed, done


async def _interleaved(
    raw_dir: Path, ek1_dir: Path, ek32_dir: Path, rounds: int, duration: float
) -> tuple[list[Round], dict[str, int], dict[str, object]]:
    stores = [store_mod.Store(store_mod.StoreConfig(path=d), memory_prefixes=[]) for d in (ek1_dir, ek32_dir)]
    for st in stores:
        await st.start()
    out: list[Round] = []
    counts = {"edgekube_1": 0, "edgekube_32": 0, "raw": 0}
    try:
        for r in range(rounds):
            # The raw rounds run on a thread so this loop (and both idle stores) wait meanwhile;
            # like the stores, the raw database grows from round to round.
            raw_w, raw_ms, raw_n = await asyncio.get_running_loop().run_in_executor(
                None, raw_lmdb, raw_dir / "raw", duration, f"-r{r}"
            )
            e1, n1 = await _edgekube_round(stores[0], duration, 1, f"w1-r{r}")
            e32, n32 = await _edgekube_round(stores[1], duration, 32, f"w32-r{r}")
            out.append(Round(raw_writes=raw_w, raw_txn_ms=raw_ms, edgekube_1=e1, edgekube_32=e32))
            counts["raw"] += raw_n
            counts["edgekube_1"] += n1
            counts["edgekube_32"] += n32
        stats = dataclasses.asdict(stores[1].stats())
    finally:
        for st in stores:
            await st.close()
    return out, counts, stats


def _medians(rounds: list[Round]) -> dict[str, float]:
    """The figures of a set of rounds: medians, and the median of the per-round ratios."""
    med = statistics.median
    return {
        "raw_writes": med(r.raw_writes for r in rounds),
        "raw_txn_ms": med(r.raw_txn_ms for r in rounds),
        "edgekube_1": med(r.edgekube_1 for r in rounds),
        "edgekube_32": med(r.edgekube_32 for r in rounds),
        "ratio_1": med(r.edgekube_1 / r.raw_writes for r in rounds),
        "ratio_32": med(r.edgekube_32 / r.raw_writes for r in rounds),
    }


def _rounds(
    duration: float, label: str, then: Callable[[Path], T] | None = None
) -> tuple[list[Round], dict[str, int], dict[str, object], T | None, Path]:
    """Interleaved rounds of about a second each, `duration` seconds per measurement, in fresh
    temporary databases; `then(raw database)` runs on the grown raw database before they go."""
    raw_dir, ek1_dir, ek32_dir = (common.temp_dir(f"{label}{n}") for n in ("raw-lmdb", "store-1", "store-32"))
    n_rounds = max(1, round(duration))
    try:
        rounds, counts, stats = asyncio.run(_interleaved(raw_dir, ek1_dir, ek32_dir, n_rounds, duration / n_rounds))
        after = then(raw_dir / "raw") if then is not None else None
    finally:
        for d in (raw_dir, ek1_dir, ek32_dir):
            common.remove_dir(d)
    return rounds, counts, stats, after, raw_dir.parent


def run(duration: float, paced_rate: float, paced_duration: float) -> StoreResult:
    """Every figure of the store section; see `_rounds` and `run_slow_disk`."""
    rounds, counts, stats, paced, data_path = _rounds(
        duration, "", lambda raw: raw_lmdb_paced(raw, paced_rate, paced_duration)
    )
    assert paced is not None
    slow, slow_skipped = run_slow_disk(min(duration, 3.0))
    return StoreResult(
        **_medians(rounds),
        rounds=rounds,
        raw_count=counts["raw"],
        raw_paced_p50_ms=paced[0],
        raw_paced_p99_ms=paced[1],
        counts=counts,
        stats=stats,
        data_path=data_path,
        slow_disk=slow,
        slow_disk_skipped=slow_skipped,
    )


def _disk_of(path: Path) -> str:
    """`major:minor` of the whole disk holding `path` (blkio throttles whole disks, not partitions)."""
    st = os.stat(path)
    dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not dev.exists():
        raise OSError(f"{path} is not on a block device")
    if (dev / "partition").exists():
        dev = dev.resolve().parent
    return (dev / "dev").read_text().strip()


def run_slow_disk(duration: float, iops: int = SLOW_DISK_IOPS) -> tuple[SlowDisk | None, str]:
    """The interleaved rounds again, in a child process in a blkio cgroup that allows `iops`
    writes/s to the data dir's disk. Returns (result, "") or (None, why it was skipped)."""
    if not BLKIO.is_dir() or not (BLKIO / "blkio.throttle.write_iops_device").exists():
        return None, "no cgroup v1 blkio controller with throttling"
    if os.geteuid() != 0:
        return None, "needs root (a blkio cgroup)"
    probe = common.temp_dir("slow-disk-probe")
    try:
        disk = _disk_of(probe)
    except OSError as e:
        return None, str(e)
    finally:
        common.remove_dir(probe)
    cgroup = BLKIO / f"edgekube-bench-{os.getpid()}"
    try:
        cgroup.mkdir()
        (cgroup / "blkio.throttle.write_iops_device").write_text(f"{disk} {iops}")
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.store_bench", "--cgroup", str(cgroup), "--duration", str(duration)],
            cwd=common.REPO, capture_output=True, text=True, timeout=300, check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"slow-disk store rounds failed ({out.returncode}): {out.stderr[-2000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if cgroup.exists():
            cgroup.rmdir()  # the child has exited: the cgroup is empty
    return SlowDisk(iops=iops, **got), ""


def _child(cgroup: Path, duration: float) -> None:
    """In the throttled cgroup: the interleaved rounds, printed as one JSON line."""
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    rounds, _, _, _, _ = _rounds(duration, "slow-")
    print(json.dumps(_medians(rounds)))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="slow-disk rounds in a blkio cgroup (used by run_slow_disk)")
    ap.add_argument("--cgroup", type=Path, required=True)
    ap.add_argument("--duration", type=float, required=True)
    a = ap.parse_args()
    _child(a.cgroup, a.duration)
