"""Records of the revision log and the events the store publishes.

A revision is a global, monotonic integer; every accepted write gets the next one and it becomes
the object's `resourceVersion`. Values travel as msgpack bytes: the store never hands out a
shared mutable object, and decoding happens at the edge that needs a dict.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, NewType

import msgpack

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
        return decode(self.value)

    def prev_object(self) -> dict[str, Any] | None:
        return decode(self.prev_value) if self.prev_value is not None else None


@dataclasses.dataclass(slots=True)
class Item:
    key: str
    revision: Revision
    value: bytes

    def object(self) -> dict[str, Any]:
        return decode(self.value)


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


def decode(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return out


def resource_prefix(key: str) -> str:
    """`/core/pods/default/x` -> `/core/pods/`: the part that names one resource type."""
    second = key.index("/", 1)
    third = key.index("/", second + 1)
    return key[: third + 1]
