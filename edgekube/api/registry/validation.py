"""Validation, as upstream's validation packages check the kinds edgekube serves.

`validate(gk, obj, old=..., namespaced=...)` returns the list of causes (empty when valid); the
registry turns a non-empty list into a 422 Invalid whose causes name each field, with upstream's
wording (`Required value`, `Invalid value: ...`, `Unsupported value: ...`, `Forbidden: ...`).
Runs after defaults, so required-with-default fields are always present here.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgekube.api import labels as labels_mod
from edgekube.api import quantity
from edgekube.api.errors import Cause
from edgekube.api.registry import admissionconfig, crds, defaults

JSON = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PERCENT = re.compile(r"^[0-9]+%$")
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
_MAX_ANNOTATIONS = 256 * 1024
_MAX_DATA = 1024 * 1024

_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


class _Errs:
    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def required(self, field: str, detail: str = "") -> None:
        self.causes.append(Cause(field, "Required value" + (f": {detail}" if detail else ""), "FieldValueRequired"))

    def invalid(self, field: str, value: Any, detail: str) -> None:
        self.causes.append(Cause(field, f"Invalid value: {_show(value)}: {detail}", "FieldValueInvalid"))

    def unsupported(self, field: str, value: Any, allowed: Sequence[str]) -> None:
        listed = ", ".join(f'"{a}"' for a in allowed)
        self.causes.append(Cause(field, f"Unsupported value: {_show(value)}: supported values: {listed}", "FieldValueNotSupported"))

    def duplicate(self, field: str, value: Any) -> None:
        self.causes.append(Cause(field, f"Duplicate value: {_show(value)}", "FieldValueDuplicate"))

    def forbidden(self, field: str, detail: str) -> None:
        self.causes.append(Cause(field, f"Forbidden: {detail}", "FieldValueForbidden"))

    def too_long(self, field: str, limit: int) -> None:
        self.causes.append(Cause(field, f"Too long: must have at most {limit} bytes", "FieldValueTooLong"))


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- shared checks -------------------------------------------------------------------------


def _name_check(kind: str) -> Callable[[str], str | None]:
    if kind == "dns1123label":
        return lambda n: None if len(n) <= 63 and _DNS1123_LABEL.match(n) else _DNS1123_LABEL_MSG
    if kind == "dns1035label":
        return lambda n: None if len(n) <= 63 and _DNS1035_LABEL.match(n) else _DNS1035_LABEL_MSG
    if kind == "path":
        return lambda n: None if n not in (".", "..") and "/" not in n and "%" not in n else "may not contain '/' or '%' and may not be '.' or '..'"
    return lambda n: None if len(n) <= 253 and _DNS1123_SUBDOMAIN.match(n) else _DNS1123_SUBDOMAIN_MSG


_NAME_RULES: dict[str, str] = {
    "Namespace": "dns1123label",
    "Service": "dns1035label",
    "ClusterRole.rbac.authorization.k8s.io": "path",
    "ClusterRoleBinding.rbac.authorization.k8s.io": "path",
    "Role.rbac.authorization.k8s.io": "path",
    "RoleBinding.rbac.authorization.k8s.io": "path",
    "APIService.apiregistration.k8s.io": "path",
}


def _metadata(e: _Errs, gk: str, obj: JSON, *, namespaced: bool, old: JSON | None) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    check = _name_check(_NAME_RULES.get(gk, "dns1123subdomain"))
    if not name:
        e.required("metadata.name", "name or generateName is required")
    elif (msg := check(name)) is not None:
        e.invalid("metadata.name", name, msg)
    if namespaced:
        ns = meta.get("namespace") or ""
        if not ns:
            e.required("metadata.namespace")
        elif not (len(ns) <= 63 and _DNS1123_LABEL.match(ns)):
            e.invalid("metadata.namespace", ns, _DNS1123_LABEL_MSG)
    _labels(e, "metadata.labels", meta.get("labels"))
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            e.invalid("metadata.annotations", "", "must be a map of string keys to string values")
        else:
            total = 0
            for k, v in annotations.items():
                if (msg := labels_mod.validate_key(str(k))) is not None:
                    e.invalid("metadata.annotations", k, msg)
                if not isinstance(v, str):
                    e.invalid(f"metadata.annotations[{k}]", v, "must be a string")
                    continue
                total += len(str(k)) + len(v)
            if total > _MAX_ANNOTATIONS:
                e.too_long("metadata.annotations", _MAX_ANNOTATIONS)
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list):
            e.invalid("metadata.finalizers", "", "must be a list of strings")
        else:
            for i, f in enumerate(finalizers):
                if not isinstance(f, str) or (labels_mod.validate_key(f) is not None):
                    e.invalid(f"metadata.finalizers[{i}]", f, "must be a qualified name")
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        if not isinstance(ref, dict):
            e.invalid(f"metadata.ownerReferences[{i}]", "", "must be an object")
            continue
        for k in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(k):
                e.required(f"metadata.ownerReferences[{i}].{k}")
    controllers = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict) and r.get("controller")]
    if len(controllers) > 1:
        e.invalid("metadata.ownerReferences", "", "Only one reference can have Controller set to true")


def _labels(e: _Errs, field: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        e.invalid(field, "", "must be a map of string keys to string values")
        return
    for k, v in value.items():
        if (msg := labels_mod.validate_key(str(k))) is not None:
            e.invalid(field, k, msg)
        if not isinstance(v, str):
            e.invalid(f"{field}[{k}]", v, "must be a string")
        elif (msg := labels_mod.validate_value(v)) is not None:
            e.invalid(field, v, msg)


def _nonneg_int(e: _Errs, field: str, value: Any, *, positive: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        e.invalid(field, value, "must be an integer")
    elif positive and value <= 0:
        e.invalid(field, value, "must be greater than zero")
    elif value < 0:
        e.invalid(field, value, "must be greater than or equal to 0")


def _port_number(e: _Errs, field: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        e.invalid(field, value, "must be between 1 and 65535, inclusive")


def _int_or_percent(e: _Errs, field: str, value: Any) -> int | None:
    """Validate an IntOrString that is a count or a percentage; returns it as a plain int-ish."""
    if isinstance(value, bool):
        e.invalid(field, value, "must be an integer or percentage (e.g '5%')")
        return None
    if isinstance(value, int):
        if value < 0:
            e.invalid(field, value, "must be greater than or equal to 0")
            return None
        return value
    if isinstance(value, str):
        if not _PERCENT.match(value):
            e.invalid(field, value, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
            return None
        pct = int(value[:-1])
        if pct > 100:
            e.invalid(field, value, "must not be greater than 100%")
            return None
        return pct
    e.invalid(field, value, "must be an integer or percentage (e.g '5%')")
    return None


def _resources(e: _Errs, field: str, res: Any) -> None:
    if not isinstance(res, dict):
        return
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("limits", "requests"):
        values = res.get(part) or {}
        if not isinstance(values, dict):
            e.invalid(f"{field}.{part}", "", "must be a map of resource names to quantities")
            continue
        parsed[part] = {}
        for rname, q in values.items():
            try:
                parsed[part][rname] = quantity.parse(q)
            except quantity.QuantityError as exc:
                e.invalid(f"{field}.{part}[{rname}]", q, str(exc))
                continue
            if parsed[part][rname] < 0:
                e.invalid(f"{field}.{part}[{rname}]", q, "must be greater than or equal to 0")
    for rname, req in parsed.get("requests", {}).items():
        lim = parsed.get("limits", {}).get(rname)
        if lim is not None and req > lim:
            e.invalid(f"{field}.requests", str(res["requests"][rname]), f"must be less than or equal to {rname} limit of {res['limits'][rname]}")


# --- pods ----------------------------------------------------------------------------------


def _unique_label(e: _Errs, field: str, name: Any, seen: set[str]) -> None:
    """A required DNS-1123 label, unique among `seen` (container and volume names)."""
    if not name:
        e.required(field)
    elif not isinstance(name, str) or not (len(name) <= 63 and _DNS1123_LABEL.match(name)):
        e.invalid(field, name, _DNS1123_LABEL_MSG)
    elif name in seen:
        e.duplicate(field, name)
    else:
        seen.add(name)


def _container(e: _Errs, field: str, c: Any, *, volumes: set[str], names: set[str], init: bool,
               grace: Any = None) -> None:
    """`grace`: the pod's terminationGracePeriodSeconds (a sleep hook may not outlast it)."""
    if not isinstance(c, dict):
        e.invalid(field, "", "must be an object")
        return
    _unique_label(e, f"{field}.name", c.get("name"), names)
    if not c.get("image"):
        e.required(f"{field}.image")
    policy = c.get("imagePullPolicy")
    if policy not in ("Always", "IfNotPresent", "Never"):
        e.unsupported(f"{field}.imagePullPolicy", policy, ["Always", "IfNotPresent", "Never"])
    if c.get("terminationMessagePolicy") not in ("File", "FallbackToLogsOnError"):
        e.unsupported(f"{field}.terminationMessagePolicy", c.get("terminationMessagePolicy"), ["File", "FallbackToLogsOnError"])
    port_names: set[str] = set()
    for i, p in enumerate(c.get("ports") or []):
        pf = f"{field}.ports[{i}]"
        if not isinstance(p, dict):
            e.invalid(pf, "", "must be an object")
            continue
        if p.get("containerPort") is None:
            e.required(f"{pf}.containerPort")
        else:
            _port_number(e, f"{pf}.containerPort", p.get("containerPort"))
        if p.get("hostPort") not in (None, 0):
            _port_number(e, f"{pf}.hostPort", p.get("hostPort"))
        if p.get("protocol") not in _PORT_PROTOCOLS:
            e.unsupported(f"{pf}.protocol", p.get("protocol"), _PORT_PROTOCOLS)
        pname = p.get("name")
        if pname:
            if not (len(pname) <= 15 and _IANA_SVC_NAME.match(pname) and re.search("[a-z]", pname) and "--" not in pname):
                e.invalid(f"{pf}.name", pname, "must be no more than 15 characters, contain only lowercase alphanumerics and '-', and at least one letter")
            elif pname in port_names:
                e.duplicate(f"{pf}.name", pname)
            else:
                port_names.add(pname)
    for i, env in enumerate(c.get("env") or []):
        ef = f"{field}.env[{i}]"
        if not isinstance(env, dict):
            e.invalid(ef, "", "must be an object")
            continue
        ename = env.get("name")
        if not ename:
            e.required(f"{ef}.name")
        elif "=" in ename or not ename.isprintable():
            e.invalid(f"{ef}.name", ename, "a valid environment variable name must consist only of printable ASCII characters other than '='")
        if env.get("value") is not None and env.get("valueFrom") is not None:
            e.invalid(f"{ef}.valueFrom", "", "may not be specified when `value` is not empty")
    for i, m in enumerate(c.get("volumeMounts") or []):
        mf = f"{field}.volumeMounts[{i}]"
        if not isinstance(m, dict):
            e.invalid(mf, "", "must be an object")
            continue
        if not m.get("name"):
            e.required(f"{mf}.name")
        elif m["name"] not in volumes:
            e.causes.append(Cause(f"{mf}.name", f"Not found: {_show(m['name'])}", "FieldValueNotFound"))
        if not m.get("mountPath"):
            e.required(f"{mf}.mountPath")
    _resources(e, f"{field}.resources", c.get("resources"))
    restartable = not init or c.get("restartPolicy") == "Always"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if p is None:
            continue
        if not restartable:
            e.forbidden(f"{field}.{probe}", "may not be set for init containers without restartPolicy=Always")
            continue
        _probe(e, f"{field}.{probe}", p, readiness=probe == "readinessProbe")
        if probe in ("livenessProbe", "startupProbe") and isinstance(p, dict) and p.get("successThreshold", 1) != 1:
            e.invalid(f"{field}.{probe}.successThreshold", p.get("successThreshold"), "must be 1")
    hooks = c.get("lifecycle")
    if hooks is not None and not restartable:
        e.forbidden(f"{field}.lifecycle", "may not be set for init containers without restartPolicy=Always")
    elif isinstance(hooks, dict):
        for hook in ("postStart", "preStop"):
            if hooks.get(hook) is not None:
                _handler(e, f"{field}.lifecycle.{hook}", hooks[hook], ("exec", "httpGet", "tcpSocket", "sleep"), grace=grace)


