#!/usr/bin/env python3
"""Generate edgekube/api/pbschema.py: the protobuf wire schema of the Kubernetes kinds we serve.

kubectl 1.36's typed clients (`kubectl create namespace`, `create deployment`, ...) send request
bodies as `application/vnd.kubernetes.protobuf`. To read them, edgekube needs each message's
field numbers, JSON names and types (from the `generated.proto` files of k8s.io/api and
k8s.io/apimachinery) and, from the Go types, which fields keep a zero value and which structs are
embedded inline in JSON (Probe's handler, Volume's source). A zero value is kept when the Go field
is a pointer (set explicitly, e.g. `replicas: 0`) or has no `omitempty` (Go's JSON encoder writes
it whatever it holds, e.g. a PriorityClass's `value: 0` or a CRD version's `served: false`):
proto2's `optional` says nothing about either, every field of these messages is `optional`.

The output is a data table only: field numbers and names are the wire protocol. Run by hand
when a Kubernetes minor release adds fields:

    python3 tools/gen_pbschema.py --api DIR --apimachinery DIR --apiextensions DIR --aggregator DIR

where each DIR is a checkout (or a bare git dir, read at HEAD).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import upstream_src

API_PACKAGES = [
    "core/v1", "apps/v1", "batch/v1", "rbac/v1", "coordination/v1", "discovery/v1", "storage/v1",
    "autoscaling/v1", "autoscaling/v2", "policy/v1", "networking/v1", "authentication/v1", "authorization/v1",
    "scheduling/v1",
]
MACHINERY_PACKAGES = ["pkg/apis/meta/v1", "pkg/runtime", "pkg/util/intstr", "pkg/api/resource"]
EXTENSIONS_PACKAGES = ["pkg/apis/apiextensions/v1"]
AGGREGATOR_PACKAGES = ["pkg/apis/apiregistration/v1"]

_FIELD = re.compile(r"^\s*(optional|repeated|required)?\s*(map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)")
_GO_TAG = re.compile(r'protobuf:"(\w+),(\d+),(?:opt|req|rep)[^"]*"')
_SCALARS = {"string": "s", "bytes": "b", "int32": "i", "int64": "i", "uint32": "i", "uint64": "i",
            "bool": "B", "double": "d", "float": "f", "fixed64": "x", "sfixed64": "x"}


def _proto_messages(text: str) -> tuple[str, dict[str, list[tuple[int, str, str, bool]]]]:
    package = re.search(r"^package\s+([\w.]+);", text, re.M)
    assert package is not None
    messages: dict[str, list[tuple[int, str, str, bool]]] = {}
    current: str | None = None
    depth = 0
    for raw in text.splitlines():
        line = raw.split("//", 1)[0]
        if not line.strip():
            continue
        m = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        if m and depth == 0:
            current = m.group(1)
            messages[current] = []
            depth = 1
            continue
        if current is None:
            continue
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            current = None
            depth = 0
            continue
        f = _FIELD.match(line)
        if f is None:
            continue
        label, typ, key, value, name, number = f.groups()
        if key is not None:
            kind = f"M:{_type(key, package.group(1))}:{_type(value, package.group(1))}"
            messages[current].append((int(number), name, kind, False))
        else:
            messages[current].append((int(number), name, _type(typ, package.group(1)), label == "repeated"))
    return package.group(1), messages


def _type(typ: str, package: str) -> str:
    if typ in _SCALARS:
        return _SCALARS[typ]
    if typ.startswith("."):
        return typ[1:]
    return f"{package}.{typ}"


def _go_structs(text: str) -> dict[str, dict[int, tuple[bool, bool]]]:
    """struct -> protobuf field number -> (keeps a zero value, is inline)."""
    out: dict[str, dict[int, tuple[bool, bool]]] = {}
    current: str | None = None
    for raw in text.splitlines():
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{", raw)
        if m:
            current = m.group(1)
            out[current] = {}
            continue
        if current is None:
            continue
        if raw.startswith("}"):
            current = None
            continue
        line = raw.strip()
        if line.startswith("//") or "`" not in line:
            continue
        tag = _GO_TAG.search(line)
        if tag is None:
            continue
        decl = line.split("`", 1)[0].split()
        json_tag = re.search(r'json:"([^"]*)"', line)
        json_name, *json_options = json_tag.group(1).split(",") if json_tag else [""]
        inline = len(decl) == 1 and json_name == ""
        pointer = decl[-1].startswith("*")
        out[current][int(tag.group(2))] = (pointer or "omitempty" not in json_options, inline)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", type=Path, required=True)
    ap.add_argument("--apimachinery", type=Path, required=True)
    ap.add_argument("--apiextensions", type=Path, required=True)
    ap.add_argument("--aggregator", type=Path, required=True, help="k8s.io/kube-aggregator (APIService)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "edgekube/api/pbschema.py")
    args = ap.parse_args()
    table: dict[str, list[tuple[int, str, str, bool, bool, bool]]] = {}
    sources = ([(args.api, p) for p in API_PACKAGES] + [(args.apimachinery, p) for p in MACHINERY_PACKAGES]
               + [(args.apiextensions, p) for p in EXTENSIONS_PACKAGES] + [(args.aggregator, p) for p in AGGREGATOR_PACKAGES])
    for root, pkg in sources:
        package, messages = _proto_messages(upstream_src.read(root, f"{pkg}/generated.proto"))
        structs: dict[str, dict[int, tuple[bool, bool]]] = {}
        for go in upstream_src.type_sources(root, pkg):
            structs.update(_go_structs(upstream_src.read(root, go)))
        for name, fields in messages.items():
            info = structs.get(name, {})
            table[f"{package}.{name}"] = [
                (num, fname, kind, rep, *info.get(num, (False, False))) for num, fname, kind, rep in fields
            ]
    lines = [
        '"""Protobuf wire schema of the Kubernetes kinds edgekube reads (generated by tools/gen_pbschema.py).',
        "",
        "message -> ((number, json name, type, repeated, keeps zero, inline), ...). Types: s string, b bytes,",
        "i varint, B bool, d double, f float, x fixed64, M:key:value a map, otherwise a message name. A field",
        "keeps a zero value when its Go field is a pointer or has no omitempty (Go's JSON encoder writes it).",
        '"""',
        "",
        "# fmt: off",
        "MESSAGES: dict[str, tuple[tuple[int, str, str, bool, bool, bool], ...]] = {",
    ]
    for name in sorted(table):
        lines.append(f"    {name!r}: (")
        for row in table[name]:
            lines.append(f"        {row!r},")
        lines.append("    ),")
    lines.append("}")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"gen_pbschema: {len(table)} messages -> {args.out}")


if __name__ == "__main__":
    main()
