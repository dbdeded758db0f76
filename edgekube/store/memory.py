"""The volatile tier: Leases and Events kept in memory, never written per change.

A node heartbeats its Lease every ten seconds and controllers record Events all day; writing each
to flash would wear an SD card for data that is worthless after a crash. This tier holds them in
a dict with the same compare-and-swap semantics as the durable tier, and revisions from the same
global counter (the store reserves blocks of revisions on disk so the counter stays monotonic
across restarts at one write per block).

On a clean shutdown the tier is saved to one snapshot file and loaded at the next boot, then the
file is removed, so an upgrade keeps Leases and Events while a crash never resurrects stale ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from edgekube._cogs import files
from edgekube.store import errors, lmdb_log, records

log = logging.getLogger(__name__)


def page(items: list[records.Item], *, limit: int | None, accept: Callable[[bytes], bool] | None,
         revision: int) -> records.Page:
    """A page of a `MemoryTier.snapshot`: the accepted items up to `limit` (pure: may run off
    the event loop)."""
    out: list[records.Item] = []
    next_key: str | None = None
    for item in items:
        if limit is not None and len(out) >= limit:
            next_key = out[-1].key
            break
        if accept is not None and not accept(item.value):
            continue
        out.append(item)
    return records.Page(items=out, revision=records.Revision(revision), next_key=next_key)


class MemoryTier:
    def __init__(self, *, max_per_resource: int) -> None:
        self._data: dict[str, tuple[int, bytes]] = {}
        self._max_per_resource = max_per_resource
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> records.Item | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        return records.Item(key=key, revision=records.Revision(entry[0]), value=entry[1])

    def scan(
        self,
        prefix: str,
        *,
        start_after: str | None,
        limit: int | None,
        accept: Callable[[bytes], bool] | None,
        revision: int,
    ) -> records.Page:
        return page(self.snapshot(prefix, start_after=start_after), limit=limit, accept=accept, revision=revision)

    def snapshot(self, prefix: str, *, start_after: str | None) -> list[records.Item]:
        """The items under `prefix` now, in key order: a list of its own, which `page` may filter
        on another thread while this tier changes."""
        keys = sorted(k for k in self._data if k.startswith(prefix) and (start_after is None or k > start_after))
        data = self._data
        return [records.Item(key=k, revision=records.Revision(data[k][0]), value=data[k][1]) for k in keys]

    def apply(self, w: lmdb_log.Write) -> lmdb_log.Outcome:
        cur = self._data.get(w.key)
        if w.op is records.Op.CREATE:
            if cur is not None:
                return errors.KeyExistsError(w.key)
            prev_value = None
        else:
            if cur is None:
                return errors.NotFoundError(w.key)
            if w.expect_revision is not None and w.expect_revision != cur[0]:
                return errors.ConflictError(w.key, expected=w.expect_revision, actual=cur[0])
            prev_value = cur[1]
        if w.op is records.Op.DELETE:
            obj_or_error = lmdb_log.deleted_state(w, prev_value, revision=cur[0] if cur else 0)
            if isinstance(obj_or_error, errors.CorruptRecordError):
                return obj_or_error
            obj = obj_or_error
            if obj is w.obj:
                prev_value = None
        else:
            assert w.obj is not None
            obj = w.obj
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(w.revision)
        value = records.encode(obj)
        group = records.resource_prefix(w.key)
        if w.op is records.Op.DELETE:
            del self._data[w.key]
            self._counts[group] -= 1
        else:
            if cur is None:
                self._counts[group] = self._counts.get(group, 0) + 1
            self._data[w.key] = (w.revision, value)
        return lmdb_log.Applied(revision=w.revision, value=value, prev_value=prev_value)

    def over_limit(self, key: str) -> list[str]:
        """Oldest keys of `key`'s resource beyond the per-resource bound, to be deleted."""
        group = records.resource_prefix(key)
        excess = self._counts.get(group, 0) - self._max_per_resource
        if excess <= 0:
            return []
        candidates = sorted((rev, k) for k, (rev, _) in self._data.items() if k.startswith(group))
        return [k for _, k in candidates[:excess]]

    # --- snapshot across clean restarts ---------------------------------------------------------

    def save(self, path: Path, *, revision: int) -> None:
        payload: dict[str, Any] = {"revision": revision, "data": {k: list(v) for k, v in self._data.items()}}
        files.write_atomic(path, msgpack.packb(payload, use_bin_type=True))

    def load(self, path: Path) -> int:
        """Load and remove a snapshot; returns the revision it was taken at (0 when none)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0
        try:
            payload = msgpack.unpackb(raw, raw=False)
            for k, (rev, value) in payload["data"].items():
                self._data[k] = (int(rev), bytes(value))
                group = records.resource_prefix(k)
                self._counts[group] = self._counts.get(group, 0) + 1
            revision = int(payload["revision"])
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            # A damaged snapshot only loses volatile data; never refuse to boot over it.
            log.warning("the memory tier's snapshot %s is damaged (%s: %s); Leases and Events start empty",
                        path, type(exc).__name__, exc)
            self._data.clear()
            self._counts.clear()
            revision = 0
        path.unlink()
        files.fsync_dir(path.parent)
        return revision