_HTTP_HEADER_NAME = re.compile(r"^[-A-Za-z0-9]+$")


def _port_num_or_name(e: _Errs, field: str, port: Any) -> None:
    if not isinstance(port, str):
        _port_number(e, field, port)
    elif not (len(port) <= 15 and _IANA_SVC_NAME.match(port) and re.search("[a-z]", port) and "--" not in port):
        e.invalid(field, port, "must be no more than 15 characters, contain only lowercase alphanumerics and '-', and at least one letter")


def _handler(e: _Errs, field: str, h: Any, kinds: Sequence[str], *, grace: Any = None) -> None:
    """A probe's or a lifecycle hook's action (upstream's validateHandler): exactly one kind."""
    if not isinstance(h, dict):
        e.invalid(field, "", "must be an object")
        return
    given = [k for k in kinds if h.get(k) is not None]
    if not given:
        e.required(field, "must specify a handler type")
        return
    for extra in given[1:]:
        e.forbidden(f"{field}.{extra}", "may not specify more than 1 handler type")
    kind, action = given[0], h[given[0]]
    af = f"{field}.{kind}"
    if not isinstance(action, dict):
        e.invalid(af, "", "must be an object")
    elif kind == "exec":
        if not action.get("command"):
            e.required(f"{af}.command")
    elif kind == "httpGet":
        if not action.get("path"):
            e.required(f"{af}.path")
        _port_num_or_name(e, f"{af}.port", action.get("port"))
        if action.get("scheme", "HTTP") not in ("HTTP", "HTTPS"):
            e.unsupported(f"{af}.scheme", action.get("scheme"), ["HTTP", "HTTPS"])
        for i, header in enumerate(action.get("httpHeaders") or []):
            name = header.get("name") if isinstance(header, dict) else None
            if not isinstance(name, str) or not _HTTP_HEADER_NAME.match(name):
                e.invalid(f"{af}.httpHeaders[{i}].name", name, "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')")
    elif kind == "tcpSocket":
        _port_num_or_name(e, f"{af}.port", action.get("port"))
    elif kind == "grpc":
        _port_number(e, f"{af}.port", action.get("port"))
    elif kind == "sleep":
        seconds = action.get("seconds")
        if isinstance(grace, int) and not (isinstance(seconds, int) and 0 < seconds <= grace):
            e.invalid(af, seconds, f"must be greater than 0 and less than terminationGracePeriodSeconds ({grace})")


def _probe(e: _Errs, field: str, p: Any, *, readiness: bool) -> None:
    """Upstream's validateProbe (and validateReadinessProbe)."""
    _handler(e, field, p, ("exec", "httpGet", "tcpSocket", "grpc"))
    if not isinstance(p, dict):
        return
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        _nonneg_int(e, f"{field}.{key}", p.get(key))
    grace = p.get("terminationGracePeriodSeconds")
    if grace is not None and readiness:
        e.invalid(f"{field}.terminationGracePeriodSeconds", grace, "must not be set for readinessProbes")
    elif grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace <= 0):
        e.invalid(f"{field}.terminationGracePeriodSeconds", grace, "must be greater than 0")


_VOLUME_SOURCES = (
    "emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim", "downwardAPI", "projected",
    "nfs", "iscsi", "csi", "ephemeral", "image", "local",
)


