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
- `json_loads(data)`: `orjson.loads`, for a large document, in calls of about `JSON_PIECE`
  bytes: a container's members are taken in runs, each run parsed alone as a container of its
  own (`{` + run + `}`). Where a run ends is guessed (a comma or closing bracket past the piece
  size) and proved by that parse: a cut inside a string or a nested container leaves an
  unterminated string or an unclosed bracket, so only a cut between two members of this
  container parses. A member too large for a run (a long string, a large nested container) is
  taken alone, a nested container recursively. Valid runs joined by the commas between them
  are a valid container, so the result is orjson's; anything unexpected, or work past a few
  times the document's size, falls back to one `orjson.loads` of the whole (its answer, or its
  error, as before).
- `count_upto(value, items)`: the values `value` holds, counted up to a little past `items`.
- `larger_than(value, items)`: whether a JSON tree holds more than `items` values, found by a
  walk that stops there, so it costs a small tree its size and a large one `items` steps: how
  a caller with no byte size at hand (an object built in memory) decides to send work on it to
  the worker.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import orjson

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
    return count_upto(value, items + 1) > items + 1  # `count_upto` counts `value` itself too


# Bytes of JSON per call: orjson parses 32 KiB of a typical object in some 0.2 ms.
JSON_PIECE = 32 * 1024
_JSON_MIN_RUN = 256  # past this, a run that does not parse is given up for one member alone
_JSON_CUTS = 16  # cuts looked at per run length
_JSON_TRIES = 3  # of which parsed and refused
_JSON_WORK = 6  # bytes parsed, in all, at most this many times the document's
_JSON_DEPTH = 64  # nested large containers followed, at most
_WS = re.compile(rb"[ \t\r\n]*")
_CUT = re.compile(rb"[,\]}]")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null")
_OPEN = {ord("{"): (b"{", b"}"), ord("["): (b"[", b"]")}


class _Fallback(Exception):
    pass


def json_loads(data: bytes) -> Any:
    """`orjson.loads(data)`, in calls of about `JSON_PIECE` bytes (see the module doc)."""
    if len(data) <= JSON_PIECE:
        return orjson.loads(data)
    try:
        start = _WS.match(data).end()  # type: ignore[union-attr]
        if data[start] not in _OPEN:
            return orjson.loads(data)
        parser = _JSONPieces(data)
        value, end = parser.container(start, 0)
        if _WS.match(data, end).end() != len(data):  # type: ignore[union-attr]
            raise _Fallback
        return value
    except (_Fallback, ValueError, IndexError, RecursionError):  # orjson's errors are ValueErrors
        return orjson.loads(data)


class _JSONPieces:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.budget = _JSON_WORK * len(data)

    def _charge(self, work: int) -> None:
        self.budget -= work
        if self.budget < 0:
            raise _Fallback

    def _parse(self, text: bytes) -> Any:
        self._charge(len(text))
        return orjson.loads(text)

    def container(self, pos: int, depth: int) -> tuple[Any, int]:
        """The container opening at `pos`, and where it ends."""
        if depth > _JSON_DEPTH:
            raise _Fallback
        data = self.data
        opener, closer = _OPEN[data[pos]]
        is_map = opener == b"{"
        out: Any = {} if is_map else []
        i = _WS.match(data, pos + 1).end()  # type: ignore[union-attr]
        if data[i:i + 1] == closer:
            return out, i + 1
        run = JSON_PIECE
        while True:
            got, cut = self._run(opener, closer, i, run)
            if got is not None:
                out.update(got) if is_map else out.extend(got)
                i = cut
                run = min(2 * run, JSON_PIECE)
            else:  # one member alone (a large one, or one of a few left), shorter runs after it
                i = self._member(out, i, depth)
                run = max(run // 2, _JSON_MIN_RUN)
            sep = data[i:i + 1]
            if sep == closer:
                return out, i + 1
            if sep != b",":
                raise _Fallback
            i = _WS.match(data, i + 1).end()  # type: ignore[union-attr]

    def _depth(self, start: int, end: int) -> int:
        """Brackets opened minus closed in `data[start:end]` (counted where they are, no copy)."""
        self._charge(end - start)
        data = self.data
        return (data.count(b"{", start, end) + data.count(b"[", start, end)
                - data.count(b"}", start, end) - data.count(b"]", start, end))

    def _run(self, opener: bytes, closer: bytes, i: int, run: int) -> tuple[Any, int]:
        """The members from `i` to a cut some `run` bytes on (near the end: the container's
        last bracket), parsed as a container of their own, and the cut; (None, 0) if none of a
        few cuts parses. Cuts where the brackets do not balance are passed over unparsed (a
        bracket in a string may mislead that count: then the parse decides)."""
        data = self.data
        forward = i + run < len(data)
        at = i + run if forward else len(data)
        depth = self._depth(i, at)  # from `i` to `at`, kept up to date as `at` moves
        refused = 0
        for _ in range(_JSON_CUTS):
            if forward:
                m = _CUT.search(data, at)
                if m is None:
                    return None, 0
                cut = m.start()
                depth += self._depth(at, cut)
                depth_here = depth  # of data[i:cut]
                depth -= data[cut] != ord(",")  # and with the bracket at `cut`
                at = cut + 1
            else:
                cut = max(data.rfind(b",", i, at), data.rfind(b"}", i, at), data.rfind(b"]", i, at))
                if cut <= i:
                    return None, 0
                depth -= self._depth(cut, at)
                at = cut
                depth_here = depth
            if depth_here != 0:
                continue
            try:
                return self._parse(opener + data[i:cut] + closer), cut
            except orjson.JSONDecodeError:
                refused += 1
                if refused >= _JSON_TRIES:
                    return None, 0
        return None, 0

    def _member(self, out: Any, i: int, depth: int) -> int:
        """Parse the member at `i` into `out`; where the text after it (and its spaces) starts."""
        data = self.data
        key = None
        if isinstance(out, dict):
            m = _STRING.match(data, i)
            if m is None:
                raise _Fallback
            key = self._parse(m.group())
            i = _WS.match(data, m.end()).end()  # type: ignore[union-attr]
            if data[i:i + 1] != b":":
                raise _Fallback
            i = _WS.match(data, i + 1).end()  # type: ignore[union-attr]
        if data[i] in _OPEN:
            value, i = self.container(i, depth + 1)
        else:
            m = _STRING.match(data, i) if data[i:i + 1] == b'"' else _SCALAR.match(data, i)
            if m is None:
                raise _Fallback
            value, i = self._parse(m.group()), m.end()
        if key is None:
            out.append(value)
        else:
            out[key] = value
        return _WS.match(data, i).end()  # type: ignore[union-attr]


def count_upto(value: Any, items: int) -> int:
    """How many values `value` holds (itself included), counted up to a little past `items`."""
    seen = 1
    stack = [value]
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        seen += len(children)
        if seen > items:
            return seen
        stack.extend(v for v in children if isinstance(v, dict | list))
    return seen
