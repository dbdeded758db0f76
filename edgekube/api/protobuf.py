"""Read request bodies sent as `application/vnd.kubernetes.protobuf`.

kubectl 1.36's typed clients (`kubectl create namespace|configmap|secret|deployment|job|...`)
encode their bodies this way. The envelope is the 4-byte magic `k8s\\0` and a `runtime.Unknown`
message carrying apiVersion, kind and the object's own message; `pbschema` (generated from the
upstream .proto files and Go types) gives each message's field numbers, JSON names and types.

The result is the object's JSON form, as upstream's Go decoder followed by its JSON encoder would
produce it: a zero scalar is dropped only where Go's encoder would drop it, a non-pointer field
tagged `omitempty` (so `replicas: 0` and a PriorityClass's `value: 0` stay, an unset `hostPort`
does not appear), embedded structs are inlined, Time becomes RFC 3339,
Quantity and IntOrString their JSON forms, and bytes base64.

Responses are always JSON: the clients list `application/json` after protobuf in Accept.
"""

from __future__ import annotations

import base64
import datetime
import struct
from typing import Any

import orjson

from edgekube.api import jsontree

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_TIME = (_META + "Time", _META + "MicroTime")
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_RAW = "k8s.io.apimachinery.pkg.runtime.RawExtension"
_FIELDS_V1 = _META + "FieldsV1"
_DURATION = _META + "Duration"
# apiVersion -> proto package of its kinds.
_PACKAGES = {
    "v1": "k8s.io.api.core.v1",
    "apps/v1": "k8s.io.api.apps.v1",
    "batch/v1": "k8s.io.api.batch.v1",
    "rbac.authorization.k8s.io/v1": "k8s.io.api.rbac.v1",
    "coordination.k8s.io/v1": "k8s.io.api.coordination.v1",
    "discovery.k8s.io/v1": "k8s.io.api.discovery.v1",
    "storage.k8s.io/v1": "k8s.io.api.storage.v1",
    "autoscaling/v1": "k8s.io.api.autoscaling.v1",
    "autoscaling/v2": "k8s.io.api.autoscaling.v2",
    "policy/v1": "k8s.io.api.policy.v1",
    "networking.k8s.io/v1": "k8s.io.api.networking.v1",
    "authentication.k8s.io/v1": "k8s.io.api.authentication.v1",
    "authorization.k8s.io/v1": "k8s.io.api.authorization.v1",
    "scheduling.k8s.io/v1": "k8s.io.api.scheduling.v1",
    "apiextensions.k8s.io/v1": "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1",
    "apiregistration.k8s.io/v1": "k8s.io.kube_aggregator.pkg.apis.apiregistration.v1",
    "meta.k8s.io/v1": "k8s.io.apimachinery.pkg.apis.meta.v1",
}


Message = tuple[tuple[int, str, str, bool, bool, bool], ...]
_messages: dict[str, Message] | None = None


def _schema() -> dict[str, Message]:
    """The generated wire schema, loaded on the first protobuf body: it holds about 3 MiB that
    a server only ever spoken to in JSON (kubectl, helm, the Python client) never needs."""
    global _messages
    if _messages is None:
        from edgekube.api import pbschema

        _messages = pbschema.MESSAGES
    return _messages


class DecodeError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(number, wire type, raw value) for each field on the wire."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value = data[pos : pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value = data[pos : pos + length]
            if len(value) != length:
                raise DecodeError("truncated length-delimited field")
            pos += length
        elif wire == 5:
            value = data[pos : pos + 4]
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    if pos != len(data):
        raise DecodeError("truncated message")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: str, wire: int, raw: Any) -> Any:
    expected = 0 if kind in ("i", "B") else 1 if kind in ("d", "x") else 5 if kind == "f" else 2
    if wire != expected:
        raise DecodeError(f"wire type {wire} where a {kind!r} field was expected")
    if kind == "s":
        return bytes(raw).decode("utf-8")
    if kind == "b":
        return base64.b64encode(bytes(raw)).decode()
    if kind == "i":
        return _signed(raw)
    if kind == "B":
        return bool(raw)
    if kind == "d":
        return struct.unpack("<d", raw)[0]
    if kind == "f":
        return struct.unpack("<f", raw)[0]
    if kind == "x":
        return struct.unpack("<q", raw)[0]
    raise DecodeError(f"unknown scalar kind {kind}")


