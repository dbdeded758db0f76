"""Defaults and validation of the admissionregistration.k8s.io/v1 kinds.

ValidatingWebhookConfiguration and MutatingWebhookConfiguration as upstream's
SetDefaults_ValidatingWebhook/MutatingWebhook and ValidateValidatingWebhookConfiguration (names
with three DNS segments and unique, sideEffects and admissionReviewVersions required, a timeout
of 1 to 30 seconds, exactly one of url or service, https only, rules with known operations and
scopes); ValidatingAdmissionPolicy and its bindings as upstream's defaults (failurePolicy Fail,
matchPolicy Equivalent, empty selectors) and validation, whose CEL expressions must compile
(see `cel`): a policy with an expression that does not is refused when it is written.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from edgekube.api import labels
from edgekube.api.errors import Cause
from edgekube.api.registry import cel

JSON = dict[str, Any]
GROUP = "admissionregistration.k8s.io"
DEFAULT_TIMEOUT = 10
_OPERATIONS = ("*", "CREATE", "UPDATE", "DELETE", "CONNECT")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _q(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else ("null" if value is None else str(value).lower() if isinstance(value, bool) else str(value))


def _invalid(field: str, value: Any, why: str) -> Cause:
    return Cause(field, f"Invalid value: {_q(value)}: {why}")


def _required(field: str, why: str = "") -> Cause:
    return Cause(field, "Required value" + (f": {why}" if why else ""), "FieldValueRequired")


def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    listed = ", ".join(f'"{a}"' for a in allowed)
    return Cause(field, f"Unsupported value: {_q(value)}: supported values: {listed}", "FieldValueNotSupported")


# --- defaults -------------------------------------------------------------------------------

def default_webhook(hook: JSON, *, mutating: bool) -> None:
    """upstream's defaults for one webhook of a configuration (in place)."""
    hook.setdefault("failurePolicy", "Fail")
    hook.setdefault("matchPolicy", "Equivalent")
    if hook.get("namespaceSelector") is None:
        hook["namespaceSelector"] = {}
    if hook.get("objectSelector") is None:
        hook["objectSelector"] = {}
    hook.setdefault("timeoutSeconds", DEFAULT_TIMEOUT)
    if mutating:
        hook.setdefault("reinvocationPolicy", "Never")
    for rule in hook.get("rules") or []:
        if isinstance(rule, dict):
            rule.setdefault("scope", "*")
    service = (hook.get("clientConfig") or {}).get("service")
    if isinstance(service, dict):
        service.setdefault("port", 443)


def _default_configuration(mutating: bool) -> Callable[[JSON], None]:
    def apply(obj: JSON) -> None:
        for hook in obj.get("webhooks") or []:
            if isinstance(hook, dict):
                default_webhook(hook, mutating=mutating)
    return apply


def _default_match_resources(match: JSON) -> None:
    match.setdefault("matchPolicy", "Equivalent")
    if match.get("namespaceSelector") is None:
        match["namespaceSelector"] = {}
    if match.get("objectSelector") is None:
        match["objectSelector"] = {}
    for key in ("resourceRules", "excludeResourceRules"):
        for rule in match.get(key) or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")


def _default_policy(obj: JSON) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("failurePolicy", "Fail")
    if isinstance(spec.get("matchConstraints"), dict):
        _default_match_resources(spec["matchConstraints"])


def _default_binding(obj: JSON) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("matchResources"), dict):
        _default_match_resources(spec["matchResources"])


DEFAULTERS: Mapping[str, Callable[[JSON], None]] = {
    f"ValidatingWebhookConfiguration.{GROUP}": _default_configuration(False),
    f"MutatingWebhookConfiguration.{GROUP}": _default_configuration(True),
    f"ValidatingAdmissionPolicy.{GROUP}": _default_policy,
    f"ValidatingAdmissionPolicyBinding.{GROUP}": _default_binding,
}


# --- validation -----------------------------------------------------------------------------

def _selector(path: str, selector: Any, out: list[Cause]) -> None:
    if selector in (None, {}):
        return
    try:
        labels.from_label_selector(selector)
    except (labels.SelectorError, ValueError, TypeError, AttributeError) as exc:
        out.append(_invalid(path, str(selector), str(exc)))


def _rule(path: str, rule: Any, out: list[Cause], *, operations: bool = True) -> None:
    if not isinstance(rule, dict):
        out.append(_invalid(path, str(rule), "must be an object"))
        return
    if operations:
        ops = rule.get("operations") or []
        if not ops:
            out.append(_required(f"{path}.operations"))
        if "*" in ops and len(ops) > 1:
            out.append(_invalid(f"{path}.operations", ops, "if '*' is present, must not specify other operations"))
        for j, op in enumerate(ops):
            if op not in _OPERATIONS:
                out.append(_unsupported(f"{path}.operations[{j}]", op, _OPERATIONS))
    for key in ("apiGroups", "apiVersions", "resources"):
        values = rule.get(key) or []
        if not values:
            out.append(_required(f"{path}.{key}"))
        if "*" in values and len(values) > 1 and key != "resources":
            out.append(_invalid(f"{path}.{key}", values, "if '*' is present, must not specify other API groups"
                                if key == "apiGroups" else "if '*' is present, must not specify other API versions"))
    scope = rule.get("scope", "*")
    if scope not in ("*", "Cluster", "Namespaced"):
        out.append(_unsupported(f"{path}.scope", scope, ("*", "Cluster", "Namespaced")))


