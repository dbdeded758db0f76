"""Content negotiation: request bodies in, response forms out.

Bodies: JSON and YAML for create/update (`application/json`, `application/yaml`), the three
patch media types plus apply (handled by `patch.py`). Anything else is 415; a body that does not
parse is 400 with the parser's own words; a body over the limit is 413. YAML is read as
upstream reads it (`jsontree.load_yaml`); any body is decoded off the event loop when it is large, and whatever a
decoder produced passes the JSON gate (`jsontree.check`) before anything else sees it.

Responses: JSON always; `as=Table` (meta.k8s.io v1 or v1beta1) when kubectl asks for a server-side
table; a protobuf-only Accept is 406 since we speak JSON alone. Parameters inside an Accept entry
follow the media type after `;` and entries are separated by `,`.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any

import orjson
import yaml

from edgekube._cogs import offload as offload_mod
from edgekube._cogs import pieces
from edgekube.api import errors, jsontree, protobuf

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


@dataclasses.dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str]


def parse_accept(header: str) -> list[MediaRange]:
    out: list[MediaRange] = []
    for entry in header.split(","):
        parts = [p.strip() for p in entry.split(";")]
        if not parts or not parts[0]:
            continue
        params: dict[str, str] = {}
        for p in parts[1:]:
            if "=" in p:
                k, v = p.split("=", 1)
                params[k.strip().lower()] = v.strip().strip('"')
        out.append(MediaRange(type=parts[0].lower(), params=params))
    return out


def wants_table(accept: str) -> str | None:
    """The Table version asked for ("v1" or "v1beta1"), when JSON tables come first."""
    for rng in parse_accept(accept):
        if rng.params.get("as") == "Table" and rng.type in ("application/json", "*/*"):
            if rng.params.get("g", "meta.k8s.io") == "meta.k8s.io":
                return rng.params.get("v", "v1")
        elif rng.type in ("application/json", "*/*", "application/*"):
            if "as" not in rng.params:
                return None
    return None


def check_acceptable(accept: str) -> None:
    if not accept:
        return
    for rng in parse_accept(accept):
        if rng.type in ("application/json", "*/*", "application/*", "application/yaml", "application/json;stream=watch"):
            return
        if rng.type.startswith("application/json"):
            return
    raise errors.APIError(406, "NotAcceptable", f"only the following media types are accepted: application/json, application/yaml (asked for {accept})")


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode_content(body: bytes, encoding: str, *, limit: int) -> bytes:
    """A request body as sent, undone from its Content-Encoding (identity, gzip, deflate): a
    body that is not what its encoding says is a 400, one that inflates past `limit` a 413."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return body
    if name not in ("gzip", "x-gzip", "deflate"):
        raise errors.unsupported_media_type(f"Content-Encoding: {encoding}", ["gzip", "deflate", "identity"])
    # gzip, or deflate as zlib data (RFC 9110), or as the raw deflate some clients send.
    attempts = (31,) if name != "deflate" else (15, -15)
    for i, wbits in enumerate(attempts):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            if i + 1 < len(attempts):
                continue
            raise errors.bad_request(f"the request body is not valid {name} data: {exc}") from None
        if len(out) > limit:
            raise errors.request_too_large(limit)
        if not inflater.eof:
            if i + 1 < len(attempts):
                continue
            raise errors.bad_request(f"the request body is not valid {name} data: it ends early")
        return out
    raise AssertionError("unreachable")


async def decode_body_async(body: bytes, content_type: str, *, offload: offload_mod.Offload,
                            kind: str = "") -> dict[str, Any]:
    """`decode_body`, on `offload`'s worker when the body is large: PyYAML reads about 0.3 MB/s
    in Python, and the JSON gate walks every value in Python too."""
    return await offload.run(len(body), decode_body, body, content_type, kind=kind)


def unrecognized(kind: str, why: str, body: bytes) -> errors.APIError:
    """Upstream's transformDecodeError for a body that gives no object of its own kind."""
    return errors.bad_request(f"the object provided is unrecognized (must be of type {kind}): {why} ({summarize(body)})")


def summarize(data: bytes, limit: int = 30) -> str:
    """Upstream's summarizeData: JSON-looking bodies as text, others as hex, cut at `limit`."""
    if not data:
        return "<empty>"
    more = " ..." if len(data) > limit else ""
    head = data[:limit]
    if head[:1] == b"{":
        return head.decode("utf-8", errors="replace") + more
    return head.hex() + more


def _go_json_error(exc: orjson.JSONDecodeError, body: bytes) -> str:
    """Go's encoding/json words for the common cases: the input ended, or a character that
    cannot start (or go on) a value."""
    stripped = body.strip()
    if not stripped or exc.pos >= len(body.rstrip()):
        return "unexpected end of JSON input"
    char = body[exc.pos:exc.pos + 1].decode("latin-1")
    return f"invalid character {char!r} looking for beginning of value"


def _go_json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null"


def decode_body(body: bytes, content_type: str, *, kind: str = "") -> dict[str, Any]:
    """Decode a create/update body; it must be one object. With `kind` (the object a create or
    update expects), a JSON body that is not one says so in upstream's words, which tools and
    kubectl's own tests compare."""
    mt = media_type(content_type)
    if mt in JSON_TYPES or mt == "":
        try:
            obj = pieces.json_loads(body)  # a large body in calls of some 32 KiB (see `pieces`)
        except orjson.JSONDecodeError as exc:
            if kind:
                raise unrecognized(kind, f"couldn't get version/kind; json parse error: {_go_json_error(exc, body)}",
                                   body) from None
            raise errors.bad_request(f"error decoding JSON body: {exc}") from None
        if kind and not isinstance(obj, dict):
            raise unrecognized(kind, "couldn't get version/kind; json parse error: json: cannot unmarshal "
                               f"{_go_json_kind(obj)} into Go value of type struct {{ APIVersion string "
                               '"json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }', body)
    elif mt in YAML_TYPES:
        try:
            obj = jsontree.load_yaml(body)
        except jsontree.YAMLError as exc:
            raise errors.bad_request(f"error converting YAML to JSON: {exc}") from None
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error converting YAML to JSON: yaml: {exc}") from None
    elif mt == protobuf.MEDIA_TYPE:
        try:
            obj = protobuf.decode(body)
        except (ValueError, OverflowError, OSError, struct.error) as exc:
            # DecodeError, bad UTF-8, bad JSON in a RawExtension, a Time out of range: all the
            # client's bytes.
            raise errors.bad_request(f"error decoding protobuf body: {exc}") from None
    else:
        raise errors.unsupported_media_type(mt, ["application/json", "application/yaml", protobuf.MEDIA_TYPE])
    if not isinstance(obj, dict):
        raise errors.bad_request("the request body must be a single object")
    # Whatever the decoder, nothing that is not JSON goes further (see jsontree).
    jsontree.check(obj, where="error decoding the request body")
    return obj
