"""Label selectors: the `labelSelector` query grammar and the structured LabelSelector.

Grammar, as upstream's `labels.Parse`: requirements separated by commas, each one of
`key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`,
`key>N`, `key<N`. A selector prints canonically (requirements sorted by key, set values sorted),
which is what Scale.status.selector and kubectl show.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TOKEN = re.compile(r"\s*(!=|==|=|!|,|\(|\)|>|<|[^\s!=,()<>]+)")


class SelectorError(ValueError):
    pass


def validate_key(key: str) -> str | None:
    """None when `key` is a valid qualified name (optional DNS prefix, then a name)."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return f"prefix part must be non-empty in {key!r}"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix part of {key!r} must be a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _NAME.match(name):
        return (
            f"name part of {key!r} must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (max 63 characters)"
        )
    return None


def validate_value(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63 or not _NAME.match(value):
        return (
            f"a valid label value must be an empty string or consist of alphanumeric characters, '-', '_' or "
            f"'.', and must start and end with an alphanumeric character (max 63 characters), got {value!r}"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not has or labels[self.key] not in self.values
        if not has:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        bound = int(self.values[0])
        return have > bound if self.op == "gt" else have < bound

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in ("gt", "lt"):
            return f"{self.key}{'>' if self.op == 'gt' else '<'}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


@dataclasses.dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False  # matches no object (a LabelSelector that is null)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return self._compiled.matches(labels or {})

    @functools.cached_property
    def _compiled(self) -> _Compiled:
        return _Compiled(self)

    def empty(self) -> bool:
        return not self.requirements and not self.nothing

    def __str__(self) -> str:
        return ",".join(str(r) for r in sorted(self.requirements, key=lambda r: r.key))


class _Compiled:
    """A selector as a few sets and maps, matched in time proportional to an object's own labels
    rather than to the selector's terms: a query string may hold thousands of terms, and a
    list tries them on every object.

    Every term but `!=`, `notin` and `!` needs its key present, so the required keys are tried
    first, in order, stopping at the first one missing: each one found is a distinct label of the
    object. Terms on one key combine into one test (the `in` sets intersect, the `notin` sets
    unite, the `>` bounds take their highest, the `<` their lowest), which each of the object's
    labels then meets in one lookup.
    """

    def __init__(self, selector: Selector) -> None:
        self.nothing = selector.nothing
        self.required: list[str] = []  # keys that must be there, in the selector's order
        self.absent: frozenset[str] = frozenset(r.key for r in selector.requirements if r.op == "!")
        allowed: dict[str, set[str]] = {}
        forbidden: dict[str, set[str]] = {}
        above: dict[str, int] = {}
        below: dict[str, int] = {}
        for r in selector.requirements:
            if r.op in ("exists", "=", "in", "gt", "lt") and r.key not in self.required:
                self.required.append(r.key)
            if r.op in ("=", "in"):
                allowed[r.key] = allowed[r.key] & set(r.values) if r.key in allowed else set(r.values)
            elif r.op in ("!=", "notin"):
                forbidden.setdefault(r.key, set()).update(r.values)
            elif r.op == "gt":
                above[r.key] = max(above.get(r.key, int(r.values[0])), int(r.values[0]))
            elif r.op == "lt":
                below[r.key] = min(below.get(r.key, int(r.values[0])), int(r.values[0]))
        # Per key: (values allowed or None, values forbidden or None, exclusive bounds or None).
        self.tests: dict[str, tuple[set[str] | None, set[str] | None, int | None, int | None]] = {
            key: (allowed.get(key), forbidden.get(key), above.get(key), below.get(key))
            for key in {*allowed, *forbidden, *above, *below}
        }

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        for key in self.required:
            if key not in labels:
                return False
        if self.absent and not self.absent.isdisjoint(labels):
            return False
        tests = self.tests
        if not tests:
            return True
        for key, value in labels.items():
            test = tests.get(key)
            if test is None:
                continue
            allowed, forbidden, above, below = test
            if allowed is not None and value not in allowed:
                return False
            if forbidden is not None and value in forbidden:
                return False
            if above is not None or below is not None:
                try:
                    have = int(value)
                except ValueError:
                    return False
                if (above is not None and not have > above) or (below is not None and not have < below):
                    return False
        return True


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SelectorError(f"unable to parse requirement: invalid character at {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse(text: str) -> Selector:
    """Parse the `labelSelector` query parameter."""
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def peek(j: int = 0) -> str | None:
        return toks[i + j] if i + j < len(toks) else None

    while i < len(toks):
        negate = False
        if toks[i] == "!":
            negate = True
            i += 1
        key = peek()
        if key is None or key in ("=", "==", "!=", ",", "(", ")", "!", ">", "<"):
            raise SelectorError(f"unable to parse requirement: expected a key in {text!r}")
        if (err := validate_key(key)) is not None:
            raise SelectorError(f"unable to parse requirement: invalid label key {key!r}: {err}")
        i += 1
        op = peek()
        if negate:
            if op not in (None, ","):
                raise SelectorError(f"unable to parse requirement: unexpected {op!r} after '!{key}'")
            reqs.append(Requirement(key, "!"))
        elif op in (None, ","):
            reqs.append(Requirement(key, "exists"))
        elif op in ("=", "==", "!=", ">", "<"):
            i += 1
            value = peek()
            if value is None or value in (",", "(", ")", "=", "==", "!=", "!", ">", "<"):
                value = ""
            else:
                i += 1
            if op in (">", "<"):
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(f"unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer, got {value!r}") from None
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            else:
                if (err := validate_value(value)) is not None:
                    raise SelectorError(f"unable to parse requirement: values[0][{key}]: Invalid value: {value!r}: {err}")
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
        elif op in ("in", "notin"):
            i += 1
            if peek() != "(":
                raise SelectorError(f"unable to parse requirement: found {peek()!r}, expected: '('")
            i += 1
            values: list[str] = []
            expect_value = True
            while True:
                tok = peek()
                if tok is None:
                    raise SelectorError("unable to parse requirement: found end of input, expected: ')'")
                i += 1
                if tok == ")":
                    if expect_value and values:
                        values.append("")
                    break
                if tok == ",":
                    if expect_value:
                        values.append("")
                    expect_value = True
                    continue
                if not expect_value:
                    raise SelectorError(f"unable to parse requirement: found {tok!r}, expected: ',' or ')'")
                if (err := validate_value(tok)) is not None:
                    raise SelectorError(f"unable to parse requirement: {err}")
                values.append(tok)
                expect_value = False
            if not values:
                raise SelectorError(f"unable to parse requirement: for 'in', 'notin' operators, values set can't be empty ({key})")
            reqs.append(Requirement(key, op, tuple(dict.fromkeys(values))))
        else:
            raise SelectorError(f"unable to parse requirement: found {op!r}, expected: in, notin, =, ==, !=, gt, lt")
        tok = peek()
        if tok is None:
            break
        if tok != ",":
            raise SelectorError(f"unable to parse requirement: found {tok!r}, expected: ','")
        i += 1
        if peek() is None:
            raise SelectorError("unable to parse requirement: found end of input after ','")
    return Selector(tuple(reqs))


def from_label_selector(selector: Mapping[str, Any] | None) -> Selector:
    """A structured LabelSelector (matchLabels, matchExpressions). A null selector matches nothing;
    an empty one matches everything, as upstream's `LabelSelectorAsSelector`."""
    if selector is None:
        return Selector(nothing=True)
    reqs: list[Requirement] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        if (err := validate_key(str(key))) is not None:
            raise SelectorError(err)
        if (err := validate_value(str(value))) is not None:
            raise SelectorError(err)
        reqs.append(Requirement(str(key), "=", (str(value),)))
    for expr in selector.get("matchExpressions") or []:
        key = str(expr.get("key", ""))
        if (err := validate_key(key)) is not None:
            raise SelectorError(err)
        op = expr.get("operator")
        values = tuple(str(v) for v in expr.get("values") or [])
        if op in ("In", "NotIn"):
            if not values:
                raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty ({key})")
            reqs.append(Requirement(key, "in" if op == "In" else "notin", values))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                raise SelectorError(f"values set must be empty for exists and does not exist ({key})")
            reqs.append(Requirement(key, "exists" if op == "Exists" else "!"))
        else:
            raise SelectorError(f"{op!r} is not a valid label selector operator")
    return Selector(tuple(reqs))
