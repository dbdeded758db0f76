"""Stand-in pods for the service proxy's tests and benchmarks: network namespaces on a bridge.

The real pod network (a bridge, a veth per pod, IPAM) is net/'s, with runc containers; the proxy
only needs addresses that answer. So `PodNet` builds, inside the node's namespace (where edgekube
runs), a bridge holding the first address of a /24 of the cluster CIDR, and `pod(name)` makes a
namespace with a veth on that bridge, its address and a default route through the bridge: a
pod as far as nftables can tell. `serve()` runs a small Python server in a pod:

- TCP: on each connection it first sends one line `<name> <peer address>` (which endpoint
  answered, and the source address it saw: masqueraded or not), then echoes whatever it
  receives, so a test can keep a connection open and check that it still flows;
- UDP: answers every datagram with the same line.

Bridge ports are in hairpin mode (as the CNI bridge plugin's hairpinMode: a pod reaching itself
through its Service). The node namespace gets IPv4 forwarding (bridged packets go through its nftables hooks:
br_netfilter's bridge-nf-call-iptables is on by default in a new namespace). Everything is made
inside namespaces that `tests.support.netns` deletes, so nothing is left on the host.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from tests.support.netns import NetNS

SERVER = r"""
import socket, sys, threading
name, proto, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(f"{name} {peer[0]}\n".encode(), peer)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(512)
print("ready", flush=True)

def serve(c, peer):
    with c:
        try:
            c.sendall(f"{name} {peer[0]}\n".encode())
            while True:
                data = c.recv(65536)
                if not data:
                    return
                c.sendall(data)
        except OSError:
            pass

while True:
    c, peer = s.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
"""


class PodNet:
    """A bridge `bridge` with `gateway`/24 in `node`, and pods on it."""

    def __init__(self, node: NetNS, *, bridge: str = "tbr0", prefix: str = "10.42.0") -> None:
        self.node = node
        self.bridge = bridge
        self.prefix = prefix
        self.gateway = f"{prefix}.1"
        self.pods: dict[str, NetNS] = {}
        self.addresses: dict[str, str] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        node.run(["ip", "link", "add", bridge, "type", "bridge"])
        node.run(["ip", "addr", "add", f"{self.gateway}/24", "dev", bridge])
        node.run(["ip", "link", "set", bridge, "up"])
        node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def pod(self, name: str, host: int) -> NetNS:
        """A pod namespace `name` at <prefix>.<host> on the bridge."""
        ns = NetNS(f"pod-{name}")
        try:
            veth = f"vp{host}"
            self.node.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(ns.path)])
            self.node.run(["ip", "link", "set", veth, "master", self.bridge])
            # A pod reaching itself through a Service: br_netfilter DNATs the frame on the bridge,
            # which must then send it back out of the port it came in by (the CNI bridge
            # plugin's hairpinMode; the pod network sets the same on its veths).
            self.node.run(["ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on"])
            self.node.run(["ip", "link", "set", veth, "up"])
            address = f"{self.prefix}.{host}"
            ns.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
            ns.run(["ip", "link", "set", "eth0", "up"])
            ns.run(["ip", "route", "add", "default", "via", self.gateway])
        except BaseException:
            ns.close()
            raise
        self.pods[name] = ns
        self.addresses[name] = address
        return ns

    def serve(self, name: str, port: int, *, proto: str = "tcp") -> None:
        """Start the test server in pod `name`; returns once it listens."""
        ns = self.pods[name]
        proc = ns.popen([sys.executable, "-c", SERVER, name, proto, str(port)], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the test server in pod {name} did not start ({line!r})")

    def close(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait()
        for ns in self.pods.values():
            ns.close()
        self.pods.clear()


def ask(address: str, port: int, *, timeout: float = 5.0) -> tuple[str, str]:
    """Connect, read the greeting: (which pod answered, the source address it saw). Raises
    OSError (ConnectionRefusedError for a reject) like any connect."""
    with socket.create_connection((address, port), timeout=timeout) as s:
        line = s.makefile().readline().split()
    if len(line) != 2:
        raise OSError(f"no greeting from {address}:{port}: {line!r}")
    return line[0], line[1]


def ask_udp(address: str, port: int, *, timeout: float = 2.0) -> tuple[str, str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"?", (address, port))
        line = s.recv(2048).decode().split()
    return line[0], line[1]


def wait_for(check: object, *, timeout: float = 10.0, interval: float = 0.05) -> object:
    """Call `check()` until it returns something truthy (its value) or raise after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()  # type: ignore[operator]
            if last:
                return last
        except (OSError, AssertionError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s (last: {last!r})")
        time.sleep(interval)
