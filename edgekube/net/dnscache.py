"""A bounded cache of the answers the cluster DNS got from upstream servers.

CoreDNS's cache plugin, as k3s and kubeadm configure it (`cache 30`), reduced to what a node
needs:

- **Keyed** on the question (name without case, type, class) and the DO and CD bits, which
  change what an upstream answers.
- **TTL-respecting**: an answer lives as long as its smallest TTL (answer, authority and
  additional sections), at most 30 seconds; served from the cache, its TTLs count down by the
  time it has been held. A negative answer (NXDOMAIN, or NOERROR without answers) lives as long
  as its SOA says (the smaller of the SOA's TTL and its minimum field, RFC 2308), at most 30
  seconds; without a SOA it is not cached. A SERVFAIL an upstream sent lives 5 seconds (CoreDNS's
  `servfail` default), so a failing name does not send every retry upstream. Truncated answers,
  and TTL 0, are not cached.
- **Bounded** by bytes, not entries: each entry costs its wire size plus a fixed overhead for
  the key and the bookkeeping, and the least recently used go first once the budget is reached.
  Entries are kept as wire bytes (a parsed message is several times larger).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

MAX_TTL = 30.0
SERVFAIL_TTL = 5.0
ENTRY_OVERHEAD = 384  # bytes per entry besides its wire (measured, tracemalloc): key, name, entry, node, bytes header

Key = tuple[str, int, int, bool, bool]  # name (lower case), type, class, DO, CD


def key_of(qname: str, qtype: int, qclass: int, *, dnssec_ok: bool, checking_disabled: bool) -> Key:
    return (qname.lower(), qtype, qclass, dnssec_ok, checking_disabled)


def ttl_of(msg: dns.message.Message) -> float:
    """How long `msg` may be served from the cache (0: not at all)."""
    if msg.flags & dns.flags.TC:
        return 0.0
    rcode = msg.rcode()
    if rcode == dns.rcode.SERVFAIL:
        return SERVFAIL_TTL
    if rcode == dns.rcode.NOERROR and msg.answer:
        return float(min(min(r.ttl for r in [*msg.answer, *msg.authority, *msg.additional]), MAX_TTL))
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        for rrset in msg.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                minimum = rrset[0].minimum
                return float(min(rrset.ttl, minimum, MAX_TTL))
    return 0.0


@dataclasses.dataclass(slots=True)
class _Entry:
    wire: bytes
    stored: float
    expires: float


class Cache:
    def __init__(self, *, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        self.size = 0  # bytes held, overhead included
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> tuple[bytes, float] | None:
        """(the answer's wire, seconds it has been held), or None."""
        entry = self._entries.get(key)
        now = self._clock()
        if entry is None or entry.expires <= now:
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.wire, now - entry.stored

    def put(self, key: Key, wire: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        cost = len(wire) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        now = self._clock()
        self._entries[key] = _Entry(wire, now, now + ttl)
        self.size += cost
        while self.size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key)
        self.size -= len(entry.wire) + ENTRY_OVERHEAD


def aged(wire: bytes, age: float) -> dns.message.Message:
    """A cached answer parsed anew, its TTLs lowered by the seconds it has been held."""
    msg = dns.message.from_wire(wire)
    held = int(age)
    for section in (msg.answer, msg.authority, msg.additional):
        for rrset in section:
            rrset.ttl = max(0, rrset.ttl - held)
    return msg