def _client_config(path: str, config: Any, out: list[Cause]) -> None:
    config = config if isinstance(config, dict) else {}
    url, service = config.get("url"), config.get("service")
    if bool(url) == bool(service):
        out.append(_required(path, "exactly one of url or service is required"))
        return
    if url:
        parsed = urllib.parse.urlsplit(str(url))
        if parsed.scheme != "https":
            out.append(_invalid(f"{path}.url", url, "'https' is the only allowed URL scheme"))
        if not parsed.hostname:
            out.append(_invalid(f"{path}.url", url, "host must be specified"))
        if parsed.fragment:
            out.append(_invalid(f"{path}.url", url, "fragments are not permitted"))
        if parsed.query:
            out.append(_invalid(f"{path}.url", url, "query parameters are not permitted"))
        return
    assert isinstance(service, dict)
    for key in ("name", "namespace"):
        if not service.get(key):
            out.append(_required(f"{path}.service.{key}", f"service {key} is required"))
    port = service.get("port", 443)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        out.append(_invalid(f"{path}.service.port", port, "port is not valid: must be between 1 and 65535, inclusive"))
    svc_path = service.get("path")
    if svc_path and not str(svc_path).startswith("/"):
        out.append(_invalid(f"{path}.service.path", svc_path, "must start with a '/'"))