def pod_spec(e: _Errs, field: str, spec: Any, *, template: bool = False, allowed_restart: Sequence[str] = ("Always", "OnFailure", "Never"),
             claim_volumes: Sequence[str] = ()) -> None:
    """`claim_volumes`: names a StatefulSet's volumeClaimTemplates add to its pods, which mounts may use."""
    if not isinstance(spec, dict):
        e.required(field)
        return
    volumes: set[str] = set()
    for i, v in enumerate(spec.get("volumes") or []):
        vf = f"{field}.volumes[{i}]"
        if not isinstance(v, dict):
            e.invalid(vf, "", "must be an object")
            continue
        _unique_label(e, f"{vf}.name", v.get("name"), volumes)
        sources = [s for s in _VOLUME_SOURCES if v.get(s) is not None]
        if len(sources) > 1:
            e.forbidden(f"{vf}.{sources[1]}", "may not specify more than 1 volume type")
        for s in ("configMap", "secret"):
            src = v.get(s)
            if isinstance(src, dict):
                mode = src.get("defaultMode")
                if mode is not None and (not isinstance(mode, int) or not 0 <= mode <= 0o777):
                    e.invalid(f"{vf}.{s}.defaultMode", mode, "must be a number between 0 and 0777 (octal), both inclusive")
        pvc = v.get("persistentVolumeClaim")
        if isinstance(pvc, dict) and not pvc.get("claimName"):
            e.required(f"{vf}.persistentVolumeClaim.claimName")
        hp = v.get("hostPath")
        if isinstance(hp, dict) and not hp.get("path"):
            e.required(f"{vf}.hostPath.path")
    containers = spec.get("containers")
    names: set[str] = set()
    if not containers:
        e.required(f"{field}.containers")
    elif not isinstance(containers, list):
        e.invalid(f"{field}.containers", "", "must be a list")
    else:
        for i, c in enumerate(containers):
            _container(e, f"{field}.containers[{i}]", c, volumes=volumes | set(claim_volumes), names=names, init=False,
                       grace=spec.get("terminationGracePeriodSeconds"))
    for i, c in enumerate(spec.get("initContainers") or []):
        _container(e, f"{field}.initContainers[{i}]", c, volumes=volumes | set(claim_volumes), names=names, init=True,
                   grace=spec.get("terminationGracePeriodSeconds"))
    restart = spec.get("restartPolicy")
    if restart not in allowed_restart:
        e.unsupported(f"{field}.restartPolicy", restart, allowed_restart)
    dns = spec.get("dnsPolicy")
    if dns not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        e.unsupported(f"{field}.dnsPolicy", dns, ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"])
    if dns == "None" and not (spec.get("dnsConfig") or {}).get("nameservers"):
        e.required(f"{field}.dnsConfig.nameservers", "must provide at least one DNS nameserver when DNSPolicy is set to None")
    _nonneg_int(e, f"{field}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
    _nonneg_int(e, f"{field}.activeDeadlineSeconds", spec.get("activeDeadlineSeconds"), positive=True)
    if spec.get("nodeSelector") is not None:
        _labels(e, f"{field}.nodeSelector", spec.get("nodeSelector"))
    for i, t in enumerate(spec.get("tolerations") or []):
        tf = f"{field}.tolerations[{i}]"
        if not isinstance(t, dict):
            e.invalid(tf, "", "must be an object")
            continue
        op = t.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            e.unsupported(f"{tf}.operator", op, ["Equal", "Exists"])
        if op == "Exists" and t.get("value"):
            e.invalid(f"{tf}.operator", t.get("value"), "value must be empty when `operator` is 'Exists'")
        if not t.get("key") and op != "Exists":
            e.invalid(f"{tf}.operator", op, "operator must be Exists when `key` is empty, which means \"match all values and all keys\"")
        effect = t.get("effect")
        if effect not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            e.unsupported(f"{tf}.effect", effect, ["NoSchedule", "PreferNoSchedule", "NoExecute"])
    hostname = spec.get("hostname")
    if hostname and not (len(hostname) <= 63 and _DNS1123_LABEL.match(hostname)):
        e.invalid(f"{field}.hostname", hostname, _DNS1123_LABEL_MSG)


def _pod(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec")
    pod_spec(e, "spec", spec)
    if old is None or not isinstance(spec, dict):
        return
    _mirror_annotation(e, obj, old)
    # Pod updates may change only images, activeDeadlineSeconds and add tolerations.
    ospec = old.get("spec") or {}

    def mutable_view(s: Mapping[str, Any]) -> JSON:
        view = dict(s)
        for key in ("containers", "initContainers"):
            view[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in s.get(key) or []]
        view.pop("activeDeadlineSeconds", None)
        view.pop("tolerations", None)
        return view

    if mutable_view(spec) != mutable_view(ospec):
        e.forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)",
        )
    old_tol = ospec.get("tolerations") or []
    new_tol = spec.get("tolerations") or []
    if any(t not in new_tol for t in old_tol):
        e.forbidden("spec.tolerations", "existing toleration can not be modified except its tolerationSeconds")


def _mirror_annotation(e: _Errs, obj: JSON, old: JSON) -> None:
    """A pod does not become a mirror pod, nor stop being one (upstream's
    ValidatePodSpecificAnnotationUpdates): its kubelet would stop running it, or run a copy."""
    key = defaults.MIRROR_POD_ANNOTATION
    new_value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    old_value = ((old.get("metadata") or {}).get("annotations") or {}).get(key)
    if old_value is not None and new_value != old_value:
        e.forbidden(f"metadata.annotations[{key}]", "may not remove or update mirror pod annotation")
    elif old_value is None and new_value is not None:
        e.forbidden(f"metadata.annotations[{key}]", "may not add mirror pod annotation")


# --- workloads -----------------------------------------------------------------------------


def _selector(e: _Errs, field: str, selector: Any, template_labels: Any) -> None:
    if not isinstance(selector, dict):
        e.required(field)
        return
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        e.invalid(field, "", "empty selector is invalid for deployment")
        return
    try:
        sel = labels_mod.from_label_selector(selector)
    except labels_mod.SelectorError as exc:
        e.invalid(field, "", str(exc))
        return
    if not sel.matches(template_labels if isinstance(template_labels, dict) else {}):
        e.invalid("spec.template.metadata.labels", template_labels or {}, "`selector` does not match template `labels`")


def _template(e: _Errs, spec: JSON, *, allowed_restart: Sequence[str] = ("Always",), claim_volumes: Sequence[str] = ()) -> JSON:
    template = spec.get("template")
    if not isinstance(template, dict):
        e.required("spec.template")
        return {}
    tmeta = template.get("metadata") or {}
    _labels(e, "spec.template.metadata.labels", tmeta.get("labels"))
    pod_spec(e, "spec.template.spec", template.get("spec"), template=True, allowed_restart=allowed_restart,
             claim_volumes=claim_volumes)
    return tmeta


def _replicas(e: _Errs, spec: JSON) -> None:
    _nonneg_int(e, "spec.replicas", spec.get("replicas"))
    _nonneg_int(e, "spec.minReadySeconds", spec.get("minReadySeconds"))
    _nonneg_int(e, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))


def _immutable(e: _Errs, field: str, new: Any, old: Any) -> None:
    if new != old:
        e.invalid(field, new if not isinstance(new, dict | list) else "", "field is immutable")


def _deployment(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _replicas(e, spec)
    tmeta = _template(e, spec)
    _selector(e, "spec.selector", spec.get("selector"), tmeta.get("labels"))
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type")
    if stype not in ("Recreate", "RollingUpdate"):
        e.unsupported("spec.strategy.type", stype, ["Recreate", "RollingUpdate"])
    elif stype == "Recreate" and strategy.get("rollingUpdate") is not None:
        e.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
    elif stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        mu = _int_or_percent(e, "spec.strategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable"))
        ms = _int_or_percent(e, "spec.strategy.rollingUpdate.maxSurge", ru.get("maxSurge"))
        if mu == 0 and ms == 0:
            e.invalid("spec.strategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable"), "may not be 0 when `maxSurge` is 0")
    pds = spec.get("progressDeadlineSeconds")
    _nonneg_int(e, "spec.progressDeadlineSeconds", pds)
    mrs = spec.get("minReadySeconds") or 0
    if isinstance(pds, int) and isinstance(mrs, int) and pds <= mrs:
        e.invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds")
    if old is not None:
        _immutable(e, "spec.selector", spec.get("selector"), (old.get("spec") or {}).get("selector"))


