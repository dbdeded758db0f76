"""Service ClusterIP and NodePort allocation.

In memory only: at boot the registry marks the values of stored Services as used
(`Registry.rebuild_allocations`), so the store stays the single source of truth and nothing
extra is written per allocation. Free values are handed out from a rotating cursor so that a
value just released is not reused at once (clients may still hold it in caches).
"""

from __future__ import annotations

import ipaddress


class AllocationError(ValueError):
    def __init__(self, what: str, message: str) -> None:
        super().__init__(message)
        self.what = what


class _RangeAllocator:
    """Allocates integers in [lo, hi], with a rotating cursor."""

    def __init__(self, lo: int, hi: int, *, what: str) -> None:
        if hi < lo:
            raise ValueError(f"empty range {lo}-{hi}")
        self._lo = lo
        self._hi = hi
        self._used: set[int] = set()
        self._next = lo
        self._what = what

    def _contains(self, value: int) -> bool:
        return self._lo <= value <= self._hi

    def _allocate(self) -> int:
        size = self._hi - self._lo + 1
        if len(self._used) >= size:
            raise AllocationError(self._what, f"range is full: no {self._what} left to allocate")
        value = self._next
        for _ in range(size):
            if value not in self._used:
                self._used.add(value)
                self._next = value + 1 if value < self._hi else self._lo
                return value
            value = value + 1 if value < self._hi else self._lo
        raise AllocationError(self._what, f"range is full: no {self._what} left to allocate")

    def _allocate_specific(self, value: int, shown: str) -> None:
        if not self._contains(value):
            raise AllocationError(self._what, f"Invalid value: {shown}: provided {self._what} is not in the valid range")
        if value in self._used:
            raise AllocationError(self._what, f"Invalid value: {shown}: provided {self._what} is already allocated")
        self._used.add(value)

    def free(self) -> int:
        return self._hi - self._lo + 1 - len(self._used)


class IPAllocator(_RangeAllocator):
    """Addresses of a service CIDR, without the network and broadcast addresses.

    The first host address (x.x.x.1) belongs to the `kubernetes` Service and is handed out only
    when asked for by name (`allocate_specific`).
    """

    def __init__(self, cidr: str) -> None:
        net = ipaddress.ip_network(cidr)
        self._net = net
        first = int(net.network_address) + 1
        last = int(net.broadcast_address) - 1 if net.version == 4 else int(net.broadcast_address)
        super().__init__(first, last, what="ip")
        self._reserved = first
        self._next = first + 1

    def contains(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.version == self._net.version and self._contains(int(addr))

    def allocate(self) -> str:
        had = self._reserved in self._used
        self._used.add(self._reserved)
        try:
            value = self._allocate()
        finally:
            if not had:
                self._used.discard(self._reserved)
        return str(ipaddress.ip_address(value))

    def allocate_specific(self, ip: str) -> None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise AllocationError("ip", f"Invalid value: {ip!r}: must be a valid IP address") from None
        if addr.version != self._net.version or addr not in self._net:
            raise AllocationError("ip", f"Invalid value: {ip!r}: provided IP is not in the valid range. The range of valid IPs is {self._net}")
        self._allocate_specific(int(addr), repr(ip))

    def release(self, ip: str) -> None:
        if self.contains(ip):
            self._used.discard(int(ipaddress.ip_address(ip)))

    def mark_used(self, ip: str) -> None:
        if self.contains(ip):
            self._used.add(int(ipaddress.ip_address(ip)))


class PortAllocator(_RangeAllocator):
    def __init__(self, lo: int, hi: int) -> None:
        super().__init__(lo, hi, what="port")

    def contains(self, port: int) -> bool:
        return isinstance(port, int) and self._contains(port)

    def allocate(self) -> int:
        return self._allocate()

    def allocate_specific(self, port: int) -> None:
        if not self._contains(port):
            raise AllocationError(
                "port", f"Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {self._lo}-{self._hi}"
            )
        self._allocate_specific(port, str(port))

    def release(self, port: int) -> None:
        self._used.discard(port)

    def mark_used(self, port: int) -> None:
        if self._contains(port):
            self._used.add(port)
