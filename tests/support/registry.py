"""A real registry on a real store in a temporary dir, for tests that drive it in process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from edgekube._cogs import clock as clock_mod
from edgekube.api.registry import chain, resources, rest
from edgekube.store import store as store_mod


@contextlib.asynccontextmanager
async def opened(path: Path, *, policy: Callable[[store_mod.Store, resources.Catalog], chain.Chain] | None = None
                 ) -> AsyncIterator[rest.Registry]:
    """A registry with the system namespaces (and the admission chain `policy` builds, else its
    own); the chain is closed on the way out."""
    catalog = resources.Catalog()
    store = store_mod.Store(
        store_mod.StoreConfig(path=path, map_size_mb=32, max_size_mb=64, compaction_interval_seconds=0),
        memory_prefixes=[i.key_prefix() for i in catalog.all() if i.memory_tier],
    )
    await store.start()
    given = policy(store, catalog) if policy is not None else None
    reg = rest.Registry(store, catalog=catalog, clock=clock_mod.FakeClock(), network=rest.ServiceNetwork(), policy=given)
    await reg.ensure_system_namespaces()
    try:
        yield reg
    finally:
        await reg.policy.close()
        await store.close()


def info(reg: rest.Registry, group: str, plural: str, version: str = "v1") -> resources.ResourceInfo:
    found = reg.catalog.lookup(group, version, plural)
    assert found is not None, (group, version, plural)
    return found
