"""The store's promises: CAS, durability across reopen, group commit, watch replay, compaction."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from edgekube.store import errors, records
from edgekube.store import store as store_mod


def _config(tmp_path: Path, **kw: object) -> store_mod.StoreConfig:
    base: dict[str, object] = {"path": tmp_path, "map_size_mb": 16, "max_size_mb": 64, "compaction_interval_seconds": 0}
    base.update(kw)
    return store_mod.StoreConfig(**base)  # type: ignore[arg-type]


def _obj(name: str, **extra: object) -> dict[str, object]:
    return {"metadata": {"name": name}, **extra}


async def _open(tmp_path: Path, **kw: object) -> store_mod.Store:
    s = store_mod.Store(_config(tmp_path, **kw), memory_prefixes=["/coordination.k8s.io/leases/", "/core/events/"])
    await s.start()
    return s


async def test_create_get_update_delete_with_revisions(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    a = await s.create("/core/configmaps/ns/a", _obj("a", data={"k": "1"}))
    item = s.get("/core/configmaps/ns/a")
    assert item is not None
    assert item.object()["metadata"]["resourceVersion"] == str(a.revision)
    b = await s.update("/core/configmaps/ns/a", _obj("a", data={"k": "2"}), expect_revision=a.revision)
    assert b.revision > a.revision
    with pytest.raises(errors.ConflictError):
        await s.update("/core/configmaps/ns/a", _obj("a"), expect_revision=a.revision)
    with pytest.raises(errors.KeyExistsError):
        await s.create("/core/configmaps/ns/a", _obj("a"))
    with pytest.raises(errors.NotFoundError):
        await s.update("/core/configmaps/ns/missing", _obj("missing"), expect_revision=None)
    d = await s.delete("/core/configmaps/ns/a", expect_revision=b.revision)
    assert d.revision > b.revision
    assert records.decode(d.value)["data"] == {"k": "2"}
    assert s.get("/core/configmaps/ns/a") is None
    await s.close()


async def test_acknowledged_writes_survive_reopen_and_revisions_stay_monotonic(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    revs = [(await s.create(f"/core/configmaps/ns/c{i}", _obj(f"c{i}"))).revision for i in range(20)]
    await s.close()
    s2 = await _open(tmp_path)
    assert [it.key for it in s2.scan("/core/configmaps/ns/").items] == sorted(f"/core/configmaps/ns/c{i}" for i in range(20))
    nxt = await s2.create("/core/configmaps/ns/after", _obj("after"))
    assert nxt.revision > max(revs)
    await s2.close()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    await asyncio.gather(*(s.create(f"/core/configmaps/ns/g{i}", _obj(f"g{i}")) for i in range(64)))
    st = s.stats()
    assert st.writes == 64
    # 64 writers queued in the same loop tick cannot need more than a couple of fsyncs.
    assert st.commits <= 3, st
    await s.close()


async def test_failed_precondition_does_not_fail_its_group(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    await s.create("/core/configmaps/ns/x", _obj("x"))
    results = await asyncio.gather(
        s.create("/core/configmaps/ns/x", _obj("x")),
        s.create("/core/configmaps/ns/y", _obj("y")),
        return_exceptions=True,
    )
    assert isinstance(results[0], errors.KeyExistsError)
    assert not isinstance(results[1], BaseException)
    assert s.get("/core/configmaps/ns/y") is not None
    await s.close()


async def test_list_pages_by_key_and_filters_before_limit(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    for i in range(10):
        await s.create(f"/core/configmaps/ns/p{i}", _obj(f"p{i}", data={"even": str(i % 2 == 0)}))
    await s.create("/core/configmaps/other/z", _obj("z"))
    page = s.scan("/core/configmaps/ns/", limit=3)
    assert [i.key.rsplit("/", 1)[1] for i in page.items] == ["p0", "p1", "p2"]
    assert page.next_key == "/core/configmaps/ns/p2"
    rest = s.scan("/core/configmaps/ns/", start_after=page.next_key)
    assert len(rest.items) == 7 and rest.next_key is None
    even = s.scan("/core/configmaps/ns/", limit=2, accept=lambda v: records.decode(v)["data"]["even"] == "True")
    assert [i.key.rsplit("/", 1)[1] for i in even.items] == ["p0", "p2"]
    assert len(s.scan("/core/configmaps/").items) == 11
    await s.close()


async def test_watch_replays_then_goes_live_without_duplicates(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    first = await s.create("/core/configmaps/ns/w", _obj("w"))
    await s.update("/core/configmaps/ns/w", _obj("w", data={"a": "b"}), expect_revision=None)
    w = await s.watch("/core/configmaps/ns/", since=first.revision)
    await s.create("/core/configmaps/ns/w2", _obj("w2"))
    await s.create("/core/configmaps/other/ignored", _obj("ignored"))
    await s.delete("/core/configmaps/ns/w", expect_revision=None)
    seen = []
    for _ in range(3):
        ev = await w.next(wait=2)
        assert ev is not None
        seen.append((ev.type.value, ev.key.rsplit("/", 1)[1]))
    assert seen == [("MODIFIED", "w"), ("ADDED", "w2"), ("DELETED", "w")]
    assert await w.next(wait=0.05) is None
    w.close()
    await s.close()


async def test_watch_after_reopen_replays_from_the_durable_log(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    a = await s.create("/core/configmaps/ns/r", _obj("r"))
    await s.update("/core/configmaps/ns/r", _obj("r", data={"v": "2"}), expect_revision=None)
    await s.close()
    s2 = await _open(tmp_path)
    w = await s2.watch("/core/configmaps/", since=a.revision)
    ev = await w.next(wait=2)
    assert ev is not None and ev.type is records.EventType.MODIFIED and ev.object()["data"] == {"v": "2"}
    w.close()
    await s2.close()


async def test_slow_watcher_is_dropped_not_buffered_forever(tmp_path: Path) -> None:
    s = await _open(tmp_path, watcher_queue=5)
    w = await s.watch("/core/configmaps/", since=s.revision)
    for i in range(10):
        await s.create(f"/core/configmaps/ns/s{i}", _obj(f"s{i}"))
    assert w.dropped and w.closed
    assert s.stats().watchers == 0
    await s.close()


async def test_compaction_keeps_latest_values_and_expires_old_watches(tmp_path: Path) -> None:
    s = await _open(tmp_path, compaction_window=5, compaction_batch=3, watch_cache_size=4)
    first = await s.create("/core/configmaps/ns/k", _obj("k", data={"n": "0"}))
    for n in range(1, 30):
        await s.update("/core/configmaps/ns/k", _obj("k", data={"n": str(n)}), expect_revision=None)
    keep = await s.create("/core/configmaps/ns/keep", _obj("keep"))
    for n in range(5):
        await s.update("/core/configmaps/ns/k", _obj("k", data={"n": f"x{n}"}), expect_revision=None)
    compacted = await s.compact()
    assert compacted == s.revision - 5
    item = s.get("/core/configmaps/ns/keep")
    assert item is not None and item.revision == keep.revision  # older than the window, still there
    with pytest.raises(errors.CompactedError):
        await s.watch("/core/configmaps/", since=first.revision)
    w = await s.watch("/core/configmaps/", since=compacted)
    ev = await w.next(wait=1)
    assert ev is not None and ev.revision == compacted + 1
    w.close()
    recs = list(s._db.iter_records())
    assert len(recs) <= 7  # the window plus the live record of "keep"
    await s.close()


async def test_memory_tier_never_touches_disk(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    await s.create("/core/configmaps/ns/c", _obj("c"))
    lease = await s.create("/coordination.k8s.io/leases/kube-node-lease/n1", _obj("n1"))
    data_file = tmp_path / "db" / "data.mdb"
    before = (data_file.stat().st_mtime_ns, data_file.read_bytes())
    rev = lease.revision
    for _ in range(50):
        rev = (await s.update("/coordination.k8s.io/leases/kube-node-lease/n1", _obj("n1"), expect_revision=rev)).revision
    assert (data_file.stat().st_mtime_ns, data_file.read_bytes()) == before
    await s.close()


async def test_memory_tier_survives_clean_restart_and_revisions_survive_a_crash(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    lease = await s.create("/coordination.k8s.io/leases/kube-node-lease/n1", _obj("n1"))
    await s.close()
    s2 = await _open(tmp_path)
    item = s2.get("/coordination.k8s.io/leases/kube-node-lease/n1")
    assert item is not None and item.revision == lease.revision
    assert not (tmp_path / "db" / "memory.snapshot").exists()
    top = (await s2.update("/coordination.k8s.io/leases/kube-node-lease/n1", _obj("n1"), expect_revision=None)).revision
    await s2.close()
    # A crash loses the snapshot: the lease is gone, but no revision is handed out twice.
    os.unlink(tmp_path / "db" / "memory.snapshot")
    s3 = await _open(tmp_path)
    assert s3.get("/coordination.k8s.io/leases/kube-node-lease/n1") is None
    again = await s3.create("/core/configmaps/ns/after-crash", _obj("after-crash"))
    assert again.revision > top
    await s3.close()


async def test_bounded_memory_resource_drops_oldest(tmp_path: Path) -> None:
    s = await _open(tmp_path, memory_max_per_resource=3)
    for i in range(5):
        await s.create(f"/core/events/ns/e{i}", _obj(f"e{i}"))
    await asyncio.sleep(0.05)
    names = [i.key.rsplit("/", 1)[1] for i in s.scan("/core/events/").items]
    assert names == ["e2", "e3", "e4"]
    await s.close()


async def test_full_database_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    s = await _open(tmp_path, map_size_mb=1, max_size_mb=1)
    stored = []
    with pytest.raises(errors.StoreFullError, match="maximum size"):
        for i in range(10_000):
            await s.create(f"/core/configmaps/ns/f{i:05d}", _obj(f"f{i}", data={"x": "y" * 2000}))
            stored.append(i)
    assert stored, "some writes fit before the map filled"
    assert len(s.scan("/core/configmaps/ns/").items) == len(stored)
    await s.close()


async def test_scan_at_an_earlier_revision_is_a_consistent_snapshot(tmp_path: Path) -> None:
    s = await _open(tmp_path, compaction_window=1000)
    for i in range(6):
        await s.create(f"/core/configmaps/ns/k{i}", _obj(f"k{i}", data={"v": "0"}))
    snap = s.revision
    first = s.scan("/core/configmaps/ns/", limit=2)
    assert [i.key for i in first.items] == ["/core/configmaps/ns/k0", "/core/configmaps/ns/k1"]
    # After the first page: an update, a delete, a create and a delete-then-recreate.
    await s.update("/core/configmaps/ns/k2", _obj("k2", data={"v": "1"}), expect_revision=None)
    await s.delete("/core/configmaps/ns/k3", expect_revision=None)
    await s.create("/core/configmaps/ns/k2a", _obj("k2a"))
    await s.delete("/core/configmaps/ns/k4", expect_revision=None)
    await s.create("/core/configmaps/ns/k4", _obj("k4", data={"v": "new"}))
    rest = s.scan("/core/configmaps/ns/", start_after=first.next_key, revision=snap)
    assert [i.key.rsplit("/", 1)[1] for i in rest.items] == ["k2", "k3", "k4", "k5"]
    assert [i.object()["data"]["v"] for i in rest.items] == ["0", "0", "0", "0"]
    assert rest.revision == snap
    page = s.scan("/core/configmaps/ns/", start_after=first.next_key, revision=snap, limit=2)
    assert [i.key.rsplit("/", 1)[1] for i in page.items] == ["k2", "k3"] and page.next_key == "/core/configmaps/ns/k3"
    # Compaction past the snapshot makes it unreadable; newer snapshots stay exact.
    mid = s.revision
    await s.update("/core/configmaps/ns/k5", _obj("k5", data={"v": "2"}), expect_revision=None)
    s._config = dataclasses.replace(s._config, compaction_window=1)
    await s.compact()
    with pytest.raises(errors.CompactedError):
        s.scan("/core/configmaps/ns/", revision=snap)
    at_mid = s.scan("/core/configmaps/ns/", revision=s.compacted)
    assert {i.key.rsplit("/", 1)[1]: i.object()["data"]["v"] for i in at_mid.items if "data" in i.object()} == {
        "k0": "0", "k1": "0", "k2": "1", "k4": "new", "k5": "0"}
    assert mid == s.compacted
    await s.close()


async def test_a_closed_store_refuses_work_instead_of_hanging(tmp_path: Path) -> None:
    s = await _open(tmp_path, compaction_window=1)
    for i in range(3):
        await s.create(f"/core/configmaps/ns/c{i}", _obj(f"c{i}"))
    await s.close()
    with pytest.raises(errors.ClosedError):
        s.create("/core/configmaps/ns/late", _obj("late"))
    with pytest.raises(errors.ClosedError):
        await asyncio.wait_for(s.compact(), 5)


def _break_value(s: store_mod.Store, key: str) -> int:
    """Overwrite `key`'s current log record with one whose value is not msgpack (bytes flipped on
    the card); returns its revision."""
    import msgpack

    from edgekube.store import lmdb_log

    db = s._db
    with db._env.begin(write=True) as txn:
        raw_rev = txn.get(key.encode(), db=db._index)
        rec = lmdb_log._unpack_record(lmdb_log.rev_int(raw_rev), txn.get(raw_rev, db=db._log))
        txn.put(raw_rev, msgpack.packb([rec.key, int(rec.op), rec.prev_revision, b"\xc1\xc1\xc1"]), db=db._log)
    return lmdb_log.rev_int(raw_rev)


async def test_undecodable_records_are_skipped_by_every_reader_and_can_be_deleted(tmp_path: Path) -> None:
    """Lists, paged lists at an older revision, watch replays from the log and compaction all
    skip a damaged record (noted once, with its key); a delete with a stand-in removes it."""
    s = await _open(tmp_path, compaction_window=1)
    first = await s.create("/core/configmaps/ns/a", _obj("a"))
    await s.create("/core/configmaps/ns/b", _obj("b", data={"k": "v"}))
    await s.create("/core/configmaps/ns/c", _obj("c"))
    bad_rev = _break_value(s, "/core/configmaps/ns/b")
    item = s.get("/core/configmaps/ns/b")
    assert item is not None
    with pytest.raises(errors.CorruptRecordError, match="/core/configmaps/ns/b"):
        item.object()
    page = s.scan("/core/configmaps/ns/")
    assert [k for k, _ in ((i.key, o) for i, o in s.objects(page.items, reader="test"))] == [
        "/core/configmaps/ns/a", "/core/configmaps/ns/c"]
    assert s.damage.records == 1
    # A watch from before replays from the ring (values as written) and, after a reopen, from
    # the damaged log: the event is delivered and its decode fails there, naming the key.
    await s.close()
    s = await _open(tmp_path, compaction_window=1)
    w = await s.watch("/core/configmaps/ns/", since=first.revision)
    seen = []
    for _ in range(2):
        ev = await w.next(wait=1)
        assert ev is not None
        seen.append(ev.key)
        if ev.revision == bad_rev:
            with pytest.raises(errors.CorruptRecordError):
                ev.object()
    w.close()
    assert seen == ["/core/configmaps/ns/b", "/core/configmaps/ns/c"]
    # A consistent paged list at an older revision walks the damaged record's chain.
    await s.update("/core/configmaps/ns/c", _obj("c", data={"x": "y"}), expect_revision=None)
    old = s.scan("/core/configmaps/ns/", revision=bad_rev + 1, limit=5)
    assert [i.key for i in old.items] == ["/core/configmaps/ns/a", "/core/configmaps/ns/b", "/core/configmaps/ns/c"]
    # Without a stand-in a delete cannot record the last state; with one it goes.
    with pytest.raises(errors.CorruptRecordError):
        await s.delete("/core/configmaps/ns/b", expect_revision=None)
    gone = await s.delete("/core/configmaps/ns/b", expect_revision=None, stand_in=_obj("b"))
    assert records.decode(gone.value)["metadata"] == {"name": "b", "resourceVersion": str(gone.revision)}
    assert s.get("/core/configmaps/ns/b") is None
    assert await s.compact() > bad_rev  # compaction goes past it
    await s.close()


async def test_a_damaged_log_record_is_skipped_by_scans_and_replays(tmp_path: Path) -> None:
    s = await _open(tmp_path)
    a = await s.create("/core/configmaps/ns/a", _obj("a"))
    b = await s.create("/core/configmaps/ns/b", _obj("b"))
    await s.create("/core/configmaps/ns/c", _obj("c"))
    from edgekube.store import lmdb_log

    with s._db._env.begin(write=True) as txn:
        txn.put(lmdb_log.rev_bytes(b.revision), b"\x94\xa5ab", db=s._db._log)
    assert [i.key for i in s.scan("/core/configmaps/ns/").items] == ["/core/configmaps/ns/a", "/core/configmaps/ns/c"]
    with pytest.raises(errors.CorruptRecordError, match="/core/configmaps/ns/b"):
        s.get("/core/configmaps/ns/b")
    replayed = s._db.read_log(a.revision, prefix="/core/configmaps/", limit=10)
    assert [r.key for r in replayed] == ["/core/configmaps/ns/c"]
    assert s.damage.records == 2  # the list's and the replay's (no key known there)
    await s.close()
