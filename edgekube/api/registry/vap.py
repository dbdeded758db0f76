"""ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding (admissionregistration/v1), in CEL.

A policy says what it checks (`validations`, each a CEL expression that must be true, with its
`message` or `messageExpression` and `reason`), on which requests (`matchConstraints`: rules,
namespace and object selectors, excluded rules; `matchConditions` in CEL), with which parameters
(`paramKind`) and what an evaluation error means (`failurePolicy`). A binding puts a policy to
work: which requests of those (`matchResources`), with which parameter objects (`paramRef` by
name or selector, in a namespace or the request's), and what a failed validation does
(`validationActions`): Deny refuses the request (upstream's `<resource> "<name>" is forbidden:
ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: <message>`, the code from the
reason: Invalid 422, Forbidden 403, Unauthorized 401, RequestEntityTooLarge 413), Warn adds a
`Warning`, Audit an audit annotation (`validation.policy.admission.k8s.io/validation_failure`).

Expressions see `object`, `oldObject`, `request` (upstream's admission request: kind, resource,
name, namespace, operation, userInfo, dryRun, options), `namespaceObject`, `params` and
`variables` (the policy's named variables, evaluated in order). They compile when the policy is
written (see `admissionconfig`); each evaluation is bounded (see `cel`), and the whole of a
request's policies run on the offload worker, never on the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from edgekube.api import errors, labels
from edgekube.api.registry import cel, resources, webhooks
from edgekube.store import store as store_mod

JSON = dict[str, Any]
GROUP = "admissionregistration.k8s.io"
_CODES = {"Invalid": 422, "Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}
AUDIT_KEY = "validation.policy.admission.k8s.io/validation_failure"


@dataclasses.dataclass
class Decision:
    """What evaluating the policies for one request found (applied on the loop by `apply`)."""

    denied: errors.APIError | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    audit: dict[str, str] = dataclasses.field(default_factory=dict)
    failures: list[JSON] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Work:
    """One binding to evaluate, with everything it needs read from the store (the evaluation
    itself touches nothing the loop owns)."""

    policy: JSON
    binding: JSON
    params: list[Any]  # the parameter objects (or [None] without paramKind)
    namespace_object: JSON | None


class Policies:
    def __init__(self, store: store_mod.Store, *, catalog: resources.Catalog, objects: Callable[[str], list[JSON]],
                 namespace_object: Callable[[str], JSON | None]) -> None:
        self._store = store
        self._catalog = catalog
        self._namespace_object = namespace_object
        self._objects = objects

    def work(self, call: webhooks.Call, obj: JSON | None) -> tuple[list[Work], errors.APIError | None]:
        """The bindings that match the request, with their policies and parameters (on the loop:
        it reads the store); or the refusal of a binding whose parameters are missing."""
        if call.info.group == GROUP:
            return [], None
        bindings = self._objects("validatingadmissionpolicybindings")
        if not bindings:
            return [], None
        policies = {p["metadata"]["name"]: p for p in self._objects("validatingadmissionpolicies")}
        ns_object = self._namespace_object(call.namespace) if call.namespace else None
        if call.info.gk == "Namespace":
            ns_object = obj or call.old
        found: list[Work] = []
        for binding in bindings:
            spec = binding.get("spec") or {}
            policy = policies.get(spec.get("policyName"))
            if policy is None:
                continue
            pspec = policy.get("spec") or {}
            if not self._matches(pspec.get("matchConstraints"), call, obj, ns_object, required=True):
                continue
            if spec.get("matchResources") and not self._matches(spec["matchResources"], call, obj, ns_object, required=False):
                continue
            params: list[Any] = [None]
            if pspec.get("paramKind"):
                params, refused = self._params(pspec["paramKind"], spec.get("paramRef"), call, policy, binding)
                if refused is not None:
                    return [], refused
                if not params:
                    continue
            found.append(Work(policy, binding, params, ns_object))
        return found, None

    def _matches(self, match: Any, call: webhooks.Call, obj: JSON | None, ns_object: JSON | None, *,
                 required: bool) -> bool:
        if not isinstance(match, dict):
            return not required
        label_sets = [(o.get("metadata") or {}).get("labels") or {} for o in (obj, call.old) if o is not None]
        ns_sel = match.get("namespaceSelector")
        # Namespaced objects by their namespace's labels, a Namespace by its own; other
        # cluster-scoped objects are not filtered by it (upstream's matcher).
        if ns_sel and (call.info.namespaced or call.info.gk == "Namespace") and ns_object is not None:
            if not labels.from_label_selector(ns_sel).matches((ns_object.get("metadata") or {}).get("labels") or {}):
                return False
        obj_sel = match.get("objectSelector")
        if obj_sel and not any(labels.from_label_selector(obj_sel).matches(ls) for ls in label_sets):
            return False

        def in_rules(rules: Any) -> bool:
            versions = [call.info]
            if match.get("matchPolicy", "Equivalent") == "Equivalent":
                versions += [i for i in self._catalog.all() if i.group == call.info.group
                             and i.plural == call.info.plural and i.version != call.info.version]
            for rule in rules or []:
                if not isinstance(rule, dict):
                    continue
                names = rule.get("resourceNames") or []
                if names and call.name not in names:
                    continue
                if any(webhooks.rule_matches(rule, operation=call.operation, group=v.group, version=v.version,
                                             resource=v.plural, subresource=call.subresource,
                                             namespaced=call.info.namespaced) for v in versions):
                    return True
            return False

        if match.get("resourceRules") is not None and not in_rules(match.get("resourceRules")):
            return False
        return not in_rules(match.get("excludeResourceRules"))

    def _params(self, kind: JSON, ref: Any, call: webhooks.Call, policy: JSON, binding: JSON
                ) -> tuple[list[Any], errors.APIError | None]:
        info = self._catalog.by_kind(str(kind.get("apiVersion") or ""), str(kind.get("kind") or ""))
        ref = ref if isinstance(ref, dict) else {}
        deny = ref.get("parameterNotFoundAction", "Deny") == "Deny"
        found: list[Any] = []
        if info is not None:
            namespace = str(ref.get("namespace") or (call.namespace if info.namespaced else "")) or None
            if ref.get("name"):
                item = self._store.get(info.key(str(ref["name"]), namespace))
                if item is not None:
                    found = [item.object()]
            elif ref.get("selector") is not None:
                sel = labels.from_label_selector(ref["selector"])
                found = [o for _, o in self._store.objects(self._store.scan(info.key_prefix(namespace)).items,
                                                            reader="admission policy params")
                         if sel.matches((o.get("metadata") or {}).get("labels") or {})]
        if found or not deny:
            return found, None
        message = "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
        return [], _denial(call, policy, binding, message, "Invalid")


def evaluate(work: list[Work], call: webhooks.Call, obj: JSON | None) -> Decision:
    """Every binding's validations (pure: runs on the offload worker)."""
    decision = Decision()
    base = {"object": obj, "oldObject": call.old, "request": webhooks.request_variable(call)}
    for item in work:
        for params in item.params:
            _one(item, params, base, call, decision)
            if decision.denied is not None:
                return decision
    if decision.failures:
        decision.audit[AUDIT_KEY] = orjson.dumps(decision.failures).decode()
    return decision


