"""Work on the offload worker is cut into short C calls (issue 13, point 3): no timing in here.

The worker gives the interpreter lock back to the event loop every switch interval, but not in
the middle of one C call: a `sorted()` of 45,000 paths, one JSON or msgpack call on a whole
1 MB object each held the lock (and so the loop) for tens of milliseconds. Each test here runs
one such step on a large object and counts the items or bytes each C call got: bounded by the
piece size, whatever the object's.
"""

from __future__ import annotations

import builtins
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekube._cogs import pieces
from edgekube.api import ssa


class Counting:
    """A stand-in for a C function that records the size of each call's input."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sizes: list[int] = []

    def __call__(self, arg: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(arg, list):
            arg = list(arg)
        self.sizes.append(len(arg))
        return self.real(arg, *args, **kwargs)


@given(st.lists(st.integers(0, 60) | st.text(max_size=3).map(len), max_size=400), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_sorting_in_pieces_gives_sorted(items: list[int], piece: int) -> None:
    old, pieces.PIECE = pieces.PIECE, piece
    try:
        assert pieces.sorted_in_pieces(items) == sorted(items)
    finally:
        pieces.PIECE = old


def test_the_fields_of_a_large_object_are_sorted_in_bounded_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"key-{i:06d}" for i in range(45_000)]
    random.Random(3).shuffle(keys)
    paths: set[ssa.Path] = {(("f", "data"), ("f", k)) for k in keys}
    paths |= {(("f", "metadata"), ("f", "labels"), ("f", "app")), (("f", "metadata"), ("f", "labels"))}
    counting = Counting(builtins.sorted)
    monkeypatch.setattr(builtins, "sorted", counting)
    tree = ssa.to_fields_v1(paths)
    monkeypatch.undo()
    assert list(tree["f:data"]) == sorted(f"f:{k}" for k in keys)
    assert list(tree) == ["f:data", "f:metadata"]
    assert tree["f:metadata"]["f:labels"] == {".": {}, "f:app": {}}
    assert ssa.from_fields_v1(tree) == paths
    # Before: one sorted() of all 45,002 paths (some 60 ms holding the lock on this machine).
    assert counting.sizes and max(counting.sizes) <= 2 * pieces.PIECE
