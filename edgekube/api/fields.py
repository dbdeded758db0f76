"""Field selectors: `fieldSelector=spec.nodeName=node1,status.phase!=Failed`.

Only `=`, `==` and `!=` exist, as upstream. Each kind supports metadata.name and
metadata.namespace plus the fields upstream registers for it; anything else is a 400 with
upstream's message (`field label not supported: X`). Values may escape `\\`, `,` and `=` with a
backslash.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

Getter = Callable[[Mapping[str, Any]], str]


class SelectorError(ValueError):
    pass


def _path(*parts: str) -> Getter:
    def get(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for p in parts:
            if not isinstance(cur, Mapping):
                return ""
            cur = cur.get(p)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


def _pod_ips(obj: Mapping[str, Any]) -> str:
    ips = (obj.get("status") or {}).get("podIPs") or []
    return ",".join(str(i.get("ip", "")) for i in ips if isinstance(i, Mapping))


_COMMON: dict[str, Getter] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}
_BY_KIND: dict[str, dict[str, Getter]] = {
    "Pod": {
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.hostNetwork": lambda o: "true" if (o.get("spec") or {}).get("hostNetwork") else "false",
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.podIPs": _pod_ips,
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    "Event": {
        "involvedObject.kind": _path("involvedObject", "kind"),
        "involvedObject.namespace": _path("involvedObject", "namespace"),
        "involvedObject.name": _path("involvedObject", "name"),
        "involvedObject.uid": _path("involvedObject", "uid"),
        "involvedObject.apiVersion": _path("involvedObject", "apiVersion"),
        "involvedObject.resourceVersion": _path("involvedObject", "resourceVersion"),
        "involvedObject.fieldPath": _path("involvedObject", "fieldPath"),
        "reason": _path("reason"),
        "reportingComponent": _path("reportingComponent"),
        "source": _path("source", "component"),
        "type": _path("type"),
    },
    "Namespace": {"status.phase": _path("status", "phase")},
    "Node": {"spec.unschedulable": lambda o: "true" if (o.get("spec") or {}).get("unschedulable") else "false"},
    "Secret": {"type": _path("type")},
    "Service": {"spec.clusterIP": _path("spec", "clusterIP"), "spec.type": _path("spec", "type")},
    "ReplicaSet.apps": {"status.replicas": _path("status", "replicas")},
    "Job.batch": {"status.successful": _path("status", "succeeded")},
    "PersistentVolumeClaim": {},
}


@dataclasses.dataclass(frozen=True)
class Term:
    field: str
    op: str  # "=" or "!="
    value: str
    get: Getter = dataclasses.field(compare=False, repr=False)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        have = self.get(obj)
        return (have == self.value) if self.op == "=" else (have != self.value)


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    terms: tuple[Term, ...]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        # Per field, one read of the object and one test, however many terms name it (a query
        # string may hold thousands): the value `=` requires, and the set `!=` refuses.
        tests = self._by_field
        if tests is None:
            return False
        for get, required, refused in tests:
            have = get(obj)
            if (required is not None and have != required) or have in refused:
                return False
        return True

    @functools.cached_property
    def _by_field(self) -> list[tuple[Getter, str | None, frozenset[str]]] | None:
        """(getter, value required or None, values refused) per field; None when two `=` terms
        on one field disagree, so that nothing can match."""
        getters: dict[str, Getter] = {}
        required: dict[str, str] = {}
        refused: dict[str, set[str]] = {}
        for t in self.terms:
            getters.setdefault(t.field, t.get)
            refused.setdefault(t.field, set())
            if t.op == "!=":
                refused[t.field].add(t.value)
            elif required.setdefault(t.field, t.value) != t.value:
                return None
        return [(get, required.get(field), frozenset(refused[field])) for field, get in getters.items()]

    @property
    def fields(self) -> frozenset[str]:
        """The top-level fields of an object the selector reads."""
        return frozenset(t.field.split(".", 1)[0] for t in self.terms)

    def value_of(self, field: str) -> str | None:
        """The value an `=` term requires of `field`, if any (to narrow a scan)."""
        for t in self.terms:
            if t.field == field and t.op == "=":
                return t.value
        return None

    def __str__(self) -> str:
        return ",".join(f"{t.field}{t.op}{_escape(t.value)}" for t in self.terms)


def supported_fields(gk: str) -> list[str]:
    return sorted({*_COMMON, *_BY_KIND.get(gk, {})})


def parse(text: str, *, gk: str) -> FieldSelector:
    getters = {**_COMMON, **_BY_KIND.get(gk, {})}
    terms: list[Term] = []
    for part in _split(text, ","):
        if not part.strip():
            continue
        field, op, value = _split_term(part)
        field = field.strip()
        get = getters.get(field)
        if get is None:
            raise SelectorError(f"field label not supported: {field}")
        terms.append(Term(field, op, _unescape(value), get))
    return FieldSelector(tuple(terms))


def _split(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            cur.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if escaped:
        raise SelectorError(f"invalid field selector: {text!r}: trailing backslash")
    parts.append("".join(cur))
    return parts


def _split_term(term: str) -> tuple[str, str, str]:
    i = 0
    while i < len(term):
        ch = term[i]
        if ch == "\\":
            i += 2
            continue
        if term.startswith("!=", i):
            return term[:i], "!=", term[i + 2 :]
        if term.startswith("==", i):
            return term[:i], "=", term[i + 2 :]
        if ch == "=":
            return term[:i], "=", term[i + 1 :]
        i += 1
    raise SelectorError(f"invalid selector: '{term}'; can't understand '{term}'")


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt not in "\\,=":
                raise SelectorError(f"invalid field selector value {value!r}: invalid escape sequence")
            out.append(nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