def _replicaset(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _replicas(e, spec)
    tmeta = _template(e, spec)
    _selector(e, "spec.selector", spec.get("selector"), tmeta.get("labels"))
    if old is not None:
        _immutable(e, "spec.selector", spec.get("selector"), (old.get("spec") or {}).get("selector"))


def _replicationcontroller(e: _Errs, obj: JSON, old: JSON | None) -> None:
    """Upstream's ValidateReplicationControllerSpec: a map selector, not empty, that the template's
    labels match; restartPolicy Always and no activeDeadlineSeconds. The selector may change."""
    spec = obj.get("spec") or {}
    _nonneg_int(e, "spec.minReadySeconds", spec.get("minReadySeconds"))
    selector = spec.get("selector")
    if selector is not None and not isinstance(selector, dict):
        e.invalid("spec.selector", "", "must be a map of string keys to string values")
        selector = {}
    _labels(e, "spec.selector", selector)
    if not selector:
        e.required("spec.selector")
    _nonneg_int(e, "spec.replicas", spec.get("replicas"))
    if not isinstance(spec.get("template"), dict):
        e.required("spec.template")
        return
    tmeta = _template(e, spec)
    tlabels = tmeta.get("labels")
    if not isinstance(tlabels, dict):
        tlabels = {}
    if selector and any(tlabels.get(k) != v for k, v in selector.items()):
        e.invalid("spec.template.metadata.labels", tlabels, "`selector` does not match template `labels`")
    if (spec["template"].get("spec") or {}).get("activeDeadlineSeconds") is not None:
        e.forbidden("spec.template.spec.activeDeadlineSeconds", "activeDeadlineSeconds in ReplicationController is not Supported")


def _daemonset(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _nonneg_int(e, "spec.minReadySeconds", spec.get("minReadySeconds"))
    _nonneg_int(e, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    tmeta = _template(e, spec)
    _selector(e, "spec.selector", spec.get("selector"), tmeta.get("labels"))
    strategy = spec.get("updateStrategy") or {}
    stype = strategy.get("type")
    if stype not in ("OnDelete", "RollingUpdate"):
        e.unsupported("spec.updateStrategy.type", stype, ["OnDelete", "RollingUpdate"])
    elif stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        mu = _int_or_percent(e, "spec.updateStrategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable", 1))
        ms = _int_or_percent(e, "spec.updateStrategy.rollingUpdate.maxSurge", ru.get("maxSurge", 0))
        if mu == 0 and ms == 0:
            e.invalid("spec.updateStrategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable"), "may not be 0 when `maxSurge` is 0")
    if old is not None:
        _immutable(e, "spec.selector", spec.get("selector"), (old.get("spec") or {}).get("selector"))


def _statefulset(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _replicas(e, spec)
    claims = [str((t.get("metadata") or {}).get("name")) for t in spec.get("volumeClaimTemplates") or []
              if isinstance(t, dict)]
    tmeta = _template(e, spec, claim_volumes=claims)
    _selector(e, "spec.selector", spec.get("selector"), tmeta.get("labels"))
    if spec.get("podManagementPolicy") not in ("OrderedReady", "Parallel"):
        e.unsupported("spec.podManagementPolicy", spec.get("podManagementPolicy"), ["OrderedReady", "Parallel"])
    stype = (spec.get("updateStrategy") or {}).get("type")
    if stype not in ("OnDelete", "RollingUpdate"):
        e.unsupported("spec.updateStrategy.type", stype, ["OnDelete", "RollingUpdate"])
    if old is not None:
        ospec = old.get("spec") or {}
        allowed = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds", "revisionHistoryLimit")
        if {k: v for k, v in spec.items() if k not in allowed} != {k: v for k, v in ospec.items() if k not in allowed}:
            e.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', "
                "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            )


def _job_spec(e: _Errs, spec: JSON, *, prefix: str = "spec") -> None:
    for k in ("parallelism", "completions", "backoffLimit"):
        _nonneg_int(e, f"{prefix}.{k}", spec.get(k))
    _nonneg_int(e, f"{prefix}.activeDeadlineSeconds", spec.get("activeDeadlineSeconds"), positive=True)
    _nonneg_int(e, f"{prefix}.ttlSecondsAfterFinished", spec.get("ttlSecondsAfterFinished"))
    if spec.get("completionMode") not in ("NonIndexed", "Indexed"):
        e.unsupported(f"{prefix}.completionMode", spec.get("completionMode"), ["NonIndexed", "Indexed"])
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        e.required(f"{prefix}.completions", "when completion mode is Indexed")
    template = spec.get("template")
    if not isinstance(template, dict):
        e.required(f"{prefix}.template")
        return
    tmeta = template.get("metadata") or {}
    _labels(e, f"{prefix}.template.metadata.labels", tmeta.get("labels"))
    pod_spec(e, f"{prefix}.template.spec", template.get("spec"), template=True, allowed_restart=("OnFailure", "Never"))


def _job(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _job_spec(e, spec)
    selector = spec.get("selector")
    tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    if selector is None:
        e.required("spec.selector")
    else:
        try:
            sel = labels_mod.from_label_selector(selector)
            if not sel.matches(tlabels or {}):
                e.invalid("spec.template.metadata.labels", tlabels or {}, "`selector` does not match template `labels`")
        except labels_mod.SelectorError as exc:
            e.invalid("spec.selector", "", str(exc))
    if old is not None:
        ospec = old.get("spec") or {}
        _immutable(e, "spec.selector", selector, ospec.get("selector"))
        _immutable(e, "spec.completionMode", spec.get("completionMode"), ospec.get("completionMode"))
        if spec.get("completions") != ospec.get("completions") and spec.get("completionMode") != "Indexed":
            e.invalid("spec.completions", spec.get("completions"), "field is immutable")
        # The template may change only while the job is suspended (upstream allows a few fields).
        if spec.get("template") != ospec.get("template") and not ospec.get("suspend"):
            e.invalid("spec.template", "", "field is immutable")


_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))},
    {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
)


def cron_error(schedule: str) -> str | None:
    """None when `schedule` is a standard 5-field cron expression or a macro."""
    text = schedule.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        _, _, text = text.partition(" ")
    if text in _CRON_MACROS or text.startswith("@every "):
        return None
    fields = text.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: {schedule}"
    for i, f in enumerate(fields):
        lo, hi = _CRON_RANGES[i]
        names = _CRON_NAMES[i]
        for part in f.split(","):
            rng, _, step = part.partition("/")
            if step and not step.isdigit():
                return f"failed to parse int from {step}"
            if rng in ("*", "?"):
                continue
            for bound in rng.split("-", 1):
                value = names.get(bound.lower()) if bound.lower() in names else (int(bound) if bound.isdigit() else None)
                if value is None:
                    return f"failed to parse int from {bound}"
                if not lo <= value <= hi:
                    return f"end of range ({value}) above maximum ({hi}): {f}" if value > hi else f"beginning of range ({value}) below minimum ({lo}): {f}"
    return None


