"""API errors as Kubernetes `Status` objects.

Every failure a client can see is an `APIError`, raised anywhere below the HTTP layer (registry,
validation, patch, store adapters) and turned into a `Status` body with the HTTP code and reason
clients switch on (`kubectl` prints `message`; client-go's `errors.IsConflict` reads `reason`).
Messages follow upstream's wording so that scripts grepping kubectl's output keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Cause:
    """One field-level cause of an Invalid (422) error."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


class APIError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        """The Status body, its fields in the order of upstream's Go type (clients and tests
        compare the bytes): kind, apiVersion, metadata, status, message, reason, details, code."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(name: str | None, group: str, kind: str) -> dict[str, Any]:
    """StatusDetails, in its Go field order: name, group, kind (then uid, causes)."""
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    return d


def qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


_INT64 = (-(2**63), 2**63 - 1)


def int_query(query: Mapping[str, str], name: str) -> int | None:
    """An integer query parameter (None when absent or empty), read as upstream's parameter codec
    reads it (Go's `strconv.ParseInt(s, 10, 64)`): an optional sign and ASCII digits, within
    int64. Anything else is a BadRequest. (Python's `int()` would also take spaces, `_`,
    non-ASCII digits and any size, and pass values on that no Go client could have sent.)"""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    digits = raw[1:] if raw[0] in "+-" else raw
    if not (digits.isascii() and digits.isdigit()):
        raise bad_request(f'invalid value for query parameter {name}: "{raw}" is not an integer')
    value = int(raw)
    if not _INT64[0] <= value <= _INT64[1]:
        raise bad_request(f'invalid value for query parameter {name}: "{raw}" is out of range for a 64-bit integer')
    return value


def unauthorized(message: str = "Unauthorized") -> APIError:
    return APIError(401, "Unauthorized", message)


def forbidden(message: str) -> APIError:
    return APIError(403, "Forbidden", message)


def forbidden_object(plural: str, name: str, why: str, *, group: str = "") -> APIError:
    """Upstream's NewForbidden: `<resource> "<name>" is forbidden: <why>`, with details."""
    return APIError(403, "Forbidden", f'{qualified(plural, group)} "{name}" is forbidden: {why}',
                    details=_details(name, group, plural))


def not_found(plural: str, name: str | None, *, group: str = "") -> APIError:
    what = qualified(plural, group)
    msg = f'{what} "{name}" not found' if name else "the server could not find the requested resource"
    return APIError(404, "NotFound", msg, details=_details(name, group, plural))


def not_found_path() -> APIError:
    return APIError(
        404,
        "NotFound",
        "the server could not find the requested resource",
        details={"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
    )


def method_not_allowed(method: str, what: str) -> APIError:
    return APIError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method} {what})")


def already_exists(plural: str, name: str, *, group: str = "") -> APIError:
    return APIError(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        details=_details(name, group, plural),
    )


def conflict(plural: str, name: str, *, group: str = "", why: str | None = None) -> APIError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        details=_details(name, group, plural),
    )


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def request_too_large(limit: int) -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"the request body exceeds the limit of {limit} bytes")


def unsupported_media_type(content_type: str, supported: list[str]) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        f'the body of the request was in an unknown format - accepted media types include: {", ".join(supported)}'
        + (f' (got "{content_type}")' if content_type else ""),
    )


def invalid(kind: str, name: str, causes: list[Cause], *, group: str = "") -> APIError:
    # Upstream's ErrorList.ToAggregate: repeated messages once, several in brackets.
    messages = list(dict.fromkeys(f"{c.field}: {c.message}" for c in causes))
    summary = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    label = f"{kind}.{group}" if group else kind
    details = _details(name, group, kind)
    details["causes"] = [c.to_dict() for c in causes]
    return APIError(422, "Invalid", f'{label} "{name}" is invalid: {summary}', details=details)


def too_many_requests(message: str, *, retry_after: int = 1) -> APIError:
    return APIError(
        429,
        "TooManyRequests",
        message,
        details={"retryAfterSeconds": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def internal(message: str) -> APIError:
    return APIError(500, "InternalError", f"Internal error occurred: {message}")


def storage_full(message: str) -> APIError:
    return APIError(507, "InsufficientStorage", f"the store cannot accept more data: {message}")


def timeout(message: str) -> APIError:
    return APIError(504, "Timeout", message)


def body_timeout(seconds: float) -> APIError:
    """The client did not send its request body in time: 408, and the connection is closed."""
    return APIError(408, "Timeout", f"the request body was not received within {seconds:g} seconds",
                    headers={"Connection": "close"})


def namespace_terminating(namespace: str, plural: str, name: str, *, group: str = "") -> APIError:
    return APIError(
        403,
        "Forbidden",
        f'{qualified(plural, group)} "{name}" is forbidden: unable to create new content in namespace '
        f"{namespace} because it is being terminated",
        details={**_details(name, group, plural), "causes": [{"reason": "NamespaceTerminating",
                                                              "message": f"namespace {namespace} is being terminated",
                                                              "field": "metadata.namespace"}]},
    )
