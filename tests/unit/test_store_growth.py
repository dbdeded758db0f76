"""The LMDB map grows (`set_mapsize`) while other threads read, as the server's do: the event
loop's GETs, watch replays in the executor and the offload worker read while the writer thread
commits. LMDB requires that no transaction be open during the remap; py-lmdb fails the reads
that overlap it (which would read as a damaged database) and a write abort waits for every
operation in flight (which busy readers could put off for ever)."""

from __future__ import annotations

import threading
from pathlib import Path

from edgekube.store import lmdb_log, records

MiB = 1 << 20


def _batch(first: int, n: int) -> list[lmdb_log.Write]:
    return [lmdb_log.Write(op=records.Op.CREATE, key=f"/core/configmaps/ns/c{rev:06d}",
                           obj={"metadata": {"name": f"c{rev}"}, "data": {"x": "y" * 2000}},
                           expect_revision=None, revision=rev)
            for rev in range(first, first + n)]


def test_the_map_grows_while_other_threads_read(tmp_path: Path) -> None:
    db = lmdb_log.LmdbLog(tmp_path / "db", map_size=MiB, max_size=256 * MiB)
    db.commit(_batch(1, 100), meta_rev=100, reserved=None)
    stop = threading.Event()
    failures: list[BaseException] = []
    reads = [0, 0, 0]

    def reader(i: int) -> None:
        while not stop.is_set():
            try:
                page = db.scan("/core/configmaps/ns/", start_after=None, limit=20)
                assert len(page.items) == 20
                assert db.get("/core/configmaps/ns/c000001") is not None
                reads[i] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    written = [100]

    def writer() -> None:
        try:
            rev = 101
            for _ in range(150):
                db.commit(_batch(rev, 100), meta_rev=rev + 99, reserved=None)
                rev += 100
                written[0] = rev - 1
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(3)]
    for t in readers:
        t.start()
    w = threading.Thread(target=writer, daemon=True)
    w.start()
    w.join(120)
    hung = w.is_alive()
    stop.set()
    for t in readers:
        t.join(10)
    assert not hung, f"the writer hung after {written[0]} records (map {db._env.info()['map_size'] // MiB} MiB)"
    assert failures == []
    assert all(n > 0 for n in reads)
    assert db._env.info()["map_size"] >= 32 * MiB
    assert db.state()[0] == written[0] == 15100
    assert db.get("/core/configmaps/ns/c015100") is not None
    db.close()


def test_one_batch_larger_than_twice_the_map_is_taken(tmp_path: Path) -> None:
    """The map doubles until the batch fits (it used to double once, then report the maximum
    size reached)."""
    db = lmdb_log.LmdbLog(tmp_path / "db", map_size=MiB, max_size=64 * MiB)
    db.commit(_batch(1, 3000), meta_rev=3000, reserved=None)  # about 6 MiB in one transaction
    assert db.get("/core/configmaps/ns/c003000") is not None
    db.close()
