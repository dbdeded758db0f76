"""Server-side `meta.k8s.io/v1` Table output, the form `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever columns
come back; it hides columns with priority above 0 unless `-o wide` is given. So the server, like
upstream's, always computes every column (upstream calls its printers with `Wide: true`) and
lets the client choose. Column names, types, formats, priorities and the way each cell is
derived follow upstream's internal-version printers (kubernetes pkg/printers/internalversion),
re-implemented here over plain JSON mappings:

- A printer is a constant pair (columns, row function). The row function reads the object
  defensively: stored objects may be partial (a status not yet written, a field a client left
  out), and a table must never fail because of that, so every accessor falls back to the value
  upstream would see for a zero Go field (`""`, `0`, nil list) and the cell prints what upstream
  prints for it (`<none>`, `<unset>`, `<unknown>`, `0`).
- Upstream prints internal objects, which have their defaults applied (Service type ClusterIP,
  port protocol TCP, replicas 1, ...). The same defaults are applied at read time here so a
  stored object missing them still prints like upstream.
- Kinds without a printer (Role, ClusterRole, LimitRange, custom resources) get the apiserver's
  default table: `Name` and `Created At` (type `date`, RFC 3339 in UTC), as
  `rest.NewDefaultTableConvertor` does.
- Ages use upstream's `duration.HumanDuration` rules (see `human_duration`); `now` is injectable
  so tests can pin it.

Watch: the apiserver transforms each watch event's object into a one-row Table and, after the
first one, sets `TableOptions.NoHeaders`, so only the first event carries `columnDefinitions`;
later events serialise it as `null` (the Go field has no `omitempty`). `with_columns=False`
reproduces that. `includeObject` decides each row's `object`: `Metadata` (the default) is a
`PartialObjectMetadata` carrying the object's whole metadata, `Object` the full object, `None`
a JSON null; any other value is a 400, as upstream answers.

Descriptions of the `Name` and `Age` columns quote the ObjectMeta API documentation; others
describe the column in our own words (kubectl never shows them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from edgekube.api import errors
from edgekube.api.registry import crds, resources

JSON = dict[str, Any]

INCLUDE_OBJECT_VALUES = ("None", "Metadata", "Object")

_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically. "
    "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
    "updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATED_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. "
    "It is not guaranteed to be set in happens-before order across separate operations. Clients "
    "may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the "
    "system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)

# Go's zero time, which is what upstream's default table prints for a missing timestamp.
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class Column(NamedTuple):
    name: str
    type: str
    description: str
    priority: int = 0
    format: str = ""

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


RowFn = Callable[[Mapping[str, Any], datetime], list[Any]]


class Printer(NamedTuple):
    columns: tuple[Column, ...]
    row: RowFn


# --- durations ------------------------------------------------------------------------------


def human_duration(d: timedelta) -> str:
    """Upstream's `duration.HumanDuration`: coarse, two-unit at most, truncating."""
    seconds = int(d / timedelta(seconds=1))  # int() truncates toward zero, as Go's conversion
    # Up to a second of skew between machines still reads as "now".
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (Time or MicroTime) as an aware datetime, None when absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if t.year <= 1:  # Go's zero time, serialised by some clients instead of null
        return None
    return t


def age(value: Any, now: datetime) -> str:
    """`translateTimestampSince`: `<unknown>` without a timestamp, else a human duration."""
    t = parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration(now - t)


# --- defensive accessors --------------------------------------------------------------------


def _m(obj: Any, *path: str) -> Mapping[str, Any]:
    cur: Any = obj
    for key in path:
        cur = cur.get(key) if isinstance(cur, Mapping) else None
    return cur if isinstance(cur, Mapping) else {}


