"""Store errors. The API layer maps each to its Kubernetes Status (409, 404, 410, 507)."""

from __future__ import annotations


class StoreError(Exception):
    """A write or read that could not be done; nothing was changed."""


class KeyExistsError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key} already exists")
        self.key = key


class NotFoundError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key} not found")
        self.key = key


class ConflictError(StoreError):
    """Compare-and-swap failed: the key is at another revision than the writer expected."""

    def __init__(self, key: str, *, expected: int, actual: int) -> None:
        super().__init__(f"key {key} is at revision {actual}, not {expected}")
        self.key = key
        self.expected = expected
        self.actual = actual


class CompactedError(StoreError):
    """The requested revision is older than what the store still keeps (410 Expired)."""

    def __init__(self, requested: int, *, oldest: int) -> None:
        super().__init__(
            f"too old resource version: {requested} ({oldest})"
        )
        self.requested = requested
        self.oldest = oldest


class StoreFullError(StoreError):
    """The database cannot grow any further (map or disk full)."""


class CorruptRecordError(StoreError):
    """A stored record that cannot be decoded (damaged on disk, or written by a version that let
    through what msgpack cannot read back). Readers skip it and go on; it names the key so that
    `edgekube store check` and a delete through the API can deal with it."""

    def __init__(self, key: str, *, revision: int, detail: str) -> None:
        what = f"stored object {key}" if key else "a stored log record"
        super().__init__(f"{what} (revision {revision}) cannot be decoded: {detail}")
        self.key = key
        self.revision = revision
        self.detail = detail


class DatabaseError(StoreError):
    """LMDB could not read its own structures (a damaged page): the database needs
    `edgekube store check`; the message names it."""

    def __init__(self, path: object, cause: BaseException) -> None:
        super().__init__(f"the database at {path} could not be read ({cause}); stop edgekube and run "
                         "`edgekube store check` (docs/operations.md)")
        self.cause = cause


class ClosedError(StoreError):
    """The store is shutting down."""
