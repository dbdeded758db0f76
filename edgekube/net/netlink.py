"""pyroute2's rtnetlink client (`IPRoute`, `NetlinkError`), without the rest of pyroute2.

`import pyroute2` runs the package's `__init__`, which imports every client pyroute2 has (NDB,
IPDB, conntrack, IPVS, ipset, wireguard, nl80211, devlink, plan9, ...): about 190 modules and
8 MiB of resident memory in the server, for the 3 MiB of its rtnetlink part that the pod
network uses (link, address, route and bridge-port messages). On a device whose idle budget is
64 MiB that is the difference, so the package is loaded here the way Python's lazy loading
(PEP 562) allows: the `pyroute2` package object is made from its spec without running its
`__init__`, with a module `__getattr__` that

- imports a submodule when one is asked for (`from pyroute2 import config` inside pyroute2's
  own modules), and
- runs the real `__init__` in the package the first time anything else is asked for (say
  `from pyroute2 import NDB` elsewhere), so any other user of pyroute2 in the process gets the
  whole package, exactly as a plain import would give it.

The same goes for `unittest`: pyroute2's rtnetlink socket imports `unittest.mock` for its mock
mode, and `unittest`'s `__init__` (test case, loader, runner, argparse: 1.4 MiB) would come with
it; lazily, only `unittest.mock` itself is loaded.

When `pyroute2` was imported already (the whole of it), or its layout is not what this expects,
the plain import is used. The modules imported are public ones (`pyroute2.iproute.linux`,
`pyroute2.netlink.exceptions`); nothing of pyroute2 is patched. Its logger is kept at INFO:
pyroute2 logs every message it sends and receives at DEBUG, which at edgekube's `log-level:
debug` would drown the server's own lines.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any


def _lazy_package(name: str) -> None:
    """Put the package `name` in sys.modules without running its `__init__` (see above)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__") or importlib.util.find_spec(f"{name}.{attr}") is None:
            # Something the package's __init__ defines: run it, once, in the package itself.
            del package.__dict__["__getattr__"]
            loader.exec_module(package)
            return package.__dict__[attr] if attr in package.__dict__ else getattr(package, attr)
        return importlib.import_module(f"{name}.{attr}")

    package.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = package


def _load() -> tuple[Any, Any]:
    # Static imports (not importlib by name), so that the binary's compiler follows them.
    try:
        _lazy_package("pyroute2")
        _lazy_package("unittest")
        from pyroute2.iproute import linux
        from pyroute2.netlink import exceptions
    except ImportError:
        sys.modules.pop("pyroute2", None)
        import pyroute2

        return pyroute2.IPRoute, pyroute2.NetlinkError
    return linux.IPRoute, exceptions.NetlinkError


logging.getLogger("pyroute2").setLevel(logging.INFO)
IPRoute: Any
NetlinkError: Any  # an Exception class with `.code`, the errno the kernel answered
IPRoute, NetlinkError = _load()
