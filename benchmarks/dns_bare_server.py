"""Baseline for the DNS benchmark: the least a DNS server built on dnspython does.

    python benchmarks/dns_bare_server.py --address A [--port 53]

An asyncio UDP server, as edgekube's: each datagram is read with `dns.message.from_wire`, answered
with `dns.message.make_response` plus one fixed A record (192.0.2.1, TTL 5) under the question's
name, whatever the name, and written with `to_wire`. No zone, no lookup, no limits. It prints
`ready` once it listens. The DNS benchmark also uses it as the upstream that edgekube forwards to.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.IN.A import A

FIXED = A(dns.rdataclass.IN, dns.rdatatype.A, "192.0.2.1")


class Bare(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        response = dns.message.make_response(query)
        rrset = dns.rrset.RRset(query.question[0].name, dns.rdataclass.IN, dns.rdatatype.A)
        rrset.add(FIXED, 5)
        response.answer.append(rrset)
        self.transport.sendto(response.to_wire(max_size=512), addr)


async def serve(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Bare, local_addr=(address, port))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    transport.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--port", type=int, default=53)
    args = p.parse_args()
    asyncio.run(serve(args.address, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
