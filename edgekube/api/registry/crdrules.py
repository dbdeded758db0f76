"""CRD validation rules: `x-kubernetes-validations` in a CustomResourceDefinition's schema, in CEL.

A rule sits on any node of the schema and sees that node's value as `self`; a transition rule
(one that names `oldSelf`) sees the old value as well and runs only on updates where the old value
exists (object properties, additionalProperties by key, `listType: map` items by their keys), as
upstream. A failed rule is one 422 cause on the node's path (plus the rule's `fieldPath`), its
`message`, `messageExpression` or `failed rule: <rule>`, its `reason` choosing the cause type.

Rules compile when the CRD is written (`compile_causes`): a rule that does not parse, or names
anything but `self` and `oldSelf`, refuses the CRD. Cost is bounded twice: each evaluation by
the `cel` module's budget (a rule that runs past it is refused, `call cost exceeds limit`), and
the whole object by a total (`running out of cost budget`, the rest skipped); the registry runs
`check` off the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from edgekube.api.errors import Cause
from edgekube.api.registry import cel

JSON = dict[str, Any]
_VARIABLES = frozenset({"self", "oldSelf"})
# The steps all rules of one object may take together.
TOTAL_BUDGET = 200_000
_MISSING = object()
_REASONS = {
    "FieldValueInvalid": None,
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
}


def has_rules(schema: Any) -> bool:
    return any(True for _ in _rule_nodes(schema, ""))


def _rule_nodes(schema: Any, path: str) -> Iterator[tuple[str, JSON]]:
    if not isinstance(schema, dict):
        return
    if schema.get("x-kubernetes-validations"):
        yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _rule_nodes(sub, f"{path}.properties[{name}]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _rule_nodes(schema["additionalProperties"], f"{path}.additionalProperties")
    if isinstance(schema.get("items"), dict):
        yield from _rule_nodes(schema["items"], f"{path}.items")


def compile_causes(schema: Any, path: str) -> list[Cause]:
    """Causes for the rules of a CRD version's schema that do not compile."""
    out: list[Cause] = []
    for node_path, node in _rule_nodes(schema, path):
        for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
            where = f"{node_path}.x-kubernetes-validations[{i}]"
            if not isinstance(rule, dict) or not rule.get("rule"):
                out.append(Cause(f"{where}.rule", "Required value", "FieldValueRequired"))
                continue
            for key in ("rule", "messageExpression"):
                if rule.get(key):
                    problem = cel.compile_error(str(rule[key]), variables=_VARIABLES)
                    if problem:
                        out.append(Cause(f"{where}.{key}", f'Invalid value: "{rule[key]}": compilation failed: {problem}'))
            if rule.get("reason") not in (None, *_REASONS):
                out.append(Cause(f"{where}.reason", f'Unsupported value: "{rule["reason"]}": supported values: '
                                 + ", ".join(f'"{r}"' for r in _REASONS), "FieldValueNotSupported"))
    return out


@dataclasses.dataclass
class _Run:
    budget: int
    causes: list[Cause] = dataclasses.field(default_factory=list)
    exhausted: bool = False


def check(schema: Any, obj: JSON, old: JSON | None) -> list[Cause]:
    """The causes of `obj` (with `old`, on updates) failing its CRD's rules (pure: may run off the
    loop)."""
    run = _Run(TOTAL_BUDGET)
    _walk(schema, obj, old if old is not None else _MISSING, "", run)
    return run.causes


def _field(path: str, sub: str) -> str:
    return f"{path}.{sub}" if path else sub


def _walk(schema: Any, value: Any, old: Any, path: str, run: _Run) -> None:
    if not isinstance(schema, dict) or value is None or run.exhausted:
        return
    if schema.get("x-kubernetes-validations"):
        _rules(schema, value, old, path, run)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, sub_value in value.items():
            sub_schema = props.get(key) if key in props else (extra if isinstance(extra, dict) else None)
            if sub_schema is None:
                continue
            sub_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            _walk(sub_schema, sub_value, sub_old, _field(path, key), run)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        olds: dict[tuple[Any, ...], Any] = {}
        if keys and isinstance(old, list):
            olds = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(value):
            item_old = olds.get(tuple(item.get(k) for k in keys), _MISSING) if keys and isinstance(item, dict) else _MISSING
            _walk(schema["items"], item, item_old, f"{path}[{i}]", run)


def _rules(schema: JSON, value: Any, old: Any, path: str, run: _Run) -> None:
    shown = str(schema.get("type") or "object")
    for rule in schema.get("x-kubernetes-validations") or []:
        if not isinstance(rule, dict) or not rule.get("rule"):
            continue
        text = str(rule["rule"])
        program = cel.compile(text, variables=_VARIABLES)
        transition = "oldSelf" in program.names
        if transition and old is _MISSING and not rule.get("optionalOldSelf"):
            continue
        values = {"self": value}
        if transition:
            values["oldSelf"] = None if old is _MISSING else old
        where = path + str(rule.get("fieldPath") or "") if rule.get("fieldPath") else path
        where = where.lstrip(".") or "<nil>"
        if run.budget <= 0:
            run.exhausted = True
            run.causes.append(Cause(where, "Forbidden: validation failed due to running out of cost budget, "
                                           "no further validation rules will be run", "FieldValueForbidden"))
            return
        budget = min(cel.DEFAULT_BUDGET, run.budget)
        try:
            result, spent = program.run(values, budget=budget)
        except cel.CostExceeded:
            run.budget -= budget
            run.causes.append(Cause(where, f'Invalid value: "{shown}": call cost exceeds limit for rule: {text}'))
            continue
        except cel.EvalError as exc:
            run.causes.append(Cause(where, f'Invalid value: "{shown}": {exc} evaluating rule: {text}'))
            continue
        run.budget -= spent
        if cel.truthy(result) is True:
            continue
        run.causes.append(_failure(rule, values, where, shown, text))


def _failure(rule: JSON, values: JSON, where: str, shown: str, text: str) -> Cause:
    message = str(rule.get("message") or "") or f"failed rule: {text}"
    if rule.get("messageExpression"):
        try:
            computed = cel.as_text(cel.compile(str(rule["messageExpression"]), variables=_VARIABLES).evaluate(values))
        except (cel.CostExceeded, cel.EvalError):
            computed = None
        if computed and computed.strip():
            message = computed
    reason = str(rule.get("reason") or "FieldValueInvalid")
    label = _REASONS.get(reason)
    if label is None:
        return Cause(where, f'Invalid value: "{shown}": {message}', "FieldValueInvalid")
    return Cause(where, f"{label}: {message}", reason)
