"""APIService status, as kube-aggregator's registry strategy and availability controllers set it.

An APIService says which server answers for one group-version. edgekube is its own only server:
every group-version it serves has a *local* APIService (`spec.service` null), kept by the
APIService registration controller (edgekube/controllers/apiservices.py), and a local entry is
always available (upstream: Available=True, reason `Local`).

Aggregation (an APIService pointing at a Service, like metrics-server's `v1beta1.metrics.k8s.io`)
is not done: edgekube stores such an entry, but never proxies to it nor adds its group to
discovery. Upstream would report Available=False with a reason (`ServiceNotFound`,
`FailedDiscoveryCheck`, ...) until the service answered; edgekube's answer never changes, so it
says why once and for all: Available=False, reason `AggregationNotSupported`, and a message that
names the service. Whoever waits for the entry (`kubectl wait --for=condition=Available` times
out) reads the cause in `kubectl get apiservices` (`False (AggregationNotSupported)`) rather than
one of upstream's transient reasons, which would suggest that it may yet come.

The status is derived from the spec on create and on every spec update (the status subresource
may still be written, as upstream allows); lastTransitionTime moves only when the status does.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
GK = "APIService.apiregistration.k8s.io"
LOCAL_REASON = "Local"
LOCAL_MESSAGE = "Local APIServices are always available"
NOT_PROXIED_REASON = "AggregationNotSupported"


def available_condition(spec: JSON) -> JSON:
    """The Available condition an APIService with `spec` has on edgekube (without its time)."""
    service = spec.get("service")
    if not isinstance(service, dict):
        return {"type": "Available", "status": "True", "reason": LOCAL_REASON, "message": LOCAL_MESSAGE}
    where = f"{service.get('namespace', '')}/{service.get('name', '')}"
    return {
        "type": "Available",
        "status": "False",
        "reason": NOT_PROXIED_REASON,
        "message": f"edgekube does not aggregate API servers: requests for "
                   f"{spec.get('group') or 'core'}/{spec.get('version', '')} are not proxied to service {where}",
    }


def status(obj: JSON, *, old: JSON | None, now: str) -> JSON:
    """`obj`'s status with its Available condition derived from its spec; other conditions kept."""
    current = (old if old is not None else obj).get("status")
    conditions = [c for c in (current or {}).get("conditions") or [] if isinstance(c, dict)]
    spec = obj.get("spec")
    want = available_condition(spec if isinstance(spec, dict) else {})
    before = next((c for c in conditions if c.get("type") == "Available"), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == want["status"] else None
    cond = {"type": "Available", "status": want["status"], "lastTransitionTime": since or now,
            "reason": want["reason"], "message": want["message"]}
    others = [c for c in conditions if c.get("type") != "Available"]
    return {"conditions": [cond, *others]}
