#!/usr/bin/env python3
"""Generate edgekube/api/apischema_data.py: OpenAPI definitions of the built-in kinds.

Upstream generates its OpenAPI from the Go API types: field names from json tags, types from
Go types, descriptions from doc comments, `required` from the absence of `+optional` and
`omitempty`, strategic-merge keys from `patchStrategy`/`patchMergeKey` tags and server-side
apply's list semantics from `+listType`, `+listMapKey`, `+mapType` and `+structType` markers.
This tool reads the same Go sources (k8s.io/api, k8s.io/apimachinery,
k8s.io/apiextensions-apiserver) and writes the resulting Swagger 2.0 definitions, compressed, as
a data module. edgekube builds its OpenAPI documents, strategic merge patch and server-side apply
from that one table.

    python3 tools/gen_apischema.py --api DIR --apimachinery DIR --apiextensions DIR --aggregator DIR

Each DIR is a checkout or a bare git dir (read at HEAD). Run by hand for a new Kubernetes minor.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import zlib
from pathlib import Path
from typing import Any

import upstream_src

API_PACKAGES = [
    "core/v1", "apps/v1", "batch/v1", "rbac/v1", "coordination/v1", "discovery/v1", "storage/v1",
    "autoscaling/v1", "autoscaling/v2", "policy/v1", "networking/v1", "authentication/v1",
    "authorization/v1", "scheduling/v1", "admissionregistration/v1",
]
MACHINERY_PACKAGES = ["pkg/apis/meta/v1", "pkg/runtime", "pkg/util/intstr", "pkg/api/resource", "pkg/version"]
EXTENSIONS_PACKAGES = ["pkg/apis/apiextensions/v1"]
AGGREGATOR_PACKAGES = ["pkg/apis/apiregistration/v1"]

# Go import path -> OpenAPI definition prefix.
def _prefix(import_path: str) -> str:
    parts = import_path.split("/")
    host = parts[0].split(".")
    return ".".join(reversed(host)) + "." + ".".join(parts[1:])


_SPECIAL: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {
        "type": "string", "format": "date-time",
        "description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.  Wrappers are provided for many of the factory methods that the time package offers."},
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": {
        "type": "string", "format": "date-time", "description": "MicroTime is version of Time with microsecond level precision."},
    "io.k8s.apimachinery.pkg.apis.meta.v1.Duration": {"type": "string"},
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "type": "string", "format": "int-or-string",
        "description": "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  This allows you to have, for example, a JSON field that can accept a name or number."},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "type": "string",
        "description": "Quantity is a fixed-point representation of a number. It provides convenient marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() accessors.\n\nThe serialization format is:\n\n``` <quantity>        ::= <signedNumber><suffix>\n\n\t(Note that <suffix> may be empty, from the \"\" case in <decimalSI>.)\n\n<digit>           ::= 0 | 1 | ... | 9 <digits>          ::= <digit> | <digit><digits> <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits> <sign>            ::= \"+\" | \"-\" <signedNumber>    ::= <number> | <sign><number> <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI> <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei\n\n\t(International System of units; See: http://physics.nist.gov/cuu/Units/binary.html)\n\n<decimalSI>       ::= m | \"\" | k | M | G | T | P | E\n\n\t(Note that 1024 = 1Ki but 1000 = 1k; I didn't choose the capitalization.)\n\n<decimalExponent> ::= \"e\" <signedNumber> | \"E\" <signedNumber> ```"},
    "io.k8s.apimachinery.pkg.runtime.RawExtension": {
        "type": "object", "description": "RawExtension is used to hold extensions in external versions."},
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": {
        "type": "object", "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format."},
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON": {
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "JSON represents any valid JSON value. These types are supported: bool, int64, float64, string, []interface{}, map[string]interface{} and nil."},
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray": {
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "JSONSchemaPropsOrArray represents a value that can either be a JSONSchemaProps or an array of JSONSchemaProps. Mainly here for serialization purposes."},
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool": {
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "JSONSchemaPropsOrBool represents JSONSchemaProps or a boolean value. Defaults to true for the boolean property."},
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray": {
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "JSONSchemaPropsOrStringArray represents a JSONSchemaProps or a string array."},
}
_SCALARS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "int": {"type": "integer", "format": "int32"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "uint32": {"type": "integer", "format": "int32"},
    "uint64": {"type": "integer", "format": "int64"},
    "float64": {"type": "number", "format": "double"},
    "float32": {"type": "number", "format": "float"},
    "[]byte": {"type": "string", "format": "byte"},
    "types.UID": {"type": "string"},
    "time.Duration": {"type": "integer", "format": "int64"},
    "interface{}": {},
}


class Package:
    def __init__(self, import_path: str) -> None:
        self.import_path = import_path
        self.prefix = _prefix(import_path)
        self.structs: dict[str, tuple[list[str], list[tuple[list[str], str]]]] = {}
        self.aliases: dict[str, str] = {}  # named non-struct types -> underlying Go type
        self.imports: dict[str, str] = {}  # per file, merged (aliases are unique enough)
        self.type_docs: dict[str, list[str]] = {}


def _parse_file(pkg: Package, text: str) -> None:
    for im in re.finditer(r'^\s*(\w+)?\s*"([^"]+)"\s*$', _import_block(text), re.M):
        alias, path = im.group(1), im.group(2)
        pkg.imports[alias or path.rsplit("/", 1)[-1]] = path
    lines = text.splitlines()
    comment: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("//"):
            comment.append(stripped[2:].removeprefix(" "))
            i += 1
            continue
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{\s*$", line)
        if m:
            name = m.group(1)
            fields: list[tuple[list[str], str]] = []
            field_comment: list[str] = []
            i += 1
            depth = 1
            while i < len(lines) and depth > 0:
                fl = lines[i].strip()
                if fl.startswith("}") and depth == 1:
                    break
                if fl.startswith(("/*", "*")):
                    pass
                elif fl.startswith("//"):  # braces in comments (CEL examples) do not nest
                    field_comment.append(fl[2:].removeprefix(" "))
                elif fl:
                    depth += fl.count("{") - fl.count("}")
                    if depth == 1:
                        fields.append((field_comment, fl))
                    field_comment = []
                else:
                    field_comment = []
                i += 1
            pkg.structs[name] = (comment, fields)
            comment = []
            i += 1
            continue
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{\s*\}\s*$", line)
        if m:
            pkg.structs[m.group(1)] = (comment, [])
            comment = []
            i += 1
            continue
        m = re.match(r"^type\s+(\w+)\s+(.+?)\s*$", line)
        if m and not m.group(2).startswith(("interface", "struct", "func", "=")):
            pkg.aliases[m.group(1)] = m.group(2)
            pkg.type_docs[m.group(1)] = comment
        if stripped and not stripped.startswith("//"):
            comment = []
        i += 1


def _import_block(text: str) -> str:
    m = re.search(r"^import\s*\((.*?)^\)", text, re.M | re.S)
    if m:
        return m.group(1)
    single = re.findall(r'^import\s+(\w+\s+)?("[^"]+")', text, re.M)
    return "\n".join(f"{a or ''}{p}" for a, p in single)


def _description(comment: list[str]) -> str:
    paras: list[list[str]] = [[]]
    for line in comment:
        if line.startswith("---"):
            break
        if line.startswith("+") or line.startswith("TODO"):
            continue
        if not line.strip():
            if paras[-1]:
                paras.append([])
            continue
        paras[-1].append(line.strip())
    return "\n\n".join(" ".join(p) for p in paras if p)


def _markers(comment: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in comment:
        m = re.match(r"^\+([\w.:-]+)(?:=(.*))?$", line.strip())
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return out


class Generator:
    def __init__(self, packages: dict[str, Package]) -> None:
        self.packages = packages
        self.defs: dict[str, dict[str, Any]] = {}
        self.pending: list[tuple[Package, str]] = []

    def ref(self, pkg: Package, name: str) -> dict[str, Any]:
        full = f"{pkg.prefix}.{name}"
        if full in _SPECIAL:
            self.defs.setdefault(full, _SPECIAL[full])
        elif full not in self.defs and name in pkg.structs:
            self.defs[full] = {}
            self.pending.append((pkg, name))
        return {"$ref": f"#/definitions/{full}"}

    def type_schema(self, pkg: Package, gotype: str) -> dict[str, Any]:
        gotype = gotype.strip()
        if gotype.startswith("*"):
            return self.type_schema(pkg, gotype[1:])
        if gotype in _SCALARS:
            return dict(_SCALARS[gotype])
        if gotype.startswith("[]"):
            return {"type": "array", "items": self.type_schema(pkg, gotype[2:])}
        if gotype.startswith("map["):
            depth = 0
            for j, ch in enumerate(gotype):
                if ch == "[":
                    depth += 1
                elif ch == "]":
                    depth -= 1
                    if depth == 0:
                        return {"type": "object", "additionalProperties": self.type_schema(pkg, gotype[j + 1 :])}
        if "." in gotype:
            alias, name = gotype.split(".", 1)
            path = pkg.imports.get(alias)
            if path is None:
                return dict(_SCALARS.get(gotype, {}))
            other = self.packages.get(path)
            full = f"{_prefix(path)}.{name}"
            if full in _SPECIAL:
                self.defs.setdefault(full, _SPECIAL[full])
                return {"$ref": f"#/definitions/{full}"}
            if other is None:
                return {}
            return self.type_schema(other, name)
        full = f"{pkg.prefix}.{gotype}"
        if full in _SPECIAL or gotype in pkg.structs:
            return self.ref(pkg, gotype)
        if gotype in pkg.aliases:
            return self.type_schema(pkg, pkg.aliases[gotype])
        raise KeyError(f"{pkg.import_path}: unknown type {gotype}")

    def struct(self, pkg: Package, name: str) -> dict[str, Any]:
        comment, fields = pkg.structs[name]
        schema: dict[str, Any] = {"type": "object", "properties": {}}
        desc = _description(comment)
        if desc:
            schema["description"] = desc
        markers = _markers(comment)
        if "structType" in markers:
            schema["x-kubernetes-map-type"] = markers["structType"][0]
        required: list[str] = []
        for fcomment, line in fields:
            self.field(pkg, schema, required, fcomment, line)
        if required:
            schema["required"] = sorted(required)
        if not schema["properties"]:
            del schema["properties"]
        return schema

    def field(self, pkg: Package, schema: dict[str, Any], required: list[str], comment: list[str], line: str) -> None:
        tag_m = re.search(r"`(.*)`", line)
        tag = tag_m.group(1) if tag_m else ""
        decl = line.split("`", 1)[0].split()
        json_m = re.search(r'json:"([^"]*)"', tag)
        json_tag = json_m.group(1) if json_m else None
        if json_tag == "-" or not decl:
            return
        json_name, _, opts = (json_tag or "").partition(",")
        gotype = decl[-1]
        if "inline" in opts or (len(decl) == 1 and not json_name):
            # An embedded struct: its fields are this struct's fields.
            emb = gotype.lstrip("*")
            if "." in emb:
                alias, ename = emb.split(".", 1)
                other = self.packages.get(pkg.imports.get(alias, ""))
                if other is None or ename not in other.structs:
                    return
                epkg = other
            else:
                epkg, ename = pkg, emb
            sub = self.struct(epkg, ename)
            schema["properties"].update(sub.get("properties", {}))
            required.extend(sub.get("required", []))
            return
        if json_tag is None:
            return
        prop = self.type_schema(pkg, gotype)
        markers = _markers(comment)
        desc = _description(comment)
        if "$ref" in prop and (desc or markers):
            prop = dict(prop)
        if desc:
            prop["description"] = desc
        if "default" in markers:
            try:
                prop["default"] = json.loads(markers["default"][0])
            except ValueError:
                prop["default"] = markers["default"][0]
        ps = re.search(r'patchStrategy:"([^"]*)"', tag)
        mk = re.search(r'patchMergeKey:"([^"]*)"', tag)
        if ps:
            prop["x-kubernetes-patch-strategy"] = ps.group(1)
        if mk:
            prop["x-kubernetes-patch-merge-key"] = mk.group(1)
        if "listType" in markers:
            prop["x-kubernetes-list-type"] = markers["listType"][0]
        if "listMapKey" in markers:
            prop["x-kubernetes-list-map-keys"] = markers["listMapKey"]
        if "mapType" in markers:
            prop["x-kubernetes-map-type"] = markers["mapType"][0]
        if "structType" in markers:
            prop["x-kubernetes-map-type"] = markers["structType"][0]
        if "optional" not in markers and "omitempty" not in opts and "omitzero" not in opts:
            required.append(json_name)
        schema["properties"][json_name] = prop

    def run(self, roots: list[tuple[Package, str]]) -> dict[str, dict[str, Any]]:
        for pkg, name in roots:
            self.ref(pkg, name)
        while self.pending:
            pkg, name = self.pending.pop()
            self.defs[f"{pkg.prefix}.{name}"] = self.struct(pkg, name)
        return self.defs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", type=Path, required=True)
    ap.add_argument("--apimachinery", type=Path, required=True)
    ap.add_argument("--apiextensions", type=Path, required=True)
    ap.add_argument("--aggregator", type=Path, required=True, help="k8s.io/kube-aggregator (APIService)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "edgekube/api/apischema_data.py")
    args = ap.parse_args()
    packages: dict[str, Package] = {}
    sources = ([(args.api, "k8s.io/api", p) for p in API_PACKAGES]
               + [(args.apimachinery, "k8s.io/apimachinery", p) for p in MACHINERY_PACKAGES]
               + [(args.apiextensions, "k8s.io/apiextensions-apiserver", p) for p in EXTENSIONS_PACKAGES]
               + [(args.aggregator, "k8s.io/kube-aggregator", p) for p in AGGREGATOR_PACKAGES])
    for root, module, pkg_dir in sources:
        pkg = Package(f"{module}/{pkg_dir}")
        for go in upstream_src.type_sources(root, pkg_dir):
            _parse_file(pkg, upstream_src.read(root, go))
        packages[pkg.import_path] = pkg
    gen = Generator(packages)
    roots: list[tuple[Package, str]] = []
    for pkg in packages.values():
        for name, (comment, _fields) in pkg.structs.items():
            is_kind = any("k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object" in c for c in comment)
            if is_kind or name in ("Status", "DeleteOptions", "APIResourceList", "WatchEvent", "Info"):
                roots.append((pkg, name))
    defs = gen.run(roots)
    write_data(defs, args.out)


# The shared dictionary every definition is compressed against: the first bytes of all of them
# (their common words: descriptions, `$ref`s, type names), so that each stays small alone.
_ZDICT_BYTES = 32768
_CHUNK = 96


def _literal(text: str, indent: str) -> list[str]:
    """`text` as adjacent string literals of at most _CHUNK characters (one constant)."""
    return [f"{indent}{text[i:i + _CHUNK]!r}" for i in range(0, len(text), _CHUNK)] or [f"{indent}''"]


def write_data(defs: dict[str, Any], out: Path) -> None:
    """The module apischema reads: each definition compressed alone (zlib against a shared
    dictionary, base64), so that a server parses only the definitions it uses."""
    blobs = {name: json.dumps(defs[name], sort_keys=True, separators=(",", ":")).encode() for name in sorted(defs)}
    zdict = b"".join(blobs.values())[:_ZDICT_BYTES]
    raw = sum(len(b) for b in blobs.values())
    lines = [
        '"""OpenAPI definitions of the built-in kinds, generated by tools/gen_apischema.py from the',
        "upstream Go API types: each definition's JSON compressed alone with zlib against ZDICT, in",
        "base64; read through `apischema`, which decodes a definition when it is first asked for.",
        '"""',
        "",
        f"DEFINITION_COUNT = {len(defs)}",
        f"RAW_SIZE = {raw}",
        "# fmt: off",
        "ZDICT = (",
        *_literal(base64.b64encode(zdict).decode(), "    "),
        ")",
        "PACKED = {",
    ]
    packed = 0
    for name, blob in blobs.items():
        co = zlib.compressobj(9, zdict=zdict)
        text = base64.b64encode(co.compress(blob) + co.flush()).decode()
        packed += len(text)
        lines.append(f"    {name!r}: (")
        lines.extend(_literal(text, "        "))
        lines.append("    ),")
    lines.append("}")
    out.write_text("\n".join(lines) + "\n")
    print(f"gen_apischema: {len(defs)} definitions, {raw} bytes JSON, {packed} packed -> {out}")


if __name__ == "__main__":
    main()