def _webhook_configuration(mutating: bool) -> Callable[[JSON, JSON | None], list[Cause]]:
    def check(obj: JSON, old: JSON | None) -> list[Cause]:
        out: list[Cause] = []
        seen: set[str] = set()
        for i, hook in enumerate(obj.get("webhooks") or []):
            path = f"webhooks[{i}]"
            if not isinstance(hook, dict):
                out.append(_invalid(path, str(hook), "must be an object"))
                continue
            name = str(hook.get("name") or "")
            if not name:
                out.append(_required(f"{path}.name"))
            elif name.count(".") < 2 or not _DNS_SUBDOMAIN.match(name):
                out.append(_invalid(f"{path}.name", name, "should be a domain with at least three segments separated by dots"))
            elif name in seen:
                out.append(Cause(f"{path}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
            seen.add(name)
            versions = hook.get("admissionReviewVersions") or []
            if not versions:
                out.append(_required(f"{path}.admissionReviewVersions", "must specify one of v1, v1beta1"))
            elif not {"v1", "v1beta1"} & set(versions):
                out.append(_invalid(f"{path}.admissionReviewVersions", versions, "must include at least one of v1, v1beta1"))
            effects = hook.get("sideEffects")
            if effects is None:
                out.append(_required(f"{path}.sideEffects", "must specify one of None, NoneOnDryRun"))
            elif effects not in ("None", "NoneOnDryRun"):
                out.append(_unsupported(f"{path}.sideEffects", effects, ("None", "NoneOnDryRun")))
            timeout = hook.get("timeoutSeconds", DEFAULT_TIMEOUT)
            if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 30:
                out.append(_invalid(f"{path}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds"))
            for key, allowed in (("failurePolicy", ("Fail", "Ignore")), ("matchPolicy", ("Equivalent", "Exact"))):
                if hook.get(key) is not None and hook[key] not in allowed:
                    out.append(_unsupported(f"{path}.{key}", hook[key], allowed))
            if mutating and hook.get("reinvocationPolicy") not in (None, "Never", "IfNeeded"):
                out.append(_unsupported(f"{path}.reinvocationPolicy", hook["reinvocationPolicy"], ("Never", "IfNeeded")))
            _client_config(f"{path}.clientConfig", hook.get("clientConfig"), out)
            for j, rule in enumerate(hook.get("rules") or []):
                _rule(f"{path}.rules[{j}]", rule, out)
            _selector(f"{path}.namespaceSelector", hook.get("namespaceSelector"), out)
            _selector(f"{path}.objectSelector", hook.get("objectSelector"), out)
            _match_conditions(f"{path}.matchConditions", hook.get("matchConditions"), out)
        return out
    return check


def _match_conditions(path: str, conditions: Any, out: list[Cause]) -> None:
    seen: set[str] = set()
    for i, cond in enumerate(conditions or []):
        cond = cond if isinstance(cond, dict) else {}
        name = cond.get("name")
        if not name:
            out.append(_required(f"{path}[{i}].name"))
        elif name in seen:
            out.append(Cause(f"{path}[{i}].name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
        seen.add(str(name))
        _expression(f"{path}[{i}].expression", cond.get("expression"), out, variables=cel.ADMISSION_VARIABLES)


def _expression(path: str, text: Any, out: list[Cause], *, variables: frozenset[str]) -> None:
    if not text:
        out.append(_required(path))
        return
    problem = cel.compile_error(str(text), variables=variables)
    if problem:
        out.append(_invalid(path, text, f"compilation failed: {problem}"))


def _match_resources(path: str, match: Any, out: list[Cause], *, required: bool) -> None:
    if not isinstance(match, dict):
        if required:
            out.append(_required(path))
        return
    if required and not match.get("resourceRules"):
        out.append(_required(f"{path}.resourceRules"))
    for key in ("resourceRules", "excludeResourceRules"):
        for j, rule in enumerate(match.get(key) or []):
            _rule(f"{path}.{key}[{j}]", rule, out)
    if match.get("matchPolicy") not in (None, "Equivalent", "Exact"):
        out.append(_unsupported(f"{path}.matchPolicy", match["matchPolicy"], ("Equivalent", "Exact")))
    _selector(f"{path}.namespaceSelector", match.get("namespaceSelector"), out)
    _selector(f"{path}.objectSelector", match.get("objectSelector"), out)


def _policy(obj: JSON, old: JSON | None) -> list[Cause]:
    out: list[Cause] = []
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    variables = cel.ADMISSION_VARIABLES | ({"params"} if spec.get("paramKind") else frozenset())
    names = [str(v.get("name")) for v in spec.get("variables") or [] if isinstance(v, dict)]
    variables = variables | {"variables"} if names else variables
    if spec.get("failurePolicy") not in (None, "Fail", "Ignore"):
        out.append(_unsupported("spec.failurePolicy", spec["failurePolicy"], ("Fail", "Ignore")))
    kind = spec.get("paramKind")
    if kind is not None and (not isinstance(kind, dict) or not kind.get("kind") or not kind.get("apiVersion")):
        out.append(_required("spec.paramKind.kind" if isinstance(kind, dict) and not kind.get("kind") else "spec.paramKind.apiVersion"))
    _match_resources("spec.matchConstraints", spec.get("matchConstraints"), out, required=True)
    validations = spec.get("validations") or []
    if not validations and not spec.get("auditAnnotations"):
        out.append(_required("spec.validations", "validations or auditAnnotations must contain at least one item"))
    for i, v in enumerate(validations):
        v = v if isinstance(v, dict) else {}
        _expression(f"spec.validations[{i}].expression", v.get("expression"), out, variables=variables)
        if v.get("messageExpression"):
            _expression(f"spec.validations[{i}].messageExpression", v["messageExpression"], out, variables=variables)
        if v.get("reason") not in (None, "Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"):
            out.append(_unsupported(f"spec.validations[{i}].reason", v["reason"],
                                    ("Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge")))
    for i, var in enumerate(spec.get("variables") or []):
        var = var if isinstance(var, dict) else {}
        _expression(f"spec.variables[{i}].expression", var.get("expression"), out, variables=variables)
    for i, ann in enumerate(spec.get("auditAnnotations") or []):
        ann = ann if isinstance(ann, dict) else {}
        _expression(f"spec.auditAnnotations[{i}].valueExpression", ann.get("valueExpression"), out, variables=variables)
    _match_conditions("spec.matchConditions", spec.get("matchConditions"), out)
    return out


_ACTIONS = ("Deny", "Warn", "Audit")


def _binding(obj: JSON, old: JSON | None) -> list[Cause]:
    out: list[Cause] = []
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if not spec.get("policyName"):
        out.append(_required("spec.policyName"))
    actions = spec.get("validationActions") or []
    if not actions:
        out.append(_required("spec.validationActions"))
    for i, action in enumerate(actions):
        if action not in _ACTIONS:
            out.append(_unsupported(f"spec.validationActions[{i}]", action, _ACTIONS))
    if "Deny" in actions and "Warn" in actions:
        out.append(_invalid("spec.validationActions", actions, "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)"))
    ref = spec.get("paramRef")
    if isinstance(ref, dict):
        if ref.get("name") and ref.get("selector"):
            out.append(Cause("spec.paramRef.name", "Forbidden: name and selector are mutually exclusive", "FieldValueForbidden"))
        if not ref.get("name") and ref.get("selector") is None:
            out.append(_required("spec.paramRef", "one of name or selector must be specified"))
        if ref.get("parameterNotFoundAction") not in (None, "Allow", "Deny"):
            out.append(_unsupported("spec.paramRef.parameterNotFoundAction", ref["parameterNotFoundAction"], ("Allow", "Deny")))
    _match_resources("spec.matchResources", spec.get("matchResources"), out, required=False)
    return out


VALIDATORS: Mapping[str, Callable[[JSON, JSON | None], list[Cause]]] = {
    f"ValidatingWebhookConfiguration.{GROUP}": _webhook_configuration(False),
    f"MutatingWebhookConfiguration.{GROUP}": _webhook_configuration(True),
    f"ValidatingAdmissionPolicy.{GROUP}": _policy,
    f"ValidatingAdmissionPolicyBinding.{GROUP}": _binding,
}
