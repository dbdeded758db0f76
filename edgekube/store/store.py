"""The store: one revision counter over a durable LMDB tier and a volatile memory tier.

Writes go through one queue to one writer task (group commit). The writer takes everything that
is queued, gives each write the next revision, commits the durable ones in a single LMDB
transaction on the writer thread (one fsync for the whole group), applies the volatile ones in
memory, and only then resolves each caller's future and publishes the events in revision order.
So a write is acknowledged only once it is durable, concurrent writers share fsyncs, and every
watcher sees revisions in order. While a commit is in flight new writes queue up and form the
next group, so under load groups grow by themselves and an idle store does nothing.

Volatile keys (the prefixes passed as `memory_prefixes`) never reach the disk per write. Their
revisions come from blocks reserved on disk (`revision_reserve` at a time) so that after a crash
the counter resumes above anything a client could have seen.

Compaction runs on the writer thread in bounded batches; it drops superseded log records older
than the window, keeps every key's latest value, and moves the compacted revision forward.
Watches from before it answer `CompactedError` (410 Expired). When room runs low (lmdb_log's
reserve) and deletes land, it runs at once over the whole history, so that the room they free
comes back.

No stored record can stop a reader: one that cannot be decoded raises `CorruptRecordError`
naming its key, and every reader notes it in `damage` (logged once, counted) and goes on.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from edgekube._cogs import offload as offload_mod
from edgekube.store import encryption, errors, lmdb_log, memory, records, watch

log = logging.getLogger(__name__)

_REPLAY_LIMIT = 1_000_000
_ALL_WATCHER_LIMIT = 100_000

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    path: Path
    map_size_mb: int = 1024
    max_size_mb: int = 8192
    compaction_interval_seconds: float = 300.0
    compaction_window: int = 10_000
    compaction_batch: int = 1000
    watch_cache_size: int = 4096
    watcher_queue: int = 1000
    revision_reserve: int = 10_000
    # Zeros kept written ahead of the database's end, on file systems where that spares each
    # commit a journal flush (lmdb_log); 0 turns it off.
    preallocate_mb: int = 1
    # Room kept for deletes: below it, the database takes only writes that free space (lmdb_log).
    reserve_mb: int = 16
    memory_max_per_resource: int = 10_000
    # Secrets are encrypted at rest with the keys in this file (store/encryption.py); None:
    # values are stored as they are.
    encryption_key_file: Path | None = None
    # LMDB's lock file in memory (`lmdb_log._place_lock_file`): the server's store, not tools'.
    lock_in_memory: bool = False


@dataclasses.dataclass(slots=True)
class _Pending:
    write: lmdb_log.Write
    memory: bool
    future: asyncio.Future[lmdb_log.Applied]


@dataclasses.dataclass(frozen=True)
class StoreStats:
    revision: int
    compacted: int
    commits: int
    writes: int
    memory_objects: int
    watchers: int
    damaged_records: int


class Store:
    def __init__(self, config: StoreConfig, *, memory_prefixes: Iterable[str]) -> None:
        self._config = config
        self._memory_prefixes = tuple(memory_prefixes)
        db_path = config.path / "db"
        db_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Records any reader had to skip because they cannot be decoded (logged once, counted).
        self.damage = records.Damage()

        def open_db(transformer: lmdb_log.ValueTransformer | None = None) -> lmdb_log.LmdbLog:
            return lmdb_log.LmdbLog(
                db_path,
                map_size=config.map_size_mb << 20,
                max_size=config.max_size_mb << 20,
                preallocate=(config.preallocate_mb << 20) if lmdb_log.preallocation_helps(db_path) else 0,
                damage=self.damage,
                reserve=config.reserve_mb << 20,
                lock_in_memory=config.lock_in_memory,
                transformer=transformer,
            )

        # Secrets encrypted at rest (store/encryption.py): the key file, and a re-encryption
        # pass when one is due.
        self.encryption: encryption.Transformer | None = None
        if config.encryption_key_file is None:
            self._db = open_db()
        else:
            self._db, self.encryption = encryption.boot(db_path, open_db, key_file=config.encryption_key_file)
        self._memory = memory.MemoryTier(max_per_resource=config.memory_max_per_resource)
        self._snapshot = config.path / "db" / "memory.snapshot"
        disk_rev, reserved, compacted = self._db.state()
        snap_rev = self._memory.load(self._snapshot)
        self._revision = max(disk_rev, reserved, snap_rev)
        self._reserved = reserved
        self._compacted = compacted
        self._hub = watch.WatchHub(
            ring_size=config.watch_cache_size,
            start_revision=self._revision,
            watcher_limit=config.watcher_queue,
        )
        # A single thread: LMDB takes one writer at a time, and one thread keeps commit order.
        self._thread = _WriterThread()
        # Pending writes: a deque and a wake-up event (cheaper per write than asyncio.Queue).
        self._pending: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._writer: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False
        self._commits = 0
        self._writes = 0
        # Set when deletes landed while room was low: compact now, history and all.
        self._compact_now = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        # Always running: besides its interval (when set), low space wakes it at once.
        self._compactor = asyncio.create_task(self._compact_loop(), name="store-compactor")

    async def close(self) -> None:
        """Finish queued writes, save the memory tier, close the database."""
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            await asyncio.gather(self._compactor, return_exceptions=True)
        if self._writer is not None:
            self._stopping = True
            self._wakeup.set()
            await asyncio.gather(self._writer, return_exceptions=True)
        self._hub.close_all()
        if len(self._memory):
            await self._thread.run(lambda: self._memory.save(self._snapshot, revision=self._revision))
        self._thread.stop()
        self._db.close()

    def tasks(self) -> list[asyncio.Task[None]]:
        """The store's long-running tasks, for the runtime to supervise."""
        return [t for t in (self._writer, self._compactor) if t is not None]

    @property
    def revision(self) -> int:
        """The newest revision whose events have been published."""
        return self._revision

    @property
    def compacted(self) -> int:
        return self._compacted

    def stats(self) -> StoreStats:
        return StoreStats(
            revision=self._revision,
            compacted=self._compacted,
            commits=self._commits,
            writes=self._writes,
            memory_objects=len(self._memory),
            watchers=self._hub.watcher_count(),
            damaged_records=self.damage.records,
        )

    def cluster_id(self) -> str | None:
        return self._db.cluster_id()

    def set_cluster_id(self, cluster: str) -> None:
        self._db.set_cluster_id(cluster)

    def is_memory(self, key: str) -> bool:
        return key.startswith(self._memory_prefixes)

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> records.Item | None:
        if self.is_memory(key):
            return self._memory.get(key)
        return self._db.get(key)

    def scan(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        limit: int | None = None,
        accept: Callable[[bytes], bool] | None = None,
        revision: int | None = None,
    ) -> records.Page:
        """Live keys under `prefix`; with `revision`, as they were then (CompactedError when
        that is older than the log keeps). The memory tier keeps no history: it answers now."""
        if self.is_memory(prefix):
            return self._memory.scan(prefix, start_after=start_after, limit=limit, accept=accept, revision=self._revision)
        if revision is not None and revision < self._revision:
            return self._db.scan_at(prefix, revision=revision, start_after=start_after, limit=limit, accept=accept)
        page = self._db.scan(prefix, start_after=start_after, limit=limit, accept=accept)
        # The snapshot may include a commit whose events are not published yet; its revision is
        # then ahead of ours, which is right: a watch from it must not replay those events again.
        return dataclasses.replace(page, revision=records.Revision(max(page.revision, self._revision)))

    async def scan_off_loop(
        self,
        prefix: str,
        *,
        offload: offload_mod.Offload,
        start_after: str | None = None,
        limit: int | None = None,
        accept: Callable[[bytes], bool] | None = None,
        revision: int | None = None,
    ) -> records.Page:
        """`scan`, with the reading and the `accept` filter (which must be pure) on `offload`'s
        worker thread: a list of thousands of objects, a selector decoding each, takes far
        longer than the event loop may be held. LMDB reads from any thread; the memory tier is
        copied on the loop first (the loop changes it)."""
        if self.is_memory(prefix):
            items = self._memory.snapshot(prefix, start_after=start_after)
            return await offload.always(memory.page, items, limit=limit, accept=accept, revision=self._revision)
        if revision is not None and revision < self._revision:
            return await offload.always(self._db.scan_at, prefix, revision=revision, start_after=start_after,
                                        limit=limit, accept=accept)
        # Taken before the snapshot: every event up to it is in the snapshot or of another prefix
        # (a volatile one), and any later event of this prefix has a higher revision (see `scan`).
        published = self._revision
        page = await offload.always(self._db.scan, prefix, start_after=start_after, limit=limit, accept=accept)
        return dataclasses.replace(page, revision=records.Revision(max(page.revision, published)))

    def copy_database(self, dest: Path) -> None:
        """A consistent copy of the database into the empty directory `dest` (`snapshot.save`'s
        copier for the server itself: one environment per process). Blocking: run it in a thread."""
        self._db.copy_to(dest)

    def objects(self, items: Iterable[records.Item], *, reader: str) -> Iterator[tuple[records.Item, dict[str, Any]]]:
        """Each item with its object, skipping (and noting) those that cannot be decoded."""
        return records.objects(items, damage=self.damage, reader=reader)

    # --- writes ------------------------------------------------------------------------------

    # The write methods return the future their group commit resolves (await it): no coroutine
    # of their own, as they run once per write.

    def create(self, key: str, obj: dict[str, Any]) -> asyncio.Future[lmdb_log.Applied]:
        """Store a new key. `obj` is owned by the store from here on."""
        return self._submit(lmdb_log.Write(op=records.Op.CREATE, key=key, obj=obj, expect_revision=None))

    def update(
        self, key: str, obj: dict[str, Any], *, expect_revision: int | None
    ) -> asyncio.Future[lmdb_log.Applied]:
        return self._submit(lmdb_log.Write(op=records.Op.UPDATE, key=key, obj=obj, expect_revision=expect_revision))

    def delete(self, key: str, *, expect_revision: int | None,
               stand_in: dict[str, Any] | None = None) -> asyncio.Future[lmdb_log.Applied]:
        """Delete a key. `stand_in` is the last state to record when the stored one cannot be
        decoded (without it, such a delete fails with `CorruptRecordError`)."""
        return self._submit(lmdb_log.Write(op=records.Op.DELETE, key=key, obj=stand_in, expect_revision=expect_revision))

    def _submit(self, write: lmdb_log.Write) -> asyncio.Future[lmdb_log.Applied]:
        if self._closed:
            raise errors.ClosedError("the store is shutting down")
        fut: asyncio.Future[lmdb_log.Applied] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(write=write, memory=self.is_memory(write.key), future=fut))
        self._wakeup.set()
        return fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                # Let writers that are ready in this loop iteration join the group.
                await asyncio.sleep(0)
            batch = list(self._pending)
            self._pending.clear()
            await self._commit_batch(loop, batch)
            # The writers just answered are scheduled to run next; let them queue their next
            # writes before looking, so they form one group without waking this task again.
            await asyncio.sleep(0)

    async def _commit_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        rev = self._revision
        durable: list[lmdb_log.Write] = []
        reserve: int | None = None
        for p in batch:
            rev += 1
            p.write.revision = rev
            if p.memory:
                if rev > self._reserved and reserve is None:
                    reserve = rev + self._config.revision_reserve
            else:
                durable.append(p.write)
        top = rev
        results: list[lmdb_log.Outcome] = []
        if durable or reserve is not None:
            meta_rev = durable[-1].revision if durable else 0
            try:
                results = await self._thread.run(lambda: self._db.commit(durable, meta_rev=meta_rev, reserved=reserve))
            except errors.StoreError as exc:
                # Nothing of this group is durable: fail every write in it, volatile ones too
                # (their revisions were not reserved).
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                return
            except Exception as exc:
                err = errors.StoreError(f"database write failed: {exc}")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                log.exception("store commit failed")
                return
            self._commits += 1
            if reserve is not None:
                self._reserved = reserve
            if self._db.low_space and any(w.op is not records.Op.CREATE for w in durable):
                # What the deletes freed is free only once compacted: do it now, window and all
                # (watches from before answer 410 and relist), so the room comes back.
                self._compact_now.set()
        self._revision = top
        self._writes += len(batch)
        # Durable outcomes come back in batch order; volatile writes are applied here, in turn.
        durable_results = iter(results)
        evictions: list[str] = []
        publish = self._hub.publish
        for p in batch:
            w = p.write
            if p.memory:
                res = self._memory.apply(w)
                if isinstance(res, lmdb_log.Applied) and w.op is records.Op.CREATE:
                    evictions.extend(self._memory.over_limit(w.key))
            else:
                res = next(durable_results)
            if isinstance(res, lmdb_log.Applied):
                publish(
                    records.Event(
                        type=records.event_type(w.op),
                        key=w.key,
                        revision=records.Revision(res.revision),
                        value=res.value,
                        prev_value=res.prev_value,
                    )
                )
                if not p.future.done():
                    p.future.set_result(res)
            elif not p.future.done():
                p.future.set_exception(res)
        for key in evictions:
            # Bounded volatile kinds (Events) drop their oldest objects, as a normal delete.
            fut: asyncio.Future[lmdb_log.Applied] = loop.create_future()
            fut.add_done_callback(lambda f: f.exception())
            self._pending.append(
                _Pending(
                    write=lmdb_log.Write(op=records.Op.DELETE, key=key, obj=None, expect_revision=None),
                    memory=True,
                    future=fut,
                )
            )

    # --- watch -------------------------------------------------------------------------------

    async def watch(self, prefix: str, *, since: int) -> watch.Watcher:
        """Events under `prefix` with revision > `since`: replayed history, then live ones.

        Raises CompactedError when history from `since` is no longer kept.
        """
        # "/" watches every key (in-process consumers only: the garbage collector). Its buffer is
        # larger than a client's: dropping it means a re-list of the whole store, which is the
        # expensive path under exactly the write bursts that would overflow it.
        everything = prefix == "/"
        resource = watch.ALL if everything else records.resource_prefix(prefix if prefix.count("/") >= 3 else prefix + "x/")
        watcher = self._hub.subscribe(resource, prefix, limit=_ALL_WATCHER_LIMIT if everything else None)
        try:
            if since >= self._revision:
                watcher._replay([], after=since)
            elif since >= self._hub.ring_start:
                watcher._replay(self._hub.recent(since, prefix=prefix), after=since)
            elif self.is_memory(prefix) or since < self._compacted:
                oldest = self._hub.ring_start if self.is_memory(prefix) else self._compacted
                raise errors.CompactedError(since, oldest=oldest)
            else:
                recs = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self._db.read_log(since, prefix=prefix, limit=_REPLAY_LIMIT)
                )
                # Compaction may have run meanwhile; then the replay could have holes.
                if since < self._compacted:
                    raise errors.CompactedError(since, oldest=self._compacted)
                events = [
                    records.Event(
                        type=records.event_type(r.op), key=r.key, revision=records.Revision(r.revision), value=r.value
                    )
                    for r in recs
                ]
                watcher._replay(events, after=since)
        except BaseException:
            watcher.close()
            raise
        return watcher

    # --- compaction --------------------------------------------------------------------------

    @property
    def low_space(self) -> bool:
        """Room is below the reserve: only writes that free space are taken (lmdb_log)."""
        return self._db.low_space

    async def compact(self, *, window: int | None = None) -> int:
        """Compact up to `revision - window` (the configured window by default); returns the new
        compacted revision."""
        target = self._revision - (self._config.compaction_window if window is None else window)
        if target <= self._compacted:
            return self._compacted
        while True:
            new, done = await self._thread.run(lambda: self._db.compact(target, batch=self._config.compaction_batch))
            self._compacted = new
            if done:
                return new
            await asyncio.sleep(0)

    async def _compact_loop(self) -> None:
        interval = self._config.compaction_interval_seconds
        while True:
            try:
                await asyncio.wait_for(self._compact_now.wait(), interval if interval > 0 else None)
            except TimeoutError:
                pass
            urgent = self._compact_now.is_set()
            self._compact_now.clear()
            try:
                await self.compact(window=0 if urgent else None)
            except errors.StoreError:
                log.exception("compaction failed; will retry")


class _WriterThread:
    """The one thread that writes to LMDB: jobs run in the order given, and each result goes back
    to the loop that asked for it. (A ThreadPoolExecutor does the same with a second future and a
    chain of callbacks per job, which costs a group commit ~10-20 us more.)"""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        self._stopped = False

    def run(self, job: Callable[[], T]) -> asyncio.Future[T]:
        if self._stopped:
            raise errors.ClosedError("the store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((job, fut))
        return fut

    def stop(self) -> None:
        """Finish the jobs given so far, then end the thread."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, fut = item
            if fut.cancelled():
                continue  # nobody waits for it (a compaction batch given up at close)
            result: Any = None
            error: BaseException | None = None
            try:
                result = job()
            except BaseException as exc:  # the thread must outlive any job, or callers wait forever
                error = exc
            try:
                fut.get_loop().call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for this any more


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
