"""Records of the revision log and the events the store publishes.

A revision is a global, monotonic integer; every accepted write gets the next one and it becomes
the object's `resourceVersion`. Values travel as msgpack bytes: the store never hands out a
shared mutable object, and decoding happens at the edge that needs a dict.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NewType

import msgpack

from edgekube._cogs import pieces
from edgekube.store import errors

log = logging.getLogger(__name__)

Revision = NewType("Revision", int)


class Op(enum.IntEnum):
    CREATE = 0
    UPDATE = 1
    DELETE = 2


class EventType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


_EVENT_TYPES = {Op.CREATE: EventType.ADDED, Op.UPDATE: EventType.MODIFIED, Op.DELETE: EventType.DELETED}


def event_type(op: Op) -> EventType:
    return _EVENT_TYPES[op]


# Events and items are made once per write or listed object, on the event loop: plain slotted
# dataclasses, as a frozen one costs about 1 us more per instance. Treat them as read-only.
@dataclasses.dataclass(slots=True)
class Event:
    """One change: the object after it (for DELETED, the last state, at the delete revision)."""

    type: EventType
    key: str
    revision: Revision
    value: bytes
    # The value before the change when known (live events); replayed events may lack it.
    prev_value: bytes | None = None
    # The object, decoded ahead for the one consumer that holds this copy of the event (see
    # `loaded`); `object()` hands it over once.
    decoded: dict[str, Any] | None = None

    def object(self) -> dict[str, Any]:
        if self.decoded is not None:
            out, self.decoded = self.decoded, None
            return out
        return decode(self.value, key=self.key, revision=self.revision)

    def fields(self, names: frozenset[str]) -> dict[str, Any]:
        """Only the top-level fields `names` of the object (see `decode_fields`)."""
        return decode_fields(self.value, names, key=self.key, revision=self.revision)

    def loaded(self, obj: dict[str, Any]) -> Event:
        """A copy of this event carrying its object already decoded (off the event loop, for a
        large one): for one consumer, since the object is handed over, not shared."""
        return Event(type=self.type, key=self.key, revision=self.revision, value=self.value,
                     prev_value=self.prev_value, decoded=obj)

    def prev_object(self) -> dict[str, Any] | None:
        return decode(self.prev_value, key=self.key, revision=self.revision) if self.prev_value is not None else None


@dataclasses.dataclass(slots=True)
class Item:
    key: str
    revision: Revision
    value: bytes

    def object(self) -> dict[str, Any]:
        return decode(self.value, key=self.key, revision=self.revision)

    def fields(self, names: frozenset[str]) -> dict[str, Any]:
        """Only the top-level fields `names` of the object (see `decode_fields`)."""
        return decode_fields(self.value, names, key=self.key, revision=self.revision)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    # The revision the list is consistent with (its `resourceVersion`).
    revision: Revision
    # Key to continue after, when the limit cut the list short.
    next_key: str | None


def encode(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def decode(data: bytes, *, key: str = "", revision: int = 0) -> dict[str, Any]:
    """An object from its stored bytes; `CorruptRecordError` naming `key` when they are not one
    (msgpack refuses non-string map keys, truncated or flipped bytes, invalid UTF-8)."""
    try:
        out = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises ValueError, TypeError, UnicodeDecodeError, its own
        raise errors.CorruptRecordError(key, revision=revision, detail=f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, dict):
        raise errors.CorruptRecordError(key, revision=revision, detail=f"a {type(out).__name__}, not an object")
    return out


def decode_fields(data: bytes, fields: frozenset[str], *, key: str = "", revision: int = 0) -> dict[str, Any]:
    """The top-level fields `fields` of an object (those it has), and its `metadata` without
    `managedFields` when asked for: the rest is skipped over without being built, so a reader
    that needs the labels or owners of a 1.5 MiB object pays a scan of its bytes, not the
    hundred thousand objects of a whole decode (its managedFields list every field)."""
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
        unpacker.feed(data)
        out: dict[str, Any] = {}
        for _ in range(unpacker.read_map_header()):
            name = _key(unpacker.unpack())
            if name == "metadata" and name in fields and data[unpacker.tell()] in _MAP_TYPES:
                meta: dict[str, Any] = {}
                for _ in range(unpacker.read_map_header()):
                    field = _key(unpacker.unpack())
                    if field == "managedFields":
                        unpacker.skip()
                    else:
                        meta[field] = unpacker.unpack()
                out[name] = meta
            elif name in fields:
                out[name] = unpacker.unpack()
            else:
                unpacker.skip()
    except Exception as exc:  # as `decode`: whatever msgpack raises is a damaged record
        raise errors.CorruptRecordError(key, revision=revision, detail=f"{type(exc).__name__}: {exc}") from None
    return out


def _key(name: Any) -> str:
    if not isinstance(name, str):  # as `decode`'s strict map keys
        raise ValueError(f"{type(name).__name__} is not allowed for map key")
    return name


# Past this size `decode_in_pieces` decodes a value in pieces rather than in one call.
PIECE_BYTES = 32 * 1024
_MAP_TYPES = frozenset({*range(0x80, 0x90), 0xDE, 0xDF})
_ARRAY_TYPES = frozenset({*range(0x90, 0xA0), 0xDC, 0xDD})


def decode_in_pieces(data: bytes, *, key: str = "", revision: int = 0) -> dict[str, Any]:
    """`decode`, in calls of about `PIECE_BYTES` each, for a large value decoded on a worker
    thread: one msgpack call holds the interpreter lock for as long as it runs (some 20 ms for
    a 1.5 MiB object on a slow core), and the event loop waits that long whichever thread
    decodes; between the calls made here the lock goes back to the loop. About twice the CPU of
    one call, so only for large values."""
    if len(data) <= PIECE_BYTES:
        return decode(data, key=key, revision=revision)
    try:
        out = _pieces(memoryview(data))
    except Exception as exc:  # as `decode`: whatever msgpack raises is a damaged record
        raise errors.CorruptRecordError(key, revision=revision, detail=f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, dict):
        raise errors.CorruptRecordError(key, revision=revision, detail=f"a {type(out).__name__}, not an object")
    return out


def _pieces(view: memoryview) -> Any:
    """The one msgpack object `view` holds. A small one is decoded in one call; a large map or
    array is walked (its entries skipped over, which costs no allocation) and decoded in runs of
    entries of about `PIECE_BYTES`, each run as a map or array of its own, and an entry larger
    than that the same way, recursively."""
    if len(view) <= PIECE_BYTES:
        return msgpack.unpackb(view, raw=False)
    head = view[0]
    is_map = head in _MAP_TYPES
    if not is_map and head not in _ARRAY_TYPES:
        return msgpack.unpackb(view, raw=False)  # one large string or binary: a copy, no walk
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(view))
    unpacker.feed(view)
    count = unpacker.read_map_header() if is_map else unpacker.read_array_header()
    out: dict[Any, Any] | list[Any] = {} if is_map else []
    run_start = unpacker.tell()  # where the current run of small entries starts
    run = 0  # entries in it

    def flush(end: int) -> None:
        if run:
            part = msgpack.unpackb(_header(run, is_map) + view[run_start:end], raw=False)
            if isinstance(out, dict):
                out.update(part)
            else:
                out.extend(part)

    for _ in range(count):
        entry = unpacker.tell()
        if is_map:
            unpacker.skip()
        value = unpacker.tell()
        unpacker.skip()
        end = unpacker.tell()
        if end - value > PIECE_BYTES:
            flush(entry)
            big = _pieces(view[value:end])
            if isinstance(out, dict):
                out[_key(msgpack.unpackb(view[entry:value], raw=False))] = big
            else:
                out.append(big)
            run, run_start = 0, end
            continue
        run += 1
        if end - run_start >= PIECE_BYTES:
            flush(end)
            run, run_start = 0, end
    flush(unpacker.tell())
    return out


# Values per msgpack call of `encode_in_pieces` (some 0.3 ms of a slow core's time).
PIECE_VALUES = 4096


def encode_in_pieces(obj: Any, *, small: Callable[[Any], bytes] = encode) -> bytes:
    """`encode(obj)`, the same bytes, in msgpack calls of about `PIECE_VALUES` values each: one
    call on a 1.5 MiB object holds the interpreter lock (and so the event loop, from whatever
    thread) for 3-10 ms. A large map or array is written as its header, then runs of entries
    packed as maps or arrays of their own less their headers, an entry too large for a run the
    same way, recursively. Some more CPU than one call (the entries are counted in Python), so
    only for large objects (`small` encodes the others: a packer of the caller's)."""
    if not pieces.larger_than(obj, PIECE_VALUES):
        return small(obj)
    out: list[bytes] = []
    _encode_pieces(obj, out)
    return b"".join(out)


def _encode_pieces(value: Any, out: list[bytes]) -> None:
    if not isinstance(value, dict | list) or len(value) <= 1:
        out.append(msgpack.packb(value, use_bin_type=True))
        return
    is_map = isinstance(value, dict)
    entries: list[Any] = list(value.items()) if isinstance(value, dict) else value
    children: list[Any] = list(value.values()) if isinstance(value, dict) else value
    out.append(_header(len(entries), is_map))
    # A run's weight: its entries and their containers' own entries (not deeper: a tree as
    # wide at each level as the object is large is no API object's shape, and at worst a run
    # is then the whole object, one call as before).
    start, weight = 0, 0
    for i, child in enumerate(children):
        size = len(child) + 1 if type(child) is dict or type(child) is list else 1
        if size > PIECE_VALUES:
            _encode_run(entries, start, i, is_map, out)
            if is_map:
                out.append(msgpack.packb(entries[i][0], use_bin_type=True))
            _encode_pieces(child, out)
            start, weight = i + 1, 0
            continue
        weight += size
        if weight >= PIECE_VALUES:
            _encode_run(entries, start, i + 1, is_map, out)
            start, weight = i + 1, 0
    _encode_run(entries, start, len(entries), is_map, out)


def _encode_run(entries: Any, start: int, end: int, is_map: bool, out: list[bytes]) -> None:
    if end > start:
        run = entries[start:end]
        packed = msgpack.packb(dict(run) if is_map else run, use_bin_type=True)
        out.append(packed[len(_header(end - start, is_map)):])


def _header(count: int, is_map: bool) -> bytes:
    if count < 16:
        return bytes([(0x80 if is_map else 0x90) | count])
    if count < 1 << 16:
        return (b"\xde" if is_map else b"\xdc") + count.to_bytes(2, "big")
    return (b"\xdf" if is_map else b"\xdd") + count.to_bytes(4, "big")


def objects(items: Iterable[Item], *, damage: Damage, reader: str) -> Iterator[tuple[Item, dict[str, Any]]]:
    """Each item with its object, skipping (and noting in `damage`) those that cannot be decoded."""
    for item in items:
        try:
            yield item, item.object()
        except errors.CorruptRecordError as exc:
            damage.note(exc, reader=reader)


class Damage:
    """The records readers had to skip: each logged once, with its key, and counted.

    A record that cannot be decoded must never stop the server (it would stop again at every
    boot): every reader catches `CorruptRecordError`, notes it here and goes on without it.
    """

    _LOGGED_MAX = 10_000  # distinct records logged; past that only counted

    def __init__(self) -> None:
        self.skipped = 0
        self._logged: set[tuple[str, int]] = set()
        self._lock = threading.Lock()  # readers off the event loop (lists) note damage too

    @property
    def records(self) -> int:
        """How many distinct damaged records were met (up to the logging bound)."""
        return len(self._logged)

    def note(self, exc: errors.CorruptRecordError, *, reader: str) -> None:
        seen = (exc.key, exc.revision)
        with self._lock:
            self.skipped += 1
            if seen in self._logged or len(self._logged) >= self._LOGGED_MAX:
                return
            self._logged.add(seen)
        log.error("%s; skipped by %s. Run `edgekube store check` for the whole picture; deleting the object "
                  "through the API removes it", exc, reader)


def resource_prefix(key: str) -> str:
    """`/core/pods/default/x` -> `/core/pods/`: the part that names one resource type."""
    second = key.index("/", 1)
    third = key.index("/", second + 1)
    return key[: third + 1]
