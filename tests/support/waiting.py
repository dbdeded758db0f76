"""Helpers the end-to-end tests share: polling for what controllers do asynchronously, and a
kubectl bound to a fresh namespace per test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl


def until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something true, and return that; fail after `timeout`
    seconds with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


def fresh_namespace(server: Server, request: pytest.FixtureRequest, *, prefix: str = "",
                    version: str = "1.36") -> Kubectl:
    """kubectl on a new namespace named after the test."""
    ns = (prefix + request.node.name.removeprefix("test_").replace("_", "-"))[:40].strip("-")
    kubectl = Kubectl(version, server, ns)
    kubectl.run("create", "namespace", ns, namespaced=False)
    return kubectl
