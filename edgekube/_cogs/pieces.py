"""Long C calls cut into short ones, so that a worker thread gives the interpreter lock back.

A thread running Python hands the interpreter lock to a waiting one (the event loop) every
switch interval; a thread inside one C call does not, however long the call. `sorted()` of
45,000 items, one msgpack or JSON call on a 1 MB object: each holds the lock for tens of
milliseconds, and the event loop, which needs the lock for anything it does, stalls that long
although the work runs on the offload worker. These do the same work in calls of about
`PIECE` items each, with Python between them (where the lock changes hands):

- `sorted_in_pieces(items)`: runs of `PIECE` sorted one call each, then merged pairwise, each
  merge in steps of at most `PIECE` items from either run (found by bisection), each step one
  `sorted()` of two sorted runs, which Timsort merges in linear time. About twice the CPU of
  one `sorted()`, so only for large inputs.
- `larger_than(value, items)`: whether a JSON tree holds more than `items` values, found by a
  walk that stops there, so it costs a small tree its size and a large one `items` steps: how
  a caller with no byte size at hand (an object built in memory) decides to send work on it to
  the worker.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

# Items per call: sorting 4,096 short strings takes about half a millisecond on a slow core.
PIECE = 4096


def sorted_in_pieces(items: Iterable[T]) -> list[T]:
    """`sorted(items)`, in calls of about `PIECE` items (a linear merge for the larger ones)."""
    seq: list[Any] = list(items)
    if len(seq) <= PIECE:
        seq.sort()
        return seq
    runs: list[list[Any]] = [sorted(seq[i:i + PIECE]) for i in range(0, len(seq), PIECE)]
    while len(runs) > 1:
        merged = [_merge(runs[i], runs[i + 1]) for i in range(0, len(runs) - 1, 2)]
        if len(runs) % 2:
            merged.append(runs[-1])
        runs = merged
    return runs[0]


def _merge(a: list[Any], b: list[Any]) -> list[Any]:
    """Sorted `a` and `b` as one sorted list, in steps of at most 2 * `PIECE` items: each step
    takes the next `PIECE` items of the run whose `PIECE`-th next item is smaller, and the items
    of the other run up to that one."""
    out: list[Any] = []
    i = j = 0
    while i < len(a) and j < len(b):
        ia, jb = min(i + PIECE, len(a)), min(j + PIECE, len(b))
        if a[ia - 1] <= b[jb - 1]:
            i2, j2 = ia, bisect.bisect_right(b, a[ia - 1], j, jb)
        else:
            i2, j2 = bisect.bisect_right(a, b[jb - 1], i, ia), jb
        out += sorted(a[i:i2] + b[j:j2])
        i, j = i2, j2
    out += a[i:] if i < len(a) else b[j:]
    return out


def larger_than(value: Any, items: int) -> bool:
    """Whether `value` (dicts, lists and scalars) holds more than `items` values in all."""
    stack = [value]
    seen = 0
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        seen += len(children)
        if seen > items:
            return True
        stack.extend(v for v in children if isinstance(v, dict | list))
    return False
