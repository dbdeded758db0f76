"""Service ClusterIP and NodePort allocators."""

from __future__ import annotations

import pytest

from edgekube.api import quantity
from edgekube.api.registry import allocators


def test_ip_allocator_skips_kubernetes_ip_and_exhausts() -> None:
    a = allocators.IPAllocator("10.0.0.0/29")  # hosts .1-.6; .1 is reserved for `kubernetes`
    got = [a.allocate() for _ in range(5)]
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    with pytest.raises(allocators.AllocationError) as exc:
        a.allocate()
    assert exc.value.what == "ip"
    a.allocate_specific("10.0.0.1")
    with pytest.raises(allocators.AllocationError, match="already allocated"):
        a.allocate_specific("10.0.0.1")
    a.release("10.0.0.4")
    assert a.allocate() == "10.0.0.4"


def test_ip_allocator_rejects_out_of_range_and_reuses_late() -> None:
    a = allocators.IPAllocator("10.43.0.0/16")
    with pytest.raises(allocators.AllocationError, match="not in the valid range"):
        a.allocate_specific("192.168.0.1")
    with pytest.raises(allocators.AllocationError):
        a.allocate_specific("nonsense")
    first = a.allocate()
    a.release(first)
    assert a.allocate() != first  # a released address is not handed out again at once
    assert a.contains("10.43.255.254") and not a.contains("10.44.0.1")
    a.mark_used("10.43.0.3")
    assert "10.43.0.3" not in {a.allocate() for _ in range(3)}


def test_port_allocator() -> None:
    p = allocators.PortAllocator(30000, 30002)
    assert [p.allocate() for _ in range(3)] == [30000, 30001, 30002]
    with pytest.raises(allocators.AllocationError) as exc:
        p.allocate()
    assert exc.value.what == "port"
    p.release(30001)
    with pytest.raises(allocators.AllocationError, match="not in the valid range"):
        p.allocate_specific(80)
    p.allocate_specific(30001)
    with pytest.raises(allocators.AllocationError, match="already allocated"):
        p.allocate_specific(30001)


@pytest.mark.parametrize(
    ("text", "millis"),
    [("100m", 100), ("1", 1000), ("1.5", 1500), ("2k", 2_000_000), ("1Ki", 1_024_000), ("1e3", 1_000_000), (2, 2000), ("0.0001", 1)],
)
def test_quantities(text: object, millis: int) -> None:
    assert quantity.milli(text) == millis


def test_quantity_errors() -> None:
    for bad in ("1x", "", "Mi", "1.2.3", True):
        with pytest.raises(quantity.QuantityError):
            quantity.parse(bad)
    assert quantity.whole("64Mi") == 64 * 2**20
