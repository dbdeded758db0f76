"""The OpenAPI v2 document in gnostic's protobuf form (`openapi.v2.Document`).

kubectl up to 1.28 asks `/openapi/v2` only for
`application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and cannot validate or apply
without it. What it reads from the document are the definitions (schemas and their
`x-kubernetes-*` extensions), so those are encoded in full; paths are left out (kubectl never
reads them from v2, and they are most of the size).

A hand-written encoder for the few messages needed, following the field numbers of gnostic's
OpenAPIv2.proto; vendor extensions and defaults are `Any` messages carrying YAML text (JSON is
YAML), which is how kube-openapi reads them back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

# What clients send in Accept (the `@` form, which Go's mime parser rejects in a response) and
# what the server answers with, as upstream.
ACCEPT_TYPES = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
)
MEDIA_TYPE = ACCEPT_TYPES[1]

# Field numbers (gnostic openapiv2/OpenAPIv2.proto).
_DOC_SWAGGER, _DOC_INFO, _DOC_DEFINITIONS = 1, 2, 9
_INFO_TITLE, _INFO_VERSION = 1, 2
_NAMED_NAME, _NAMED_VALUE = 1, 2
_ANY_YAML = 2
_SCHEMA = {
    "$ref": 1,
    "format": 2,
    "title": 3,
    "description": 4,
    "default": 5,
    "maximum": 7,
    "minimum": 9,
    "maxLength": 11,
    "minLength": 12,
    "pattern": 13,
    "maxItems": 14,
    "minItems": 15,
    "uniqueItems": 16,
    "required": 19,
    "enum": 20,
    "additionalProperties": 21,
    "type": 22,
    "items": 23,
    "allOf": 24,
    "properties": 25,
    "readOnly": 27,
    "example": 30,
}
_SCHEMA_VENDOR_EXTENSION = 31
_ADDITIONAL_SCHEMA, _ADDITIONAL_BOOLEAN = 1, 2


def _varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _string(field: int, text: str) -> bytes:
    return _bytes(field, text.encode())


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", float(value))


def _any(value: Any) -> bytes:
    return _string(_ANY_YAML, orjson.dumps(value).decode())


def _named_any(field: int, name: str, value: Any) -> bytes:
    return _bytes(field, _string(_NAMED_NAME, name) + _bytes(_NAMED_VALUE, _any(value)))


def schema(s: Mapping[str, Any]) -> bytes:
    out = bytearray()
    for key, value in s.items():
        if key.startswith("x-"):
            out += _named_any(_SCHEMA_VENDOR_EXTENSION, key, value)
            continue
        field = _SCHEMA.get(key)
        if field is None:
            continue
        if key in ("$ref", "format", "title", "description", "pattern"):
            out += _string(field, str(value))
        elif key in ("maxLength", "minLength", "maxItems", "minItems"):
            out += _int(field, int(value))
        elif key in ("maximum", "minimum"):
            out += _double(field, value)
        elif key in ("uniqueItems", "readOnly"):
            out += _int(field, 1 if value else 0)
        elif key == "required":
            for name in value:
                out += _string(field, name)
        elif key == "enum":
            for item in value:
                out += _bytes(field, _any(item))
        elif key in ("default", "example"):
            out += _bytes(field, _any(value))
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            out += _bytes(field, b"".join(_string(1, t) for t in types))
        elif key == "items":
            items = value if isinstance(value, list) else [value]
            out += _bytes(field, b"".join(_bytes(1, schema(i)) for i in items))
        elif key == "allOf":
            for sub in value:
                out += _bytes(field, schema(sub))
        elif key == "properties":
            out += _bytes(field, _named_schemas(1, value.items()))
        elif key == "additionalProperties":
            if isinstance(value, bool):
                out += _bytes(field, _int(_ADDITIONAL_BOOLEAN, 1 if value else 0))
            else:
                out += _bytes(field, _bytes(_ADDITIONAL_SCHEMA, schema(value)))
    return bytes(out)


def _named_schemas(field: int, items: Iterable[tuple[str, Mapping[str, Any]]]) -> bytes:
    return b"".join(_bytes(field, _string(_NAMED_NAME, name) + _bytes(_NAMED_VALUE, schema(s))) for name, s in items)


def document(doc: Mapping[str, Any]) -> bytes:
    """Encode a Swagger 2.0 document (as built by `openapi.v2_document`)."""
    out = bytearray(_string(_DOC_SWAGGER, str(doc.get("swagger", "2.0"))))
    info = doc.get("info") or {}
    out += _bytes(_DOC_INFO, _string(_INFO_TITLE, str(info.get("title", ""))) + _string(_INFO_VERSION, str(info.get("version", ""))))
    definitions = doc.get("definitions") or {}
    out += _bytes(_DOC_DEFINITIONS, _named_schemas(1, definitions.items()))
    return bytes(out)
