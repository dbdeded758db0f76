"""A container's environment, resolved as upstream's kubelet does (makeEnvironmentVariables).

Sources, in the order they are laid down (a later entry with the same name replaces an earlier
one in place, see `bundle.container_env`):

1. Service links: for the `kubernetes` Service of `default`, always, and for every Service of the
   pod's namespace when `enableServiceLinks` is not false: `<NAME>_SERVICE_HOST`,
   `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT NAME>`, `<NAME>_PORT` and the
   `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]` family (Docker-links style); headless
   Services and Services without a ClusterIP give none.
2. `envFrom` (configMapRef and secretRef with an optional `prefix`); keys that are not valid
   variable names are skipped (upstream records an InvalidEnvironmentVariableNames event).
3. `env`, each value `$(VAR)`-expanded from the entries before it; `valueFrom` with `fieldRef`,
   `resourceFieldRef`, `configMapKeyRef` and `secretKeyRef` (`optional` honoured).

Values from 1 and 2 are not expanded (their `$` are escaped for the expansion that follows).
A missing object or key that is not optional is a `CreateContainerConfigError` with upstream's
message (`configmap "x" not found`, `couldn't find key k in Secret ns/x`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgekube.kubelet import volumes

JSON = dict[str, Any]
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class EnvError(Exception):
    """CreateContainerConfigError: the message is what the user sees in the container's state."""


def _escape(value: str) -> str:
    return value.replace("$", "$$")


def service_env(services: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        name = str((svc.get("metadata") or {}).get("name") or "").upper().replace("-", "_")
        ports = [p for p in spec.get("ports") or [] if isinstance(p, Mapping)]
        if not ports:
            continue
        out.append((f"{name}_SERVICE_HOST", str(ip)))
        out.append((f"{name}_SERVICE_PORT", str(ports[0].get("port"))))
        for p in ports:
            if p.get("name"):
                out.append((f"{name}_SERVICE_PORT_{str(p['name']).upper().replace('-', '_')}", str(p.get("port"))))
        first = ports[0]
        out.append((f"{name}_PORT", f"{str(first.get('protocol') or 'TCP').lower()}://{ip}:{first.get('port')}"))
        for p in ports:
            proto = str(p.get("protocol") or "TCP")
            prefix = f"{name}_PORT_{p.get('port')}_{proto.upper()}"
            out.append((prefix, f"{proto.lower()}://{ip}:{p.get('port')}"))
            out.append((f"{prefix}_PROTO", proto.lower()))
            out.append((f"{prefix}_PORT", str(p.get("port"))))
            out.append((f"{prefix}_ADDR", str(ip)))
    return out


Getter = Callable[[str, str], JSON | None]


def resolve(pod: Mapping[str, Any], container: Mapping[str, Any], *, get_configmap: Getter, get_secret: Getter,
            services: Sequence[Mapping[str, Any]], allocatable: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (name, value) pairs for `bundle.build_config(env=...)`."""
    ns = str((pod.get("metadata") or {}).get("namespace") or "default")
    pairs: list[tuple[str, str]] = [(k, _escape(v)) for k, v in service_env(services)]
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        decode: Callable[[Mapping[str, Any]], dict[str, bytes]]
        if source.get("configMapRef"):
            ref, what, get, decode = source["configMapRef"], "configmap", get_configmap, volumes.configmap_data
        elif source.get("secretRef"):
            ref, what, get, decode = source["secretRef"], "secret", get_secret, volumes.secret_data
        else:
            continue
        name = str(ref.get("name") or "")
        obj = get(ns, name)
        if obj is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{what} "{name}" not found')
        for key, raw in sorted(decode(obj).items()):
            var = prefix + key
            if ENV_NAME.match(var):
                pairs.append((var, _escape(raw.decode(errors="replace"))))
    for e in container.get("env") or []:
        if not isinstance(e, Mapping) or not e.get("name"):
            continue
        name = str(e["name"])
        source = e.get("valueFrom")
        if not source:
            pairs.append((name, str(e.get("value") or "")))
            continue
        value = _value_from(pod, container, source, ns=ns, get_configmap=get_configmap, get_secret=get_secret,
                            allocatable=allocatable)
        if value is not None:
            pairs.append((name, _escape(value)))
    return pairs


def _value_from(pod: Mapping[str, Any], container: Mapping[str, Any], source: Mapping[str, Any], *, ns: str,
                get_configmap: Getter, get_secret: Getter, allocatable: Mapping[str, str]) -> str | None:
    try:
        if source.get("fieldRef"):
            return volumes.field_value(pod, str(source["fieldRef"].get("fieldPath") or ""))
        if source.get("resourceFieldRef"):
            return volumes.resource_value(pod, source["resourceFieldRef"], default_container=str(container.get("name")),
                                          allocatable=allocatable)
    except volumes.VolumeError as exc:
        raise EnvError(str(exc)) from None
    for field, what, kind, get, decode in (
            ("configMapKeyRef", "configmap", "ConfigMap", get_configmap, volumes.configmap_data),
            ("secretKeyRef", "secret", "Secret", get_secret, volumes.secret_data)):
        ref = source.get(field)
        if not ref:
            continue
        name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
        obj = get(ns, name)
        if obj is None:
            if ref.get("optional"):
                return None
            raise EnvError(f'{what} "{name}" not found')
        data = decode(obj)
        if key not in data:
            if ref.get("optional"):
                return None
            raise EnvError(f"couldn't find key {key} in {kind} {ns}/{name}")
        return data[key].decode(errors="replace")
    return None
