"""Work on the offload worker is cut into short C calls (issue 13, point 3): no timing in here.

The worker gives the interpreter lock back to the event loop every switch interval, but not in
the middle of one C call: a `sorted()` of 45,000 paths, one JSON or msgpack call on a whole
1 MB object each held the lock (and so the loop) for tens of milliseconds. Each test here runs
one such step on a large object and counts the items or bytes each C call got: bounded by the
piece size, whatever the object's.
"""

from __future__ import annotations

import builtins
import json
import random
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekube._cogs import pieces
from edgekube.api import jsontree, negotiation, ssa
from edgekube.store import records


class Counting:
    """A stand-in for a C function that records the size of each call's input."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sizes: list[int] = []

    def record(self, data: bytes) -> Any:
        """For a function of one bytes argument: its length."""
        self.sizes.append(len(data))
        return self.real(data)

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


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab,:{}[]"\\ \n\u00e9'), max_size=12),
    lambda children: st.lists(children, max_size=12) | st.dictionaries(st.text(max_size=6), children, max_size=12),
    max_leaves=60,
)


@given(_JSON, st.integers(0, 2), st.integers(8, 300))
@settings(max_examples=300, deadline=None)
def test_json_in_pieces_gives_orjsons_object(value: Any, indent: int, piece: int) -> None:
    """Pieces of a few bytes, so that documents of any shape (brackets and commas in strings
    included) are cut everywhere; compact and indented text."""
    data = json.dumps(value, indent=indent or None).encode()
    old = (pieces.JSON_PIECE, pieces._JSON_MIN_RUN)
    pieces.JSON_PIECE, pieces._JSON_MIN_RUN = piece, 4
    try:
        assert pieces.json_loads(data) == orjson.loads(data)
    finally:
        pieces.JSON_PIECE, pieces._JSON_MIN_RUN = old


def test_bad_json_in_pieces_fails_as_orjson_does() -> None:
    data = orjson.dumps({"spec": {f"k{i:06d}": [i, {"v": "x"}] for i in range(20_000)}})
    for bad in (data[:-1], data[:300_000], data.replace(b'"k010000"', b'"k010000', 1), data + b"x",
                data.replace(b"[10000,", b"[10000,,", 1), b" " + data.replace(b"}}", b"]}", 1)):
        with pytest.raises(orjson.JSONDecodeError) as got:
            pieces.json_loads(bad)
        with pytest.raises(orjson.JSONDecodeError) as want:
            orjson.loads(bad)
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("body", [
    {"apiVersion": "loop.example.com/v1", "kind": "Blob", "metadata": {"name": "x"},
     "spec": {f"key-{i:06d}": f"value-{i}" for i in range(45_000)}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": {
        "containers": [{"name": "c", "env": [{"name": f"VAR_{i:05d}", "value": f"v{i}"} for i in range(10_000)]}]}}}},
], ids=["flat", "deep"])
def test_a_large_json_body_is_decoded_in_bounded_calls(monkeypatch: pytest.MonkeyPatch, body: Any) -> None:
    data = json.dumps(body, indent=1).encode()
    counting = Counting(orjson.loads)
    monkeypatch.setattr(orjson, "loads", counting.record)
    got = negotiation.decode_body(data, "application/json", kind=body["kind"])
    monkeypatch.undo()
    assert got == body
    # Before: one call of the whole body (1.3 MB; 10 ms and more holding the lock).
    assert max(counting.sizes) <= 2 * pieces.JSON_PIECE and sum(counting.sizes) < 1.2 * len(data)


_MSGPACK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=20) | st.dictionaries(st.text(max_size=6), children, max_size=20),
    max_leaves=120,
)


@given(_MSGPACK, st.integers(1, 30))
@settings(max_examples=300, deadline=None)
def test_encoding_in_pieces_gives_the_same_bytes(value: Any, piece: int) -> None:
    old = records.PIECE_VALUES
    records.PIECE_VALUES = piece
    try:
        assert records.encode_in_pieces(value) == msgpack.packb(value, use_bin_type=True)
    finally:
        records.PIECE_VALUES = old


def test_the_size_check_of_a_large_object_packs_in_bounded_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
           "data": {f"k{i:06d}": f"v{i}" for i in range(45_000)},
           "env": [{"name": f"VAR_{i:05d}", "value": f"v{i}"} for i in range(10_000)]}
    sizes: list[int] = []
    real = msgpack.packb

    def counting(value: Any, **kwargs: Any) -> bytes:
        out: bytes = real(value, **kwargs)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(msgpack, "packb", counting)
    jsontree.check_size(obj, plural="configmaps", name="x")
    monkeypatch.undo()
    # Before: one call of the whole object (1.3 MB: 3-10 ms holding the lock).
    assert sizes and max(sizes) < 200_000
    assert sum(sizes) < 1.1 * len(real(obj, use_bin_type=True))


@given(_JSON, st.integers(0, 80))
@settings(max_examples=200, deadline=None)
def test_larger_than_counts_every_value(value: Any, items: int) -> None:
    def count(v: Any) -> int:
        children = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else []
        return len(children) + sum(count(c) for c in children)

    assert pieces.larger_than(value, items) == (count(value) > items)