def _one(item: Work, params: Any, base: JSON, call: webhooks.Call, decision: Decision) -> None:
    spec = item.policy.get("spec") or {}
    bspec = item.binding.get("spec") or {}
    names = cel.ADMISSION_VARIABLES | ({"params"} if spec.get("paramKind") else frozenset())
    declared = [v for v in spec.get("variables") or [] if isinstance(v, dict)]
    if declared:
        names = names | {"variables"}
    values = {**base, "namespaceObject": item.namespace_object}
    if spec.get("paramKind"):
        values["params"] = params
    fail_open = spec.get("failurePolicy") == "Ignore"
    policy_name, binding_name = item.policy["metadata"]["name"], item.binding["metadata"]["name"]
    actions = list(bspec.get("validationActions") or [])

    def failure(message: str, reason: str, index: int) -> None:
        if "Deny" in actions and decision.denied is None:
            decision.denied = _denial(call, item.policy, item.binding, message, reason)
        if "Warn" in actions:
            decision.warnings.append(
                f"Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {message}")
        if "Audit" in actions:
            decision.failures.append({"message": message, "policy": policy_name, "binding": binding_name,
                                      "expressionIndex": index, "validationActions": actions})

    try:
        variables: JSON = {}
        if declared:
            values["variables"] = variables  # each variable sees the ones before it
        for var in declared:
            variables[str(var.get("name"))] = cel.compile(str(var.get("expression")), variables=names).evaluate(values)
        for cond in spec.get("matchConditions") or []:
            result = cel.compile(str(cond.get("expression")), variables=names).evaluate(values)
            if cel.truthy(result) is False:
                return
    except (cel.EvalError, cel.CostExceeded, ValueError) as exc:
        if not fail_open:
            failure(f"failed to evaluate: {exc}", "Invalid", 0)
        return
    for index, validation in enumerate(spec.get("validations") or []):
        text = str(validation.get("expression") or "")
        try:
            result = cel.compile(text, variables=names).evaluate(values)
        except (cel.EvalError, cel.CostExceeded, ValueError) as exc:
            if not fail_open:
                failure(f"expression '{text}' resulted in error: {exc}", "Invalid", index)
            continue
        if cel.truthy(result) is True:
            continue
        if cel.truthy(result) is None and not fail_open:
            failure(f"expression '{text}' resulted in error: validation expression must return a boolean", "Invalid", index)
            continue
        message = str(validation.get("message") or "") or f"failed expression: {text}"
        if validation.get("messageExpression"):
            try:
                computed = cel.as_text(cel.compile(str(validation["messageExpression"]), variables=names).evaluate(values))
            except (cel.EvalError, cel.CostExceeded, ValueError):
                computed = None
            if computed and computed.strip() and "\n" not in computed:
                message = computed
        failure(message, str(validation.get("reason") or "Invalid"), index)
    for annotation in spec.get("auditAnnotations") or []:
        try:
            value = cel.compile(str(annotation.get("valueExpression")), variables=names).evaluate(values)
        except (cel.EvalError, cel.CostExceeded, ValueError):
            continue
        if value is not None:
            decision.audit[f"{policy_name}/{annotation.get('key')}"] = str(value)


def _denial(call: webhooks.Call, policy: JSON, binding: JSON, message: str, reason: str) -> errors.APIError:
    why = (f"ValidatingAdmissionPolicy '{policy['metadata']['name']}' with binding "
           f"'{binding['metadata']['name']}' denied request: {message}")
    out = errors.forbidden_object(call.info.plural, call.name, why, group=call.info.group)
    out.reason = reason
    out.code = _CODES.get(reason, 422)
    details = dict(out.details or {})
    details["causes"] = [{"message": why}]
    out.details = details
    return out


def apply(decision: Decision, *, warnings: list[str], audit: dict[str, str]) -> None:
    """The decision into the response: warnings, audit annotations, and the refusal (raised)."""
    warnings.extend(decision.warnings)
    audit.update(decision.audit)
    if decision.denied is not None:
        raise decision.denied