def _known_zone(name: str) -> bool:
    if not name or name.startswith(("/", ".")) or ".." in name or " " in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _cronjob(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    schedule = spec.get("schedule")
    if not schedule:
        e.required("spec.schedule")
    elif not isinstance(schedule, str):
        e.invalid("spec.schedule", schedule, "must be a string")
    elif (msg := cron_error(schedule)) is not None:
        e.invalid("spec.schedule", schedule, msg)
    elif schedule.lstrip().startswith(("TZ=", "CRON_TZ=")) and old is None:
        e.invalid("spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    zone = spec.get("timeZone")
    if zone is not None:
        if not isinstance(zone, str) or not _known_zone(zone):
            e.invalid("spec.timeZone", zone, "unknown time zone " + str(zone))
    if spec.get("concurrencyPolicy") not in ("Allow", "Forbid", "Replace"):
        e.unsupported("spec.concurrencyPolicy", spec.get("concurrencyPolicy"), ["Allow", "Forbid", "Replace"])
    for k in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"):
        _nonneg_int(e, f"spec.{k}", spec.get(k))
    jt = spec.get("jobTemplate")
    if not isinstance(jt, dict):
        e.required("spec.jobTemplate")
        return
    _job_spec(e, jt.get("spec") or {}, prefix="spec.jobTemplate.spec")


# --- core kinds ----------------------------------------------------------------------------


def _service(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    stype = spec.get("type")
    types = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
    if stype not in types:
        e.unsupported("spec.type", stype, types)
        return
    if stype == "ExternalName":
        ext = spec.get("externalName")
        if not ext:
            e.required("spec.externalName")
        elif not _DNS1123_SUBDOMAIN.match(str(ext).rstrip(".").lower()):
            e.invalid("spec.externalName", ext, _DNS1123_SUBDOMAIN_MSG)
        return
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless:
        e.required("spec.ports")
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    for i, p in enumerate(ports):
        pf = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            e.invalid(pf, "", "must be an object")
            continue
        pname = p.get("name") or ""
        if len(ports) > 1 and not pname:
            e.required(f"{pf}.name")
        elif pname:
            if not (len(pname) <= 63 and _DNS1123_LABEL.match(pname)):
                e.invalid(f"{pf}.name", pname, _DNS1123_LABEL_MSG)
            elif pname in names:
                e.duplicate(f"{pf}.name", pname)
            names.add(pname)
        _port_number(e, f"{pf}.port", p.get("port"))
        if p.get("protocol") not in _PORT_PROTOCOLS:
            e.unsupported(f"{pf}.protocol", p.get("protocol"), _PORT_PROTOCOLS)
        key = (p.get("port"), p.get("protocol"))
        if key in seen:
            e.duplicate(f"{pf}", f"{p.get('port')}/{p.get('protocol')}")
        seen.add(key)
        tp = p.get("targetPort")
        if isinstance(tp, int) and not isinstance(tp, bool):
            _port_number(e, f"{pf}.targetPort", tp)
        elif isinstance(tp, str):
            if not (len(tp) <= 15 and _IANA_SVC_NAME.match(tp) and re.search("[a-z]", tp)):
                e.invalid(f"{pf}.targetPort", tp, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-), at most 15 characters")
        np = p.get("nodePort")
        if np not in (None, 0):
            if stype == "ClusterIP":
                e.forbidden(f"{pf}.nodePort", "may not be used when `type` is 'ClusterIP'")
            else:
                _port_number(e, f"{pf}.nodePort", np)
    ip = spec.get("clusterIP")
    if ip not in (None, "", "None"):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            e.invalid("spec.clusterIPs[0]", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    if headless and stype != "ClusterIP":
        e.invalid("spec.clusterIPs[0]", "None", f"may not be set to 'None' for {stype} services")
    if spec.get("sessionAffinity") not in ("None", "ClientIP"):
        e.unsupported("spec.sessionAffinity", spec.get("sessionAffinity"), ["ClientIP", "None"])
    selector = spec.get("selector")
    if selector is not None:
        _labels(e, "spec.selector", selector)
    if old is not None:
        ospec = old.get("spec") or {}
        oip = ospec.get("clusterIP")
        if oip and ip and oip != ip and ospec.get("type") != "ExternalName":
            e.invalid("spec.clusterIPs[0]", ip, "may not change once set")


def _config_data(e: _Errs, obj: JSON, *, secret: bool) -> None:
    total = 0
    seen: set[str] = set()
    for part in ("data", "binaryData") if not secret else ("data",):
        data = obj.get(part)
        if data is None:
            continue
        if not isinstance(data, dict):
            e.invalid(part, "", "must be a map of keys to values")
            continue
        for k, v in data.items():
            if not _CONFIG_KEY.match(str(k)) or len(str(k)) > 253:
                e.invalid(f"{part}[{k}]", k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
            if k in seen:
                e.invalid(f"{part}[{k}]", k, "duplicate of key present in data")
            seen.add(str(k))
            if not isinstance(v, str):
                e.invalid(f"{part}[{k}]", "", "must be a string")
                continue
            if secret or part == "binaryData":
                try:
                    total += len(base64.b64decode(v, validate=True))
                except (binascii.Error, ValueError):
                    e.invalid(f"{part}[{k}]", "<value omitted>", "illegal base64 data")
            else:
                total += len(v.encode())
    if total > _MAX_DATA:
        e.too_long("data", _MAX_DATA)


def _configmap(e: _Errs, obj: JSON, old: JSON | None) -> None:
    _config_data(e, obj, secret=False)
    _immutable_content(e, obj, old, ("data", "binaryData"))


def _immutable_content(e: _Errs, obj: JSON, old: JSON | None, parts: Sequence[str]) -> None:
    if old is None or not old.get("immutable"):
        return
    if not obj.get("immutable"):
        e.forbidden("immutable", "field is immutable when `immutable` is set")
    for part in parts:
        if obj.get(part) != old.get(part):
            e.forbidden(part, "field is immutable when `immutable` is set")


_SECRET_REQUIRED = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/basic-auth": (),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _secret(e: _Errs, obj: JSON, old: JSON | None) -> None:
    _config_data(e, obj, secret=True)
    stype = obj.get("type") or "Opaque"
    data = obj.get("data") or {}
    for key in _SECRET_REQUIRED.get(stype, ()):
        if key not in data:
            e.required(f"data[{key}]")
    if stype == "kubernetes.io/service-account-token":
        if not ((obj.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/service-account.name"):
            e.required("metadata.annotations[kubernetes.io/service-account.name]")
    if old is not None and (old.get("type") or "Opaque") != stype:
        e.invalid("type", stype, "field is immutable")
    _immutable_content(e, obj, old, ("data",))


def _namespace(e: _Errs, obj: JSON, old: JSON | None) -> None:
    for i, f in enumerate((obj.get("spec") or {}).get("finalizers") or []):
        if not isinstance(f, str) or labels_mod.validate_key(f) is not None:
            e.invalid(f"spec.finalizers[{i}]", f, "must be a qualified name")


def _node(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    for i, t in enumerate(spec.get("taints") or []):
        tf = f"spec.taints[{i}]"
        if not isinstance(t, dict) or not t.get("key"):
            e.required(f"{tf}.key")
            continue
        if t.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            e.unsupported(f"{tf}.effect", t.get("effect"), ["NoSchedule", "PreferNoSchedule", "NoExecute"])
    cidr = spec.get("podCIDR")
    if cidr:
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            e.invalid("spec.podCIDR", cidr, "must be a valid CIDR")
    if old is not None:
        ocidr = (old.get("spec") or {}).get("podCIDR")
        if ocidr and cidr != ocidr:
            e.forbidden("spec.podCIDR", "node updates may not change podCIDR except from \"\" to valid")


def _endpoints(e: _Errs, obj: JSON, old: JSON | None) -> None:
    for i, subset in enumerate(obj.get("subsets") or []):
        sf = f"subsets[{i}]"
        if not isinstance(subset, dict):
            e.invalid(sf, "", "must be an object")
            continue
        for part in ("addresses", "notReadyAddresses"):
            for j, a in enumerate(subset.get(part) or []):
                try:
                    ipaddress.ip_address((a or {}).get("ip", ""))
                except ValueError:
                    e.invalid(f"{sf}.{part}[{j}].ip", (a or {}).get("ip"), "must be a valid IP address")
        for j, p in enumerate(subset.get("ports") or []):
            _port_number(e, f"{sf}.ports[{j}].port", (p or {}).get("port"))
            if (p or {}).get("protocol") not in _PORT_PROTOCOLS:
                e.unsupported(f"{sf}.ports[{j}].protocol", (p or {}).get("protocol"), _PORT_PROTOCOLS)


def _endpointslice(e: _Errs, obj: JSON, old: JSON | None) -> None:
    at = obj.get("addressType")
    if at not in ("IPv4", "IPv6", "FQDN"):
        e.unsupported("addressType", at, ["IPv4", "IPv6", "FQDN"])
    for i, ep in enumerate(obj.get("endpoints") or []):
        addrs = (ep or {}).get("addresses") or []
        if not addrs:
            e.required(f"endpoints[{i}].addresses")
    if old is not None and old.get("addressType") != at:
        e.invalid("addressType", at, "field is immutable")


_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def _access_modes(e: _Errs, field: str, modes: Any) -> None:
    if not modes:
        e.required(field, "at least 1 access mode is required")
        return
    for m in modes:
        if m not in _ACCESS_MODES:
            e.unsupported(field, m, _ACCESS_MODES)


def _pvc(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _access_modes(e, "spec.accessModes", spec.get("accessModes"))
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage is None:
        e.required("spec.resources[storage]")
    else:
        _resources(e, "spec.resources", spec.get("resources"))
    if old is not None:
        ospec = old.get("spec") or {}
        for k in ("accessModes", "selector", "storageClassName", "volumeMode", "dataSource"):
            if k in ospec and spec.get(k) != ospec.get(k):
                e.forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims")
                break


def _pv(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _access_modes(e, "spec.accessModes", spec.get("accessModes"))
    if ((spec.get("capacity") or {}).get("storage")) is None:
        e.required("spec.capacity")
    else:
        _resources(e, "spec", {"requests": spec.get("capacity")})
    sources = [s for s in ("hostPath", "local", "nfs", "csi", "iscsi") if spec.get(s) is not None]
    if not sources:
        e.required("spec", "must specify a volume type")
    elif len(sources) > 1:
        e.forbidden(f"spec.{sources[1]}", "may not specify more than 1 volume type")
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy not in ("Retain", "Delete", "Recycle"):
        e.unsupported("spec.persistentVolumeReclaimPolicy", policy, ["Delete", "Recycle", "Retain"])


def _quota(e: _Errs, obj: JSON, old: JSON | None) -> None:
    _resources(e, "spec", {"limits": (obj.get("spec") or {}).get("hard") or {}})


def _limitrange(e: _Errs, obj: JSON, old: JSON | None) -> None:
    for i, item in enumerate((obj.get("spec") or {}).get("limits") or []):
        if not isinstance(item, dict):
            continue
        if item.get("type") not in ("Container", "Pod", "PersistentVolumeClaim"):
            e.unsupported(f"spec.limits[{i}].type", item.get("type"), ["Container", "Pod", "PersistentVolumeClaim"])
        for part in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            _resources(e, f"spec.limits[{i}]", {"limits": item.get(part) or {}})


def _hpa(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    for k in ("kind", "name"):
        if not ref.get(k):
            e.required(f"spec.scaleTargetRef.{k}")
    _nonneg_int(e, "spec.minReplicas", spec.get("minReplicas"), positive=True)
    lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if hi is None:
        e.required("spec.maxReplicas")
    elif not isinstance(hi, int) or hi < 1:
        e.invalid("spec.maxReplicas", hi, "must be greater than 0")
    elif isinstance(lo, int) and hi < lo:
        e.invalid("spec.maxReplicas", hi, "must be greater than or equal to `minReplicas`")


def _lease(e: _Errs, obj: JSON, old: JSON | None) -> None:
    spec = obj.get("spec") or {}
    _nonneg_int(e, "spec.leaseDurationSeconds", spec.get("leaseDurationSeconds"), positive=True)
    _nonneg_int(e, "spec.leaseTransitions", spec.get("leaseTransitions"))


def _controller_revision(e: _Errs, obj: JSON, old: JSON | None) -> None:
    # Upstream's ValidateControllerRevision(Update): the data is mandatory, and never changes.
    if obj.get("data") is None:
        e.required("data", "data is mandatory")
    _nonneg_int(e, "revision", obj.get("revision"))
    if old is not None:
        _immutable(e, "data", obj.get("data"), old.get("data"))


def _event(e: _Errs, obj: JSON, old: JSON | None) -> None:
    inv = obj.get("involvedObject")
    if not isinstance(inv, dict):
        e.required("involvedObject")
        return
    ns = (obj.get("metadata") or {}).get("namespace")
    ins = inv.get("namespace")
    if ins and ns and ins != ns:
        e.invalid("involvedObject.namespace", ins, "does not match event.namespace")
    if obj.get("type") not in (None, "", "Normal", "Warning"):
        e.unsupported("type", obj.get("type"), ["Normal", "Warning"])


# The classes every cluster has (upstream's SystemPriorityClasses); users may not make others
# named system-*, nor values above this.
SYSTEM_PRIORITY_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
HIGHEST_USER_PRIORITY = 1000000000


def _priorityclass(e: _Errs, obj: JSON, old: JSON | None) -> None:
    """Upstream's ValidatePriorityClass(Update): a `system-` name must be one of the system classes
    with its exact value and globalDefault false; value and preemptionPolicy never change."""
    name = (obj.get("metadata") or {}).get("name", "")
    value = obj.get("value")
    if not isinstance(value, int) or isinstance(value, bool):
        e.required("value")
    elif name.startswith("system-"):
        if name not in SYSTEM_PRIORITY_CLASSES:
            why = f"{name} is not a known system priority class"
        elif value != SYSTEM_PRIORITY_CLASSES[name]:
            why = f"value of {name} PriorityClass must be {SYSTEM_PRIORITY_CLASSES[name]}"
        elif obj.get("globalDefault"):
            why = f"globalDefault of {name} PriorityClass must be false"
        else:
            why = ""
        if why:
            e.forbidden("metadata.name", "priority class names with 'system-' prefix are reserved for system use only. "
                        f"error: {why}")
    elif value > HIGHEST_USER_PRIORITY:
        e.forbidden("value", f"maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}")
    if obj.get("preemptionPolicy") not in ("PreemptLowerPriority", "Never"):
        e.unsupported("preemptionPolicy", obj.get("preemptionPolicy"), ["Never", "PreemptLowerPriority"])
    if old is not None:
        if obj.get("value") != old.get("value"):
            e.forbidden("value", "may not be changed in an update.")
        _immutable(e, "preemptionPolicy", obj.get("preemptionPolicy"), old.get("preemptionPolicy"))


def _apiservice(e: _Errs, obj: JSON, old: JSON | None) -> None:
    """kube-aggregator's ValidateAPIService: named `<version>.<group>`, priorities in range, and
    a local entry (no service) carries no TLS settings."""
    spec = obj.get("spec") or {}
    group, version = spec.get("group") or "", spec.get("version") or ""
    name = (obj.get("metadata") or {}).get("name") or ""
    wanted = f"{version}.{group}"
    if name and name != wanted and _name_check("path")(name) is None:
        e.invalid("metadata.name", name, f'must be `spec.version+"."+spec.group`: "{wanted}"')
    if not group and version != "v1":
        e.required("spec.group", "only v1 may have an empty group and it better be legacy kube")
    if group and not (len(str(group)) <= 253 and _DNS1123_SUBDOMAIN.match(str(group))):
        e.invalid("spec.group", group, _DNS1123_SUBDOMAIN_MSG)
    if not (len(str(version)) <= 63 and _DNS1035_LABEL.match(str(version))):
        e.invalid("spec.version", version, _DNS1035_LABEL_MSG)
    for key, top in (("groupPriorityMinimum", 20000), ("versionPriority", 1000)):
        value = spec.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= top:
            e.invalid(f"spec.{key}", value if value is not None else 0, f"must be positive and less than {top}")
    service = spec.get("service")
    if service is None:
        if spec.get("caBundle"):
            e.invalid("spec.caBundle", f"{_decoded_size(spec['caBundle'])} bytes", "local APIServices may not have a caBundle")
        if spec.get("insecureSkipTLSVerify"):
            e.invalid("spec.insecureSkipTLSVerify", True, "local APIServices may not have insecureSkipTLSVerify")
        return
    if not isinstance(service, dict):
        e.invalid("spec.service", "", "must be an object")
        return
    for key in ("namespace", "name"):
        if not service.get(key):
            e.required(f"spec.service.{key}")
    port = service.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        e.invalid("spec.service.port", port, "port is not valid: must be between 1 and 65535, inclusive")
    if spec.get("insecureSkipTLSVerify") and spec.get("caBundle"):
        e.invalid("spec.insecureSkipTLSVerify", True, "may not be true if caBundle is present")


def _decoded_size(text: Any) -> int:
    try:
        return len(base64.b64decode(str(text), validate=False))
    except (binascii.Error, ValueError):
        return len(str(text))


_PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")


def _ingress_backend(e: _Errs, field: str, backend: Any) -> None:
    if not isinstance(backend, dict):
        e.required(field)
        return
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        e.invalid(field, "", "cannot set both resource and service backends")
    elif service is None and resource is None:
        e.invalid(field, "", "resource or service backend is required")
    elif isinstance(service, dict):
        name = service.get("name")
        if not name:
            e.required(f"{field}.service.name")
        elif not (len(str(name)) <= 63 and _DNS1035_LABEL.match(str(name))):
            e.invalid(f"{field}.service.name", name, _DNS1035_LABEL_MSG)
        port = service.get("port") or {}
        if not isinstance(port, dict) or bool(port.get("name")) == (port.get("number") is not None):
            e.invalid(f"{field}.service.port", "", "must specify either a port name or a port number")
        elif port.get("number") is not None:
            _port_number(e, f"{field}.service.port.number", port.get("number"))
        else:
            _port_num_or_name(e, f"{field}.service.port.name", str(port["name"]))


def _ingress_host(e: _Errs, field: str, host: Any) -> None:
    """A DNS name, possibly with a leading `*.` wildcard, and never an IP address."""
    text = str(host)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        e.invalid(field, text, "must be a DNS name, not an IP address")
        return
    name = text[2:] if text.startswith("*.") else text
    if not (len(text) <= 253 and _DNS1123_SUBDOMAIN.match(name)):
        detail = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, " \
                 "which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric " \
                 "character (e.g. '*.example.com', regex used for validation is " \
                 "'\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')" \
            if text.startswith("*") else _DNS1123_SUBDOMAIN_MSG
        e.invalid(field, text, detail)


def _label_selector(e: _Errs, field: str, selector: Any) -> None:
    """A LabelSelector as upstream's ValidateLabelSelector checks it (an empty one is valid)."""
    if not isinstance(selector, dict):
        e.invalid(field, "", "must be a label selector")
        return
    try:
        labels_mod.from_label_selector(selector)
    except labels_mod.SelectorError as exc:
        e.invalid(field, "", str(exc))


def _cidr(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as Go's net.ParseCIDR reads it (host bits allowed), or None."""
    if not isinstance(text, str) or "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _netpol_port(e: _Errs, field: str, port: Any) -> None:
    if not isinstance(port, dict):
        e.invalid(field, "", "must be an object")
        return
    proto = port.get("protocol")
    if proto is not None and proto not in ("TCP", "UDP", "SCTP"):
        e.unsupported(f"{field}.protocol", proto, ("SCTP", "TCP", "UDP"))
    number, end = port.get("port"), port.get("endPort")
    if number is not None:
        _port_num_or_name(e, f"{field}.port", number)
    if end is None:
        return
    if number is None:
        e.invalid(f"{field}.endPort", end, "may not be specified when `port` is not specified")
    elif isinstance(number, str):
        e.invalid(f"{field}.endPort", end, "may not be specified when `port` is non-numeric")
    elif isinstance(end, int) and isinstance(number, int) and end < number:
        e.invalid(f"{field}.endPort", end, "must be greater than or equal to `port`")
    else:
        _port_number(e, f"{field}.endPort", end)


def _netpol_peer(e: _Errs, field: str, peer: Any) -> None:
    if not isinstance(peer, dict):
        e.invalid(field, "", "must be an object")
        return
    given = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    for key in given[:2] if "ipBlock" not in given else ():
        _label_selector(e, f"{field}.{key}", peer[key])
    if not given:
        e.required(field, "must specify a peer")
    elif len(given) > 1 and "ipBlock" in given:
        e.forbidden(field, "may not specify both ipBlock and another peer")
    block = peer.get("ipBlock")
    if "ipBlock" not in given or not isinstance(block, dict):
        return
    if not block.get("cidr"):
        e.required(f"{field}.ipBlock.cidr")
        return
    cidr = _cidr(block.get("cidr"))
    if cidr is None:
        e.invalid(f"{field}.ipBlock.cidr", block.get("cidr"), "not a valid CIDR")
        return
    for i, text in enumerate(block.get("except") or []):
        inner = _cidr(text)
        where = f"{field}.ipBlock.except[{i}]"
        if inner is None:
            e.invalid(where, text, "not a valid CIDR")
            return
        if inner.version != cidr.version or inner.network_address not in cidr or inner.prefixlen <= cidr.prefixlen:
            e.invalid(where, text, "must be a strict subset of `cidr`")


def _networkpolicy(e: _Errs, obj: JSON, old: JSON | None) -> None:
    """Upstream's ValidateNetworkPolicySpec: selectors, ports (endPort), peers, policy types."""
    spec = obj.get("spec") or {}
    _label_selector(e, "spec.podSelector", spec.get("podSelector") if "podSelector" in spec else {})
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            where = f"spec.{direction}[{i}]"
            if not isinstance(rule, dict):
                e.invalid(where, "", "must be an object")
                continue
            for j, port in enumerate(rule.get("ports") or []):
                _netpol_port(e, f"{where}.ports[{j}]", port)
            for j, peer in enumerate(rule.get(peers) or []):
                _netpol_peer(e, f"{where}.{peers}[{j}]", peer)
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        e.invalid("spec.policyTypes", types, "may not specify more than two policyTypes")
        return
    for i, kind in enumerate(types):
        if kind not in ("Ingress", "Egress"):
            e.unsupported(f"spec.policyTypes[{i}]", kind, ("Ingress", "Egress"))


def _ingress(e: _Errs, obj: JSON, old: JSON | None) -> None:
    """The structure upstream's ValidateIngressSpec requires of rules, paths and backends."""
    spec = obj.get("spec") or {}
    rules = spec.get("rules") or []
    if spec.get("defaultBackend") is not None:
        _ingress_backend(e, "spec.defaultBackend", spec.get("defaultBackend"))
    elif not rules:
        e.invalid("spec", "", "either `defaultBackend` or `rules` must be specified")
    cls = spec.get("ingressClassName")
    if cls is not None and not (len(str(cls)) <= 253 and _DNS1123_SUBDOMAIN.match(str(cls))):
        e.invalid("spec.ingressClassName", cls, _DNS1123_SUBDOMAIN_MSG)
    for i, tls in enumerate(spec.get("tls") or []):
        for j, host in enumerate((tls or {}).get("hosts") or [] if isinstance(tls, dict) else []):
            _ingress_host(e, f"spec.tls[{i}].hosts[{j}]", host)
    for i, rule in enumerate(rules):
        if isinstance(rule, dict) and rule.get("host"):
            _ingress_host(e, f"spec.rules[{i}].host", rule["host"])
        http = rule.get("http") if isinstance(rule, dict) else None
        if not isinstance(http, dict):
            continue
        paths = http.get("paths") or []
        if not paths:
            e.required(f"spec.rules[{i}].http.paths")
        for j, path in enumerate(paths):
            pf = f"spec.rules[{i}].http.paths[{j}]"
            if not isinstance(path, dict):
                e.invalid(pf, "", "must be an object")
                continue
            if path.get("pathType") is None:
                e.required(f"{pf}.pathType", "pathType must be specified")
            elif path["pathType"] not in _PATH_TYPES:
                e.unsupported(f"{pf}.pathType", path["pathType"], _PATH_TYPES)
            elif path["pathType"] in ("Exact", "Prefix") and not str(path.get("path") or "").startswith("/"):
                e.invalid(f"{pf}.path", path.get("path") or "", "must be an absolute path")
            _ingress_backend(e, f"{pf}.backend", path.get("backend"))


def _storageclass(e: _Errs, obj: JSON, old: JSON | None) -> None:
    if not obj.get("provisioner"):
        e.required("provisioner")
    if obj.get("reclaimPolicy") not in ("Delete", "Retain"):
        e.unsupported("reclaimPolicy", obj.get("reclaimPolicy"), ["Delete", "Retain"])
    if obj.get("volumeBindingMode") not in ("Immediate", "WaitForFirstConsumer"):
        e.unsupported("volumeBindingMode", obj.get("volumeBindingMode"), ["Immediate", "WaitForFirstConsumer"])
    if old is not None:
        for k in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
            if obj.get(k) != old.get(k):
                e.forbidden(k, "updates to " + k + " are forbidden.")


def _rules(e: _Errs, obj: JSON) -> None:
    for i, rule in enumerate(obj.get("rules") or []):
        if not isinstance(rule, dict):
            continue
        if not rule.get("verbs"):
            e.required(f"rules[{i}].verbs", "verbs must contain at least one value")
        if not rule.get("nonResourceURLs") and rule.get("apiGroups") is None:
            e.required(f"rules[{i}].apiGroups", "resource rules must supply at least one api group")


def _role(e: _Errs, obj: JSON, old: JSON | None) -> None:
    _rules(e, obj)


def _binding(e: _Errs, obj: JSON, old: JSON | None, *, cluster: bool) -> None:
    ref = obj.get("roleRef")
    if not isinstance(ref, dict):
        e.required("roleRef")
    else:
        kinds = ("ClusterRole",) if cluster else ("Role", "ClusterRole")
        if ref.get("kind") not in kinds:
            e.unsupported("roleRef.kind", ref.get("kind"), kinds)
        if ref.get("apiGroup") != "rbac.authorization.k8s.io":
            e.unsupported("roleRef.apiGroup", ref.get("apiGroup"), ["rbac.authorization.k8s.io"])
        if not ref.get("name"):
            e.required("roleRef.name")
    for i, s in enumerate(obj.get("subjects") or []):
        if not isinstance(s, dict):
            continue
        if s.get("kind") not in ("ServiceAccount", "User", "Group"):
            e.unsupported(f"subjects[{i}].kind", s.get("kind"), ["ServiceAccount", "User", "Group"])
        if not s.get("name"):
            e.required(f"subjects[{i}].name")
        if s.get("kind") == "ServiceAccount" and not s.get("namespace") and cluster:
            e.required(f"subjects[{i}].namespace")
    if old is not None and old.get("roleRef") != ref:
        e.invalid("roleRef", "", "cannot change roleRef")


def _causes_of(check: Callable[[JSON, JSON | None], list[Cause]], e: _Errs, obj: JSON, old: JSON | None) -> None:
    e.causes.extend(check(obj, old))


_VALIDATORS: dict[str, Callable[[_Errs, JSON, JSON | None], None]] = {
    "Pod": _pod,
    "Service": _service,
    "ConfigMap": _configmap,
    "Secret": _secret,
    "Namespace": _namespace,
    "Node": _node,
    "Endpoints": _endpoints,
    "PersistentVolumeClaim": _pvc,
    "PersistentVolume": _pv,
    "ResourceQuota": _quota,
    "LimitRange": _limitrange,
    "Event": _event,
    "Deployment.apps": _deployment,
    "ReplicaSet.apps": _replicaset,
    "ReplicationController": _replicationcontroller,
    "DaemonSet.apps": _daemonset,
    "StatefulSet.apps": _statefulset,
    "ControllerRevision.apps": _controller_revision,
    "Job.batch": _job,
    "CronJob.batch": _cronjob,
    "Lease.coordination.k8s.io": _lease,
    "HorizontalPodAutoscaler.autoscaling": _hpa,
    "EndpointSlice.discovery.k8s.io": _endpointslice,
    "StorageClass.storage.k8s.io": _storageclass,
    "PriorityClass.scheduling.k8s.io": _priorityclass,
    "Role.rbac.authorization.k8s.io": _role,
    "ClusterRole.rbac.authorization.k8s.io": _role,
    "RoleBinding.rbac.authorization.k8s.io": lambda e, o, old: _binding(e, o, old, cluster=False),
    "ClusterRoleBinding.rbac.authorization.k8s.io": lambda e, o, old: _binding(e, o, old, cluster=True),
    "CustomResourceDefinition.apiextensions.k8s.io": lambda e, o, old: e.causes.extend(crds.validate(o, old)),
    "APIService.apiregistration.k8s.io": _apiservice,
    "Ingress.networking.k8s.io": _ingress,
    "NetworkPolicy.networking.k8s.io": _networkpolicy,
    **{gk: functools.partial(_causes_of, check) for gk, check in admissionconfig.VALIDATORS.items()},
}


def validate(gk: str, obj: JSON, *, old: JSON | None, namespaced: bool) -> list[Cause]:
    e = _Errs()
    _metadata(e, gk, obj, namespaced=namespaced, old=old)
    fn = _VALIDATORS.get(gk)
    if fn is not None:
        fn(e, obj, old)
    return e.causes


_POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def validate_status(gk: str, obj: JSON, *, old: JSON | None, namespaced: bool) -> list[Cause]:
    """Status writes check metadata and the status fields with a closed set of values."""
    e = _Errs()
    _metadata(e, gk, obj, namespaced=namespaced, old=old)
    status = obj.get("status")
    if status is not None and not isinstance(status, dict):
        e.invalid("status", "", "must be an object")
        return e.causes
    status = status or {}
    if gk == "Pod" and status.get("phase") not in (None, *_POD_PHASES):
        e.unsupported("status.phase", status.get("phase"), _POD_PHASES)
    for i, cond in enumerate(status.get("conditions") or []):
        if not isinstance(cond, dict):
            continue
        if not cond.get("type"):
            e.required(f"status.conditions[{i}].type")
        if cond.get("status") not in ("True", "False", "Unknown"):
            e.unsupported(f"status.conditions[{i}].status", cond.get("status"), ["True", "False", "Unknown"])
    for k in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas", "observedGeneration"):
        _nonneg_int(e, f"status.{k}", status.get(k))
    if gk in ("ReplicationController", "ReplicaSet.apps"):
        _replica_counts(e, status)
    return e.causes


def _replica_counts(e: _Errs, status: JSON) -> None:
    """Upstream's ValidateReplicationControllerStatus (and ReplicaSet's): no count above replicas."""
    counts = {k: status.get(k) or 0 for k in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        return  # reported above as not an integer
    _nonneg_int(e, "status.fullyLabeledReplicas", counts["fullyLabeledReplicas"])
    for k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if counts[k] > counts["replicas"]:
            e.invalid(f"status.{k}", counts[k], "cannot be greater than status.replicas")
    if counts["availableReplicas"] > counts["readyReplicas"]:
        e.invalid("status.availableReplicas", counts["availableReplicas"], "cannot be greater than readyReplicas")