def _is_zero(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return bool(value == 0)
    return bool(value == "")


def _special(name: str, data: bytes) -> Any:
    fields = {n: v for n, _, v in _fields(data)}
    if name in _TIME:
        seconds = _signed(fields.get(1, 0))
        nanos = fields.get(2, 0)
        if not seconds and not nanos:
            return None
        t = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        if name.endswith("MicroTime"):
            return t.replace(microsecond=nanos // 1000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if name == _INT_OR_STRING:
        if fields.get(1, 0) == 1:
            return bytes(fields.get(3, b"")).decode()
        return _signed(fields.get(2, 0))
    if name == _QUANTITY:
        return bytes(fields.get(1, b"")).decode()
    if name in (_RAW, _FIELDS_V1):
        raw = bytes(fields.get(1, b""))
        return orjson.loads(raw) if raw else None
    if name == _DURATION:
        ns = _signed(fields.get(1, 0))
        return f"{ns / 1e9:g}s"
    raise DecodeError(f"no special decoder for {name}")


_SPECIAL = frozenset({*_TIME, _INT_OR_STRING, _QUANTITY, _RAW, _FIELDS_V1, _DURATION})


def _value(kind: str, wire: int, raw: Any, depth: int) -> Any:
    if (kind in _SPECIAL or kind in _schema()) and wire != 2:
        raise DecodeError(f"wire type {wire} where the message {kind} was expected")
    if kind in _SPECIAL:
        return _special(kind, bytes(raw))
    if kind in _schema():
        return decode_message(kind, bytes(raw), depth=depth + 1)
    return _scalar(kind, wire, raw)


def decode_message(name: str, data: bytes, *, depth: int = 1) -> dict[str, Any]:
    # Messages nest (JSONSchemaProps holds JSONSchemaProps): bound the recursion.
    if depth > jsontree.MAX_DEPTH:
        raise DecodeError(f"messages nested deeper than {jsontree.MAX_DEPTH} levels")
    schema = _schema().get(name)
    if schema is None:
        raise DecodeError(f"unknown message {name}")
    by_number = {row[0]: row for row in schema}
    out: dict[str, Any] = {}
    for number, wire, raw in _fields(data):
        row = by_number.get(number)
        if row is None:
            continue  # a field newer than our schema: ignored, as proto does
        _, json_name, kind, repeated, keeps_zero, inline = row
        if kind.startswith("M:"):
            _, key_kind, value_kind = kind.split(":", 2)
            entry = {n: (w, v) for n, w, v in _fields(bytes(raw))}
            key = _value(key_kind, *entry[1], depth) if 1 in entry else ""
            value = _value(value_kind, *entry[2], depth) if 2 in entry else ("" if value_kind == "s" else None)
            out.setdefault(json_name, {})[key] = value
            continue
        if repeated and wire == 2 and kind in ("i", "B"):
            # packed repeated scalars
            pos = 0
            items = out.setdefault(json_name, [])
            while pos < len(raw):
                v, pos = _varint(bytes(raw), pos)
                items.append(_scalar(kind, 0, v))
            continue
        value = _value(kind, wire, raw, depth)
        if inline and isinstance(value, dict):
            out.update(value)
            continue
        if repeated:
            out.setdefault(json_name, []).append(value)
            continue
        if value is None or (not keeps_zero and not isinstance(value, dict) and _is_zero(value)):
            continue
        out[json_name] = value
    return out


def decode(body: bytes) -> dict[str, Any]:
    """Decode a `k8s\\0`-enveloped object into its JSON form (with apiVersion and kind)."""
    if not body.startswith(MAGIC):
        raise DecodeError("the protobuf body does not start with the Kubernetes magic number")
    unknown = {n: v for n, _, v in _fields(body[len(MAGIC) :])}
    type_meta = {n: bytes(v).decode() for n, _, v in _fields(bytes(unknown.get(1, b"")))}
    api_version = type_meta.get(1, "")
    kind = type_meta.get(2, "")
    if not kind:
        raise DecodeError("the protobuf body names no kind")
    encoding = bytes(unknown.get(3, b"")).decode()
    if encoding:
        raise DecodeError(f"unsupported content encoding {encoding!r}")
    package = _PACKAGES.get(api_version)
    name = f"{package}.{kind}" if package else ""
    if name not in _schema():
        name = _META + kind
        if name not in _schema():
            raise DecodeError(f"no protobuf schema for {api_version} {kind}")
    obj = decode_message(name, bytes(unknown.get(2, b"")))
    return {"apiVersion": api_version, "kind": kind, **obj}
