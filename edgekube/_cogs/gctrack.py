"""JSON trees kept for long, taken out of the cyclic garbage collector's sight.

A full pass of CPython's cyclic collector walks every container it tracks with the interpreter
lock held: every thread, the event loop included, waits for it. The informers' caches are most
of a busy node's heap (5,000 pods are some 140,000 dicts and lists), and a full pass over them
took 90-165 ms here, by far the longest stall of the loop. Trees decoded from msgpack or JSON
hold no cycle, so reference counting frees them all the same without the collector:
`untrack(trees)` takes each of their containers off the collector's lists
(`PyObject_GC_UnTrack`, public C API, through ctypes), and a full pass over the same heap takes
a couple of milliseconds. Such a tree must not be made cyclic afterwards (cached objects are
never mutated); a dict given a container later is tracked again by CPython itself.

`untrack_one(obj)` does the same for one object that holds no container the collector must
see (a slotted record of strings and bytes, say, kept by the thousand in a ring).

Where the interpreter does not export the call (a statically linked build), both do nothing
and `AVAILABLE` is false.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

try:
    _untrack = ctypes.pythonapi.PyObject_GC_UnTrack
    _untrack.argtypes = [ctypes.py_object]
    _untrack.restype = None
    AVAILABLE = True
except (AttributeError, OSError):  # pragma: no cover - depends on how Python was built
    AVAILABLE = False


def untrack(trees: Iterable[Any]) -> int:
    """Take every dict and list of `trees` off the collector's lists; the containers seen."""
    if not AVAILABLE:
        return 0
    stack: list[Any] = list(trees)
    pop, push = stack.pop, stack.extend
    seen = 0
    while stack:
        node = pop()
        kind = type(node)
        if kind is dict:
            push([v for v in node.values() if type(v) is dict or type(v) is list])
        elif kind is list:
            push([v for v in node if type(v) is dict or type(v) is list])
        else:
            continue
        _untrack(node)
        seen += 1
    return seen


def untrack_one(obj: object) -> None:
    """Take `obj` alone off the collector's lists (what it holds is left as it is)."""
    if AVAILABLE:
        _untrack(obj)
