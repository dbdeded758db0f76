"""Records of the revision log and the events the store publishes.

A revision is a global, monotonic integer; every accepted write gets the next one and it becomes
the object's `resourceVersion`. Values travel as msgpack bytes: the store never hands out a
shared mutable object, and decoding happens at the edge that needs a dict.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Iterable, Iterator
from typing import Any, NewType

import msgpack

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

    def object(self) -> dict[str, Any]:
        return decode(self.value, key=self.key, revision=self.revision)

    def prev_object(self) -> dict[str, Any] | None:
        return decode(self.prev_value, key=self.key, revision=self.revision) if self.prev_value is not None else None


@dataclasses.dataclass(slots=True)
class Item:
    key: str
    revision: Revision
    value: bytes

    def object(self) -> dict[str, Any]:
        return decode(self.value, key=self.key, revision=self.revision)


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

    @property
    def records(self) -> int:
        """How many distinct damaged records were met (up to the logging bound)."""
        return len(self._logged)

    def note(self, exc: errors.CorruptRecordError, *, reader: str) -> None:
        self.skipped += 1
        seen = (exc.key, exc.revision)
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