def _l(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _i(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    return default


def _name(obj: Mapping[str, Any]) -> str:
    return _s(_m(obj, "metadata").get("name"))


def _created(obj: Mapping[str, Any], now: datetime) -> str:
    return age(_m(obj, "metadata").get("creationTimestamp"), now)


def _deleting(obj: Mapping[str, Any]) -> bool:
    return _m(obj, "metadata").get("deletionTimestamp") is not None


def format_labels(labels: Mapping[str, Any]) -> str:
    """`labels.FormatLabels`: sorted `k=v` joined by commas, `<none>` when empty."""
    text = ",".join(f"{k}={_s(v)}" for k, v in sorted(labels.items()))
    return text or "<none>"


def selector_string(selector: Any) -> str | None:
    """A LabelSelector in upstream's selector syntax; None when it cannot be parsed.

    Requirements come from matchLabels and matchExpressions and print sorted by key, as the
    selector upstream builds does (`k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`).
    """
    if selector is None:
        return ""
    if not isinstance(selector, Mapping):
        return None
    reqs: list[tuple[str, str]] = []
    for key, value in _m(selector, "matchLabels").items():
        reqs.append((key, f"{key}={_s(value)}"))
    for expr in _l(selector.get("matchExpressions")):
        if not isinstance(expr, Mapping):
            return None
        key = _s(expr.get("key"))
        op = _s(expr.get("operator"))
        values = sorted(_s(v) for v in _l(expr.get("values")))
        if op == "In":
            reqs.append((key, f"{key} in ({','.join(values)})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({','.join(values)})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
        else:
            return None
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs)


def format_label_selector(selector: Any) -> str:
    """`metav1.FormatLabelSelector`: `<none>` for an empty selector, `<error>` for a bad one."""
    text = selector_string(selector)
    if text is None:
        return "<error>"
    return text or "<none>"


def _containers(pod_spec: Mapping[str, Any]) -> tuple[str, str]:
    containers = [c for c in _l(pod_spec.get("containers")) if isinstance(c, Mapping)]
    names = ",".join(_s(c.get("name")) for c in containers)
    images = ",".join(_s(c.get("image")) for c in containers)
    return names, images


def _quantity(value: Any) -> str:
    # Upstream prints resource.Quantity in canonical form; stored quantities are printed as
    # written (a missing one is Go's zero Quantity, "0").
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return "0"


def _cond_true(conditions: Any, type_: str) -> bool:
    for cond in _l(conditions):
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond.get("status") == "True"
    return False


def _join_host_port(host: str, port: int) -> str:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        if ":" in host:
            return f"[{host}]:{port}"
    return f"{host}:{port}"


def _with_more(items: list[str], count: int, limit: int = 3, *, empty: str = "<unset>") -> str:
    text = ",".join(items[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


def _template_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _m(obj, "spec", "template", "spec")


def _replicas(spec: Mapping[str, Any]) -> int:
    # Internal objects carry the defaulted value; an absent field defaults to 1.
    value = spec.get("replicas")
    return _i(value) if value is not None else 1


# --- column sets ----------------------------------------------------------------------------

_NAME = Column("Name", "string", _NAME_DOC, format="name")
_AGE = Column("Age", "string", _CREATED_DOC)
_CONTAINERS = Column("Containers", "string", "Names of each container in the template.", 1)
_IMAGES = Column("Images", "string", "Images referenced by each container in the template.", 1)
_SELECTOR = Column("Selector", "string", "The label selector of this object.", 1)

DEFAULT_COLUMNS = (
    _NAME,
    Column("Created At", "date", _CREATED_DOC),
)

# --- pods -----------------------------------------------------------------------------------

_POD_SUCCEEDED_CONDITIONS = (
    {"type": "Completed", "status": "True", "reason": "Succeeded",
     "message": "The pod has completed successfully."},
)
_POD_FAILED_CONDITIONS = (
    {"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."},
)


def _restartable(container: Mapping[str, Any] | None) -> bool:
    return container is not None and container.get("restartPolicy") == "Always"


def _last_terminated(status: Mapping[str, Any]) -> datetime | None:
    term = _m(status, "lastState", "terminated")
    if not term:
        return None
    return parse_time(term.get("finishedAt"))


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _terminated_reason(term: Mapping[str, Any], prefix: str) -> str:
    if _s(term.get("reason")):
        return prefix + _s(term.get("reason"))
    signal = _i(term.get("signal"))
    if signal != 0:
        return f"{prefix}Signal:{signal}"
    return f"{prefix}ExitCode:{_i(term.get('exitCode'))}"


def pod_status(pod: Mapping[str, Any]) -> tuple[int, int, str, int, datetime | None]:
    """(ready, total, STATUS, restarts, last restart time) the way upstream's pod printer
    reasons: init containers first (a failing or waiting one names the status `Init:...`,
    sidecars count as app containers once started), then app containers last to first so the
    first container's waiting/terminated reason wins, then deletion (Terminating, or Unknown
    for a pod on a lost node)."""
    spec = _m(pod, "spec")
    status = _m(pod, "status")
    phase = _s(status.get("phase"))
    reason = _s(status.get("reason")) or phase
    for cond in _l(status.get("conditions")):
        if isinstance(cond, Mapping) and cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = [c for c in _l(spec.get("initContainers")) if isinstance(c, Mapping)]
    by_name = {_s(c.get("name")): c for c in init_specs}
    total = len(_l(spec.get("containers"))) + sum(1 for c in init_specs if _restartable(c))
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None

    initializing = False
    for i, cs in enumerate(_l(status.get("initContainerStatuses"))):
        if not isinstance(cs, Mapping):
            continue
        restarts += _i(cs.get("restartCount"))
        finished = _last_terminated(cs)
        last_restart = _later(last_restart, finished)
        sidecar = _restartable(by_name.get(_s(cs.get("name"))))
        if sidecar:
            sidecar_restarts += _i(cs.get("restartCount"))
            last_sidecar_restart = _later(last_sidecar_restart, finished)
        state = _m(cs, "state")
        terminated = _m(state, "terminated")
        waiting = _m(state, "waiting")
        is_terminated = isinstance(state.get("terminated"), Mapping)
        if is_terminated and _i(terminated.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready") is True:
                ready += 1
            continue
        if is_terminated:
            reason = _terminated_reason(terminated, "Init:")
        elif _s(waiting.get("reason")) and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + _s(waiting.get("reason"))
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _cond_true(status.get("conditions"), "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(_l(status.get("containerStatuses"))):
            if not isinstance(cs, Mapping):
                continue
            restarts += _i(cs.get("restartCount"))
            last_restart = _later(last_restart, _last_terminated(cs))
            state = _m(cs, "state")
            waiting = _m(state, "waiting")
            terminated = _m(state, "terminated")
            if _s(waiting.get("reason")):
                reason = _s(waiting.get("reason"))
            elif isinstance(state.get("terminated"), Mapping):
                reason = _terminated_reason(terminated, "")
            elif cs.get("ready") is True and isinstance(state.get("running"), Mapping):
                has_running = True
                ready += 1
        # A pod whose last reported reason is Completed but which still runs a container is
        # shown as running (or not ready) rather than finished.
        if reason == "Completed" and has_running:
            reason = "Running" if _cond_true(status.get("conditions"), "Ready") else "NotReady"

    if _deleting(pod) and _s(status.get("reason")) == "NodeLost":
        reason = "Unknown"
    elif _deleting(pod) and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    return ready, total, reason, restarts, last_restart


def _pod_row(pod: Mapping[str, Any], now: datetime) -> list[Any]:
    ready, total, reason, restarts, last_restart = pod_status(pod)
    restarts_text = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"
    spec = _m(pod, "spec")
    status = _m(pod, "status")
    pod_ips = [p for p in _l(status.get("podIPs")) if isinstance(p, Mapping)]
    pod_ip = _s(pod_ips[0].get("ip")) if pod_ips else ""
    gates = [g for g in _l(spec.get("readinessGates")) if isinstance(g, Mapping)]
    gates_text = "<none>"
    if gates:
        conditions = [c for c in _l(status.get("conditions")) if isinstance(c, Mapping)]
        passed = 0
        for gate in gates:
            for cond in conditions:
                if cond.get("type") == gate.get("conditionType"):
                    passed += cond.get("status") == "True"
                    break
        gates_text = f"{passed}/{len(gates)}"
    return [
        _name(pod), f"{ready}/{total}", reason, restarts_text, _created(pod, now),
        pod_ip or "<none>",
        _s(spec.get("nodeName")) or "<none>",
        _s(status.get("nominatedNodeName")) or "<none>",
        gates_text,
    ]


def _pod_conditions(pod: Mapping[str, Any]) -> list[JSON] | None:
    phase = _m(pod, "status").get("phase")
    if phase == "Succeeded":
        return [dict(c) for c in _POD_SUCCEEDED_CONDITIONS]
    if phase == "Failed":
        return [dict(c) for c in _POD_FAILED_CONDITIONS]
    return None


_POD = Printer(
    (
        _NAME,
        Column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
        Column("Status", "string", "The aggregate status of the containers in this pod."),
        Column("Restarts", "string", "The number of times the containers in this pod have been "
               "restarted and when the last container in this pod has restarted."),
        _AGE,
        Column("IP", "string", "The IP address allocated to the pod.", 1),
        Column("Node", "string", "The node the pod is bound to.", 1),
        Column("Nominated Node", "string", "The node the scheduler nominated for this pod after preemption.", 1),
        Column("Readiness Gates", "string", "How many of the pod's readiness gates are satisfied.", 1),
    ),
    _pod_row,
)

# --- workloads ------------------------------------------------------------------------------


def _deployment_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    status = _m(obj, "status")
    names, images = _containers(_template_spec(obj))
    selector = selector_string(spec.get("selector"))
    return [
        _name(obj),
        f"{_i(status.get('readyReplicas'))}/{_replicas(spec)}",
        _i(status.get("updatedReplicas")),
        _i(status.get("availableReplicas")),
        _created(obj, now),
        names, images,
        "<invalid>" if selector is None else selector,
    ]


_DEPLOYMENT = Printer(
    (
        _NAME,
        Column("Ready", "string", "Number of the pod with ready state"),
        Column("Up-to-date", "string", "Total number of pods targeted by this deployment that have the desired template."),
        Column("Available", "string", "Total number of pods targeted by this deployment that are available."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ),
    _deployment_row,
)


def _replicaset_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    status = _m(obj, "status")
    names, images = _containers(_template_spec(obj))
    return [
        _name(obj), _replicas(spec), _i(status.get("replicas")), _i(status.get("readyReplicas")),
        _created(obj, now), names, images, format_label_selector(spec.get("selector")),
    ]


_REPLICASET = Printer(
    (
        _NAME,
        Column("Desired", "integer", "The number of pods this replica set wants."),
        Column("Current", "integer", "The number of pods this replica set currently has."),
        Column("Ready", "integer", "The number of this replica set's pods that are ready."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ),
    _replicaset_row,
)


def _replication_controller_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    status = _m(obj, "status")
    names, images = _containers(_template_spec(obj))
    return [
        _name(obj), _replicas(spec), _i(status.get("replicas")), _i(status.get("readyReplicas")),
        _created(obj, now), names, images, format_labels(_m(spec, "selector")),
    ]


_REPLICATION_CONTROLLER = Printer(
    (
        _NAME,
        Column("Desired", "integer", "Replicas is the number of desired replicas. This is a pointer to distinguish "
               "between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/"
               "workloads/controllers/replicationcontroller#what-is-a-replicationcontroller"),
        Column("Current", "integer", "Replicas is the most recently observed number of replicas. More info: "
               "https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller"
               "#what-is-a-replicationcontroller"),
        Column("Ready", "integer", "The number of ready replicas for this replication controller."),
        _AGE, _CONTAINERS, _IMAGES,
        Column("Selector", "string", "Selector is a label query over pods that should match the Replicas count. If "
               "Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values "
               "that must match in order to be controlled by this replication controller, if empty defaulted to "
               "labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/"
               "labels/#label-selectors", 1),
    ),
    _replication_controller_row,
)


def _daemonset_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    status = _m(obj, "status")
    names, images = _containers(_template_spec(obj))
    return [
        _name(obj),
        _i(status.get("desiredNumberScheduled")),
        _i(status.get("currentNumberScheduled")),
        _i(status.get("numberReady")),
        _i(status.get("updatedNumberScheduled")),
        _i(status.get("numberAvailable")),
        format_labels(_m(_template_spec(obj), "nodeSelector")),
        _created(obj, now),
        names, images, format_label_selector(spec.get("selector")),
    ]


_DAEMONSET = Printer(
    (
        _NAME,
        Column("Desired", "integer", "The number of nodes that should run the daemon pod."),
        Column("Current", "integer", "The number of nodes running at least one daemon pod."),
        Column("Ready", "integer", "The number of nodes whose daemon pod is ready."),
        Column("Up-to-date", "integer", "The number of nodes running the updated daemon pod."),
        Column("Available", "integer", "The number of nodes whose daemon pod is available."),
        Column("Node Selector", "string", "The node selector of the pod template."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ),
    _daemonset_row,
)


def _statefulset_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    names, images = _containers(_template_spec(obj))
    ready = _i(_m(obj, "status").get("readyReplicas"))
    return [_name(obj), f"{ready}/{_replicas(spec)}", _created(obj, now), names, images]


_STATEFULSET = Printer(
    (
        _NAME,
        Column("Ready", "string", "Number of the pod with ready state"),
        _AGE, _CONTAINERS, _IMAGES,
    ),
    _statefulset_row,
)


def _job_status(obj: Mapping[str, Any]) -> str:
    conditions = _m(obj, "status").get("conditions")
    if _cond_true(conditions, "Complete"):
        return "Complete"
    if _cond_true(conditions, "Failed"):
        return "Failed"
    if _deleting(obj):
        return "Terminating"
    if _cond_true(conditions, "Suspended"):
        return "Suspended"
    if _cond_true(conditions, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def _job_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    status = _m(obj, "status")
    succeeded = _i(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_i(spec.get('completions'))}"
    elif _i(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_i(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    start = parse_time(status.get("startTime"))
    end = parse_time(status.get("completionTime"))
    duration = "" if start is None else human_duration((end or now) - start)
    names, images = _containers(_template_spec(obj))
    return [
        _name(obj), _job_status(obj), completions, duration, _created(obj, now),
        names, images, format_label_selector(spec.get("selector")),
    ]


_JOB = Printer(
    (
        _NAME,
        Column("Status", "string", "Status of the job."),
        Column("Completions", "string", "The number of pods that succeeded out of the number wanted."),
        Column("Duration", "string", "Time required to complete the job."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ),
    _job_row,
)


def _bool_ptr(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return "<unset>"


def _cronjob_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    status = _m(obj, "status")
    last = "<none>"
    if status.get("lastScheduleTime") is not None:
        last = age(status.get("lastScheduleTime"), now)
    job_spec = _m(spec, "jobTemplate", "spec")
    names, images = _containers(_m(job_spec, "template", "spec"))
    return [
        _name(obj), _s(spec.get("schedule")), _s(spec.get("timeZone")) or "<none>",
        _bool_ptr(spec.get("suspend")), len(_l(status.get("active"))), last, _created(obj, now),
        names, images, format_label_selector(job_spec.get("selector")),
    ]


_CRONJOB = Printer(
    (
        _NAME,
        Column("Schedule", "string", "The schedule in Cron format."),
        Column("Timezone", "string", "The time zone the schedule is read in."),
        Column("Suspend", "boolean", "Whether subsequent executions are suspended."),
        Column("Active", "integer", "The number of running jobs."),
        Column("Last Schedule", "string", "When a job was last scheduled."),
        _AGE, _CONTAINERS, _IMAGES, _SELECTOR,
    ),
    _cronjob_row,
)


def _controller_revision_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    controller = "<none>"
    for ref in _l(_m(obj, "metadata").get("ownerReferences")):
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            api_version = _s(ref.get("apiVersion"))
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            kind = _s(ref.get("kind"))
            gk = f"{kind}.{group}" if group else kind
            controller = f"{gk.lower()}/{_s(ref.get('name'))}" if gk else _s(ref.get("name"))
            break
    return [_name(obj), controller, _i(obj.get("revision")), _created(obj, now)]


_CONTROLLER_REVISION = Printer(
    (
        _NAME,
        Column("Controller", "string", "Controller of the object"),
        Column("Revision", "string", "The revision of the state this object holds."),
        _AGE,
    ),
    _controller_revision_row,
)

# --- services and networking ----------------------------------------------------------------


def _lb_ingress(status: Mapping[str, Any], *, wide: bool) -> str:
    found: set[str] = set()
    for ing in _l(_m(status, "loadBalancer").get("ingress")):
        if not isinstance(ing, Mapping):
            continue
        if _s(ing.get("ip")):
            found.add(_s(ing.get("ip")))
        elif _s(ing.get("hostname")):
            found.add(_s(ing.get("hostname")))
    text = ",".join(sorted(found))
    if not wide and len(text) > 16:
        text = text[:13] + "..."
    return text


def service_external_ip(svc: Mapping[str, Any], *, wide: bool = True) -> str:
    spec = _m(svc, "spec")
    type_ = _s(spec.get("type")) or "ClusterIP"
    external = [_s(ip) for ip in _l(spec.get("externalIPs"))]
    if type_ in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if type_ == "LoadBalancer":
        lb = _lb_ingress(_m(svc, "status"), wide=wide)
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + external)
        return lb or "<pending>"
    if type_ == "ExternalName":
        return _s(spec.get("externalName"))
    return "<unknown>"


def service_ports(ports: Any) -> str:
    pieces = []
    for port in _l(ports):
        if not isinstance(port, Mapping):
            continue
        protocol = _s(port.get("protocol")) or "TCP"
        node_port = _i(port.get("nodePort"))
        if node_port > 0:
            pieces.append(f"{_i(port.get('port'))}:{node_port}/{protocol}")
        else:
            pieces.append(f"{_i(port.get('port'))}/{protocol}")
    return ",".join(pieces)


def _ingress_hosts(rules: list[Any]) -> str:
    """Upstream's formatHosts: the first three hosts, `*` when none, and how many more rules."""
    hosts: list[str] = []
    more = False
    for rule in rules:
        more = more or len(hosts) == 3
        host = _s(rule.get("host")) if isinstance(rule, Mapping) else ""
        if not more and host:
            hosts.append(host)
    if not hosts:
        return "*"
    return ",".join(hosts) + (f" + {len(rules) - 3} more..." if more else "")


def _ingress_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    return [
        _name(obj), _s(spec.get("ingressClassName")) or "<none>", _ingress_hosts(_l(spec.get("rules"))),
        _lb_ingress(_m(obj, "status"), wide=False), "80, 443" if _l(spec.get("tls")) else "80", _created(obj, now),
    ]


_INGRESS = Printer(
    (
        _NAME,
        Column("Class", "string", "The name of the IngressClass resource that should be used for ingress."),
        Column("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
        Column("Address", "string", "Address is a list containing ingress points for the load-balancer"),
        Column("Ports", "string", "Ports of TLS configurations that open"),
        _AGE,
    ),
    _ingress_row,
)


_NETWORKPOLICY = Printer(
    (
        _NAME,
        Column("Pod-Selector", "string", "podSelector selects the pods to which this NetworkPolicy object applies. The "
               "array of rules is applied to any pods selected by this field. An empty selector matches all pods in "
               "this namespace."),
        _AGE,
    ),
    lambda obj, now: [_name(obj), format_label_selector(_m(obj, "spec").get("podSelector")), _created(obj, now)],
)


def _service_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    cluster_ips = _l(spec.get("clusterIPs"))
    cluster_ip = _s(cluster_ips[0]) if cluster_ips else (_s(spec.get("clusterIP")) or "<none>")
    # The server computes every column with wide=True, so a long load-balancer list is not
    # clipped; upstream does the same.
    return [
        _name(obj), _s(spec.get("type")) or "ClusterIP", cluster_ip,
        service_external_ip(obj, wide=True), service_ports(spec.get("ports")) or "<none>",
        _created(obj, now), format_labels(_m(spec, "selector")),
    ]


_SERVICE = Printer(
    (
        _NAME,
        Column("Type", "string", "How the service is exposed."),
        Column("Cluster-IP", "string", "The IP address of the service inside the cluster."),
        Column("External-IP", "string", "The addresses the service is reachable at from outside."),
        Column("Port(s)", "string", "The ports the service exposes."),
        _AGE,
        Column("Selector", "string", "The labels of the pods the service routes to.", 1),
    ),
    _service_row,
)


def format_endpoints(obj: Mapping[str, Any]) -> str:
    subsets = [s for s in _l(obj.get("subsets")) if isinstance(s, Mapping)]
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    for subset in subsets:
        addresses = [a for a in _l(subset.get("addresses")) if isinstance(a, Mapping)]
        ports = [p for p in _l(subset.get("ports")) if isinstance(p, Mapping)]
        if not ports:
            # A headless service without ports lists bare addresses.
            for addr in addresses:
                shown.append(_s(addr.get("ip")))
                count += 1
            continue
        for port in ports:
            for addr in addresses:
                shown.append(_join_host_port(_s(addr.get("ip")), _i(port.get("port"))))
                count += 1
    text = ",".join(shown[:3])
    if count > 3:
        return f"{text} + {count - 3} more..."
    return text


_ENDPOINTS = Printer(
    (
        _NAME,
        Column("Endpoints", "string", "The addresses and ports behind the service."),
        _AGE,
    ),
    lambda obj, now: [_name(obj), format_endpoints(obj), _created(obj, now)],
)


def _endpoint_slice_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    ports: list[str] = []
    port_count = 0
    for port in _l(obj.get("ports")):
        if not isinstance(port, Mapping):
            continue
        if port.get("port") is not None:
            ports.append(str(_i(port.get("port"))))
        elif port.get("name") is not None:
            ports.append(_s(port.get("name")))
        else:
            ports.append("*")
        port_count += 1
    addresses: list[str] = []
    for ep in _l(obj.get("endpoints")):
        if isinstance(ep, Mapping):
            addresses.extend(_s(a) for a in _l(ep.get("addresses")))
    return [
        _name(obj), _s(obj.get("addressType")), _with_more(ports, port_count),
        _with_more(addresses, len(addresses)), _created(obj, now),
    ]


_ENDPOINT_SLICE = Printer(
    (
        _NAME,
        Column("AddressType", "string", "The type of the addresses in this slice."),
        Column("Ports", "string", "The ports of this slice."),
        Column("Endpoints", "string", "The addresses of this slice."),
        _AGE,
    ),
    _endpoint_slice_row,
)

# --- nodes and namespaces -------------------------------------------------------------------


def node_roles(labels: Mapping[str, Any]) -> list[str]:
    roles: set[str] = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and _s(value):
            roles.add(_s(value))
    return sorted(roles)


def _node_address(status: Mapping[str, Any], type_: str) -> str:
    for addr in _l(status.get("addresses")):
        if isinstance(addr, Mapping) and addr.get("type") == type_:
            return _s(addr.get("address"))
    return "<none>"


def _node_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    status = _m(obj, "status")
    parts: list[str] = []
    # Only the Ready condition speaks for the node; the last one of that type wins.
    ready: Mapping[str, Any] | None = None
    for cond in _l(status.get("conditions")):
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            ready = cond
    if ready is not None:
        parts.append("Ready" if ready.get("status") == "True" else "NotReady")
    else:
        parts.append("Unknown")
    if _m(obj, "spec").get("unschedulable") is True:
        parts.append("SchedulingDisabled")
    info = _m(status, "nodeInfo")
    return [
        _name(obj), ",".join(parts),
        ",".join(node_roles(_m(obj, "metadata", "labels"))) or "<none>",
        _created(obj, now), _s(info.get("kubeletVersion")),
        _node_address(status, "InternalIP"), _node_address(status, "ExternalIP"),
        _s(info.get("osImage")) or "<unknown>",
        _s(info.get("kernelVersion")) or "<unknown>",
        _s(info.get("containerRuntimeVersion")) or "<unknown>",
    ]


_NODE = Printer(
    (
        _NAME,
        Column("Status", "string", "The status of the node"),
        Column("Roles", "string", "The roles of the node"),
        _AGE,
        Column("Version", "string", "The kubelet version the node reports."),
        Column("Internal-IP", "string", "The node's internal address.", 1),
        Column("External-IP", "string", "The node's external address.", 1),
        Column("OS-Image", "string", "The operating system image the node reports.", 1),
        Column("Kernel-Version", "string", "The kernel version the node reports.", 1),
        Column("Container-Runtime", "string", "The container runtime the node reports.", 1),
    ),
    _node_row,
)

_NAMESPACE = Printer(
    (_NAME, Column("Status", "string", "The status of the namespace"), _AGE),
    lambda obj, now: [_name(obj), _s(_m(obj, "status").get("phase")), _created(obj, now)],
)

# --- configuration --------------------------------------------------------------------------

_CONFIGMAP = Printer(
    (_NAME, Column("Data", "string", "The number of keys in data and binaryData."), _AGE),
    lambda obj, now: [
        _name(obj), len(_m(obj, "data")) + len(_m(obj, "binaryData")), _created(obj, now),
    ],
)

_SECRET = Printer(
    (
        _NAME,
        Column("Type", "string", "The type of the secret."),
        Column("Data", "string", "The number of keys in data."),
        _AGE,
    ),
    lambda obj, now: [_name(obj), _s(obj.get("type")), len(_m(obj, "data")), _created(obj, now)],
)

_SERVICE_ACCOUNT = Printer(
    (_NAME, Column("Secrets", "string", "The number of secrets listed by the account."), _AGE),
    lambda obj, now: [_name(obj), len(_l(obj.get("secrets"))), _created(obj, now)],
)

_LEASE = Printer(
    (_NAME, Column("Holder", "string", "The identity holding the lease."), _AGE),
    lambda obj, now: [_name(obj), _s(_m(obj, "spec").get("holderIdentity")), _created(obj, now)],
)


def _hpa_targets(obj: Mapping[str, Any]) -> str:
    """`cpu: 40%/50%`, `<unknown>` for metrics with no reading yet, as upstream prints them."""
    current = {}
    for m in _m(obj, "status").get("currentMetrics") or []:
        res = m.get("resource") if isinstance(m, dict) else None
        if isinstance(res, dict):
            cur = res.get("current") or {}
            value = cur.get("averageUtilization")
            current[res.get("name")] = f"{value}%" if value is not None else str(cur.get("averageValue", "<unknown>"))
    parts = []
    for m in _m(obj, "spec").get("metrics") or []:
        res = m.get("resource") if isinstance(m, dict) else None
        if not isinstance(res, dict):
            parts.append("<unknown>/<unknown>")
            continue
        target = res.get("target") or {}
        want = f"{target['averageUtilization']}%" if "averageUtilization" in target else str(target.get("averageValue", "<unknown>"))
        parts.append(f"{res.get('name')}: {current.get(res.get('name'), '<unknown>')}/{want}")
    return ", ".join(parts) if parts else "<none>"


_HPA = Printer(
    (
        _NAME,
        Column("Reference", "string", "Reference to the target to scale."),
        Column("Targets", "string", "The metrics and their current and target values."),
        Column("MinPods", "string", "The lower limit for the number of pods."),
        Column("MaxPods", "integer", "The upper limit for the number of pods."),
        Column("Replicas", "integer", "Current number of replicas of pods managed by this autoscaler."),
        _AGE,
    ),
    lambda obj, now: [
        _name(obj),
        f"{_m(_m(obj, 'spec'), 'scaleTargetRef').get('kind', '')}/{_m(_m(obj, 'spec'), 'scaleTargetRef').get('name', '')}",
        _hpa_targets(obj),
        str(_m(obj, "spec").get("minReplicas", "<unset>")),
        _m(obj, "spec").get("maxReplicas", 0),
        _m(obj, "status").get("currentReplicas", 0),
        _created(obj, now),
    ],
)


def _resource_quota_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    status = _m(obj, "status")
    hard = _m(status, "hard")
    used = _m(status, "used")
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        pieces = resource.split(".")
        target = limits if len(pieces) > 1 and pieces[0] == "limits" else requests
        target.append(f"{resource}: {_quantity(used.get(resource))}/{_quantity(hard.get(resource))}")
    return [_name(obj), ", ".join(requests), ", ".join(limits), _created(obj, now)]


_RESOURCE_QUOTA = Printer(
    (
        _NAME,
        Column("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
        Column("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
        _AGE,
    ),
    _resource_quota_row,
)

# --- storage --------------------------------------------------------------------------------


def access_modes(modes: Any) -> str:
    """`GetAccessModesAsString`: the short forms in a fixed order, each once."""
    present = {_s(m) for m in _l(modes)}
    order = (
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    )
    return ",".join(short for long, short in order if long in present)


_BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"


def _pv_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    claim = ""
    if isinstance(spec.get("claimRef"), Mapping):
        ref = _m(spec, "claimRef")
        claim = f"{_s(ref.get('namespace'))}/{_s(ref.get('name'))}"
    phase = "Terminating" if _deleting(obj) else _s(_m(obj, "status").get("phase"))
    annotations = _m(obj, "metadata", "annotations")
    storage_class = _s(spec.get("storageClassName")) or _s(annotations.get(_BETA_CLASS_ANNOTATION))
    return [
        _name(obj), _quantity(_m(spec, "capacity").get("storage")), access_modes(spec.get("accessModes")),
        _s(spec.get("persistentVolumeReclaimPolicy")), phase, claim, storage_class,
        _s(spec.get("volumeAttributesClassName")) if spec.get("volumeAttributesClassName") is not None else "<unset>",
        _s(_m(obj, "status").get("reason")), _created(obj, now),
        _s(spec.get("volumeMode")) if spec.get("volumeMode") is not None else "<unset>",
    ]


_PV = Printer(
    (
        _NAME,
        Column("Capacity", "string", "The capacity of the volume."),
        Column("Access Modes", "string", "The ways the volume can be mounted."),
        Column("Reclaim Policy", "string", "What happens to the volume when its claim is released."),
        Column("Status", "string", "The phase of the volume."),
        Column("Claim", "string", "The claim bound to the volume."),
        Column("StorageClass", "string", "StorageClass of the pv"),
        Column("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
        Column("Reason", "string", "Why the volume is in its phase."),
        _AGE,
        Column("VolumeMode", "string", "Whether the volume is a filesystem or a block device.", 1),
    ),
    _pv_row,
)


def _pvc_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    status = _m(obj, "status")
    phase = "Terminating" if _deleting(obj) else _s(status.get("phase"))
    capacity = ""
    modes = ""
    if _s(spec.get("volumeName")):
        modes = access_modes(status.get("accessModes"))
        capacity = _quantity(_m(status, "capacity").get("storage"))
    annotations = _m(obj, "metadata", "annotations")
    # For claims the beta annotation wins over the field, as upstream's helper reads them.
    if _BETA_CLASS_ANNOTATION in annotations:
        storage_class = _s(annotations.get(_BETA_CLASS_ANNOTATION))
    else:
        storage_class = _s(spec.get("storageClassName"))
    return [
        _name(obj), phase, _s(spec.get("volumeName")), capacity, modes, storage_class,
        _s(spec.get("volumeAttributesClassName")) if spec.get("volumeAttributesClassName") is not None else "<unset>",
        _created(obj, now),
        _s(spec.get("volumeMode")) if spec.get("volumeMode") is not None else "<unset>",
    ]


_PVC = Printer(
    (
        _NAME,
        Column("Status", "string", "The phase of the claim."),
        Column("Volume", "string", "The volume bound to the claim."),
        Column("Capacity", "string", "The capacity of the bound volume."),
        Column("Access Modes", "string", "The ways the bound volume can be mounted."),
        Column("StorageClass", "string", "StorageClass of the pvc"),
        Column("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
        _AGE,
        Column("VolumeMode", "string", "Whether the volume is a filesystem or a block device.", 1),
    ),
    _pvc_row,
)


def _storage_class_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    annotations = _m(obj, "metadata", "annotations")
    name = _name(obj)
    if (annotations.get("storageclass.kubernetes.io/is-default-class") == "true"
            or annotations.get("storageclass.beta.kubernetes.io/is-default-class") == "true"):
        name += " (default)"
    expansion = obj.get("allowVolumeExpansion")
    return [
        name, _s(obj.get("provisioner")), _s(obj.get("reclaimPolicy")) or "Delete",
        _s(obj.get("volumeBindingMode")) or "Immediate",
        expansion if isinstance(expansion, bool) else False,
        _created(obj, now),
    ]


_STORAGE_CLASS = Printer(
    (
        _NAME,
        Column("Provisioner", "string", "The volume plugin that provisions volumes of this class."),
        Column("ReclaimPolicy", "string", "The reclaim policy of volumes of this class."),
        Column("VolumeBindingMode", "string", "When volumes of this class are bound."),
        Column("AllowVolumeExpansion", "string", "Whether volumes of this class can grow."),
        _AGE,
    ),
    _storage_class_row,
)

def _priority_class_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), obj.get("value", 0), bool(obj.get("globalDefault")), _created(obj, now),
            _s(obj.get("preemptionPolicy")) or "PreemptLowerPriority"]


_PRIORITY_CLASS = Printer(
    (
        _NAME,
        Column("Value", "integer", "value is the integer value of this priority class."),
        Column("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority."),
        _AGE,
        Column("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority."),
    ),
    _priority_class_row,
)

# --- events ---------------------------------------------------------------------------------


def _event_source(obj: Mapping[str, Any]) -> str:
    source = _m(obj, "source")
    component = _s(source.get("component")) or _s(obj.get("reportingComponent"))
    instance = _s(source.get("host")) or _s(obj.get("reportingInstance"))
    return f"{component}, {instance}" if instance else component


def _core_event(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """An events.k8s.io/v1 Event in core/v1 shape, as upstream converts before printing."""
    if "regarding" not in obj and "note" not in obj and "deprecatedSource" not in obj:
        return obj
    out = dict(obj)
    out["involvedObject"] = obj.get("regarding")
    out["message"] = obj.get("note")
    out["source"] = obj.get("deprecatedSource")
    out["firstTimestamp"] = obj.get("deprecatedFirstTimestamp")
    out["lastTimestamp"] = obj.get("deprecatedLastTimestamp")
    out["count"] = obj.get("deprecatedCount")
    out["reportingComponent"] = obj.get("reportingController")
    return out


def _event_row(raw: Mapping[str, Any], now: datetime) -> list[Any]:
    obj = _core_event(raw)
    first = age(obj.get("firstTimestamp"), now)
    if parse_time(obj.get("firstTimestamp")) is None:
        first = age(obj.get("eventTime"), now)
    last = age(obj.get("lastTimestamp"), now)
    if parse_time(obj.get("lastTimestamp")) is None:
        last = first
    count = _i(obj.get("count"))
    if isinstance(obj.get("series"), Mapping):
        series = _m(obj, "series")
        last = age(series.get("lastObservedTime"), now)
        count = _i(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    involved = _m(obj, "involvedObject")
    kind = _s(involved.get("kind")).lower()
    target = f"{kind}/{_s(involved.get('name'))}" if _s(involved.get("name")) else kind
    return [
        last, _s(obj.get("type")), _s(obj.get("reason")), target,
        _s(involved.get("fieldPath")), _event_source(obj), _s(obj.get("message")).strip(),
        first, count, _name(obj),
    ]


_EVENT = Printer(
    (
        Column("Last Seen", "string", "The time the event was last seen."),
        Column("Type", "string", "The type of the event (Normal, Warning)."),
        Column("Reason", "string", "Why the event happened, in CamelCase."),
        Column("Object", "string", "The object the event is about."),
        Column("Subobject", "string", "The part of the object the event is about.", 1),
        Column("Source", "string", "The component that reported the event.", 1),
        Column("Message", "string", "A human-readable description of the event."),
        Column("First Seen", "string", "The time the event was first seen.", 1),
        Column("Count", "string", "How many times the event has occurred.", 1),
        Column("Name", "string", _NAME_DOC, 1, "name"),
    ),
    _event_row,
)

# --- RBAC -----------------------------------------------------------------------------------


def _binding_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    ref = _m(obj, "roleRef")
    users: list[str] = []
    groups: list[str] = []
    accounts: list[str] = []
    for subject in _l(obj.get("subjects")):
        if not isinstance(subject, Mapping):
            continue
        kind = subject.get("kind")
        if kind == "ServiceAccount":
            accounts.append(f"{_s(subject.get('namespace'))}/{_s(subject.get('name'))}")
        elif kind == "User":
            users.append(_s(subject.get("name")))
        elif kind == "Group":
            groups.append(_s(subject.get("name")))
    return [
        _name(obj), f"{_s(ref.get('kind'))}/{_s(ref.get('name'))}", _created(obj, now),
        ", ".join(users), ", ".join(groups), ", ".join(accounts),
    ]


def _binding_printer(what: str) -> Printer:
    return Printer(
        (
            _NAME,
            Column("Role", "string", "The role the binding grants."),
            _AGE,
            Column("Users", "string", f"Users in the {what}", 1),
            Column("Groups", "string", f"Groups in the {what}", 1),
            Column("ServiceAccounts", "string", f"ServiceAccounts in the {what}", 1),
        ),
        _binding_row,
    )


# --- apiregistration -------------------------------------------------------------------------


def _apiservice_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    service = _m(obj, "spec").get("service")
    where = f"{_s(service.get('namespace'))}/{_s(service.get('name'))}" if isinstance(service, Mapping) else "Local"
    available = "Unknown"
    for cond in _l(_m(obj, "status").get("conditions")):
        if isinstance(cond, Mapping) and cond.get("type") == "Available":
            state, reason = _s(cond.get("status")), _s(cond.get("reason"))
            available = f"{state} ({reason})" if state != "True" and reason else state
            break
    return [_name(obj), where, available, _created(obj, now)]


_APISERVICE = Printer(
    (
        _NAME,
        Column("Service", "string", "The reference to the service that hosts this API endpoint."),
        Column("Available", "string", "Whether this service is available."),
        _AGE,
    ),
    _apiservice_row,
)


# --- admissionregistration ------------------------------------------------------------------

_WEBHOOKS = Printer(
    (_NAME, Column("Webhooks", "integer", "Webhooks indicates the number of webhooks registered in this configuration"),
     _AGE),
    lambda obj, now: [_name(obj), len(_l(obj.get("webhooks"))), _created(obj, now)],
)


def _param_kind(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    kind = spec.get("paramKind")
    shown = f"{_s(kind.get('apiVersion'))}/{_s(kind.get('kind'))}" if isinstance(kind, Mapping) else "<unset>"
    return [_name(obj), len(_l(spec.get("validations"))), shown, _created(obj, now)]


def _param_ref(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = _m(obj, "spec")
    ref = spec.get("paramRef")
    shown = "<unset>"
    if isinstance(ref, Mapping):
        where = _s(ref.get("name")) or "*"
        shown = f"{_s(ref.get('namespace'))}/{where}" if ref.get("namespace") else where
    return [_name(obj), _s(spec.get("policyName")), shown, _created(obj, now)]


_ADMISSION_POLICY = Printer(
    (_NAME, Column("Validations", "integer", "Validations indicates the number of validation rules defined in this configuration"),
     Column("ParamKind", "string", "ParamKind specifies the kind of resources used to parameterize this policy"), _AGE),
    _param_kind,
)
_ADMISSION_POLICY_BINDING = Printer(
    (_NAME, Column("PolicyName", "string", "PolicyName indicates the policy definition which the policy binding binded to"),
     Column("ParamRef", "string", "ParamRef indicates the param resource which sets the configration param"), _AGE),
    _param_ref,
)


# --- registry of printers -------------------------------------------------------------------

PRINTERS: Mapping[str, Printer] = {
    "Pod": _POD,
    "Deployment.apps": _DEPLOYMENT,
    "ReplicaSet.apps": _REPLICASET,
    "ReplicationController": _REPLICATION_CONTROLLER,
    "DaemonSet.apps": _DAEMONSET,
    "StatefulSet.apps": _STATEFULSET,
    "ControllerRevision.apps": _CONTROLLER_REVISION,
    "Job.batch": _JOB,
    "CronJob.batch": _CRONJOB,
    "Service": _SERVICE,
    "Endpoints": _ENDPOINTS,
    "EndpointSlice.discovery.k8s.io": _ENDPOINT_SLICE,
    "Node": _NODE,
    "Namespace": _NAMESPACE,
    "ConfigMap": _CONFIGMAP,
    "Secret": _SECRET,
    "ServiceAccount": _SERVICE_ACCOUNT,
    "Event": _EVENT,
    "Event.events.k8s.io": _EVENT,
    "Lease.coordination.k8s.io": _LEASE,
    "HorizontalPodAutoscaler.autoscaling": _HPA,
    "ResourceQuota": _RESOURCE_QUOTA,
    "PersistentVolume": _PV,
    "PersistentVolumeClaim": _PVC,
    "StorageClass.storage.k8s.io": _STORAGE_CLASS,
    "PriorityClass.scheduling.k8s.io": _PRIORITY_CLASS,
    "APIService.apiregistration.k8s.io": _APISERVICE,
    "ValidatingWebhookConfiguration.admissionregistration.k8s.io": _WEBHOOKS,
    "MutatingWebhookConfiguration.admissionregistration.k8s.io": _WEBHOOKS,
    "ValidatingAdmissionPolicy.admissionregistration.k8s.io": _ADMISSION_POLICY,
    "ValidatingAdmissionPolicyBinding.admissionregistration.k8s.io": _ADMISSION_POLICY_BINDING,
    "Ingress.networking.k8s.io": _INGRESS,
    "NetworkPolicy.networking.k8s.io": _NETWORKPOLICY,
    "RoleBinding.rbac.authorization.k8s.io": _binding_printer("roleBinding"),
    "ClusterRoleBinding.rbac.authorization.k8s.io": _binding_printer("clusterRoleBinding"),
}


def _default_row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    created = parse_time(_m(obj, "metadata").get("creationTimestamp"))
    text = _GO_ZERO_TIME if created is None else created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [_name(obj), text]


DEFAULT_PRINTER = Printer(DEFAULT_COLUMNS, _default_row)


def printer_for(gk: str) -> Printer:
    return PRINTERS.get(gk, DEFAULT_PRINTER)


def printer_for_info(info: resources.ResourceInfo) -> Printer | None:
    """A custom kind's printer from its CRD's additionalPrinterColumns (None: by kind)."""
    if info.custom is None or not info.custom.printer_columns:
        return None
    return custom_printer(info.custom.printer_columns)


def custom_printer(columns: Sequence[Mapping[str, Any]]) -> Printer:
    """NAME, then the CRD's columns, as upstream's CRD table convertor prints them."""
    cols = [_NAME]
    for c in columns:
        ctype = str(c.get("type", "string"))
        cols.append(Column(str(c.get("name", "")), ctype, str(c.get("description", "")),
                           int(c.get("priority", 0) or 0), str(c.get("format", ""))))
    specs = [dict(c) for c in columns]

    def row(obj: Mapping[str, Any], now: datetime) -> list[Any]:
        cells: list[Any] = [_name(obj)]
        for spec in specs:
            value = crds.printer_cell(dict(obj), spec, now)
            if spec.get("type") == "date" and isinstance(value, str):
                when = parse_time(value)
                value = human_duration(now - when) if when is not None else value
            cells.append(value)
        return cells

    return Printer(tuple(cols), row)


# --- the table ------------------------------------------------------------------------------


def _row_object(obj: Mapping[str, Any], include_object: str) -> JSON | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        return dict(obj)
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(_m(obj, "metadata")),
    }


def _table_metadata(objs: Sequence[Mapping[str, Any]], list_meta: Mapping[str, Any] | None) -> JSON:
    out: JSON = {}
    if list_meta is not None:
        for key in ("resourceVersion", "continue", "remainingItemCount"):
            if list_meta.get(key) not in (None, ""):
                out[key] = list_meta[key]
    elif len(objs) == 1:
        # A table of one object (GET, or a watch event) carries that object's version.
        rv = _m(objs[0], "metadata").get("resourceVersion")
        if isinstance(rv, str) and rv:
            out["resourceVersion"] = rv
    return out


def to_table(
    gk: str,
    objs: Sequence[Mapping[str, Any]],
    *,
    include_object: str = "Metadata",
    now: datetime | None = None,
    list_meta: Mapping[str, Any] | None = None,
    with_columns: bool = True,
    printer: Printer | None = None,
) -> dict[str, Any]:
    """A `meta.k8s.io/v1` Table of `objs` (all of kind `gk`, e.g. "Pod", "Deployment.apps").

    Raises a 400 APIError when `include_object` is not one of None, Metadata, Object.
    """
    check_include_object(include_object)
    when = now if now is not None else datetime.now(UTC)
    if printer is None:
        printer = printer_for(gk)
    return {
        **table_head(objs, printer=printer, list_meta=list_meta, with_columns=with_columns),
        "rows": [row(obj, printer=printer, when=when, include_object=include_object) for obj in objs],
    }


def check_include_object(include_object: str) -> None:
    """A 400 APIError when `include_object` is not one of None, Metadata, Object."""
    if include_object not in INCLUDE_OBJECT_VALUES:
        raise errors.bad_request(
            f'includeObject: Unsupported value: "{include_object}": supported values: '
            '"Metadata", "None", "Object"'
        )


def table_head(objs: Sequence[Mapping[str, Any]], *, printer: Printer, list_meta: Mapping[str, Any] | None,
               with_columns: bool = True) -> JSON:
    """A Table without its `rows` (which come last in it): for a list encoded row by row."""
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": _table_metadata(objs, list_meta),
        "columnDefinitions": [c.definition() for c in printer.columns] if with_columns else None,
    }


def row(obj: Mapping[str, Any], *, printer: Printer, when: datetime, include_object: str) -> JSON:
    """One Table row of `obj` (pure: may run off the event loop)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    out: JSON = {"cells": printer.row(obj, when)}
    if printer is _POD:
        conditions = _pod_conditions(obj)
        if conditions:
            out["conditions"] = conditions
    out["object"] = _row_object(obj, include_object)
    return out
