"""A pod's status from what the runtime reports, as upstream's kubelet computes it
(generateAPIPodStatus, convertToAPIContainerStatuses, getPhase, the status generators of
pkg/kubelet/status). Pure functions: the pod worker gathers the facts, this turns them into the
`status` the API gets.

Container statuses. Per container of the spec, from its newest runtime container (highest
attempt) and the one before:
- running: `running.startedAt`; created but not started: waiting `ContainerCreating`;
- exited: `terminated` with exitCode, reason (Completed, Error, OOMKilled, or
  ContainerStatusUnknown with exit code 137 for an exit that happened while edgekube was down),
  the termination message, startedAt, finishedAt, containerID;
- a container that will be restarted and could not be this time (back-off, image pull, config
  error) shows `waiting` with that reason and message, its last run moving to `lastState`;
- none yet: waiting `ContainerCreating` (`PodInitializing` in a pod with init containers),
  keeping restartCount and lastState from the previous status (a container removed while the
  pod lived), or a terminated state from the previous status as is; one that was running and is
  gone without a trace (a reboot took it with runc's state in /run) gets upstream's inferred
  `lastState.terminated` (ContainerStatusUnknown, exit code 137) and, unless the pod is being
  deleted, one more restart;
- `lastState` is the run before the newest; `restartCount` the newest container's attempt;
  `started` is running and past its startup probe; `ready` is started and past its readiness
  probe for containers and sidecars (see `probes`), "completed with 0" for other init
  containers; `imageID` the image's repo digest; `containerID` `runc://<id>`.

Phase (getPhase): Pending while an init container has not completed (Failed when one failed
under restartPolicy Never), or while a container waits for its first start; Running while one
runs or is being restarted; once all have stopped, Succeeded when every one exited 0 (and the
policy does not restart them), Failed under Never otherwise; a pod being deleted (`terminal`)
ends Succeeded or Failed from its exit codes whatever the policy.

Conditions: PodReadyToStartContainers (the sandbox exists), Initialized (`containers with
incomplete status: [...]`), ContainersReady and Ready (`containers with unready status: [...]`,
PodCompleted once Succeeded), with lastTransitionTime kept while a condition's status holds.
PodScheduled and other writers' conditions are left to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from edgekube._cogs import clock as clock_mod
from edgekube.kubelet.runtime import containers as containers_mod

JSON = dict[str, Any]
RUNTIME = "runc"
OURS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
UNKNOWN_EXIT = 137
LOST_MESSAGE = "The container could not be located when the pod was deleted.  The container used to be Running"


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the worker knows about one container of the spec."""

    latest: containers_mod.ContainerStatus | None = None
    previous: containers_mod.ContainerStatus | None = None
    waiting: tuple[str, str] | None = None  # (reason, message) of the last attempt to start it
    messages: Mapping[str, str] = dataclasses.field(default_factory=dict)  # container id -> termination message
    will_restart: bool = False
    # What the probes say of the newest run while it runs (see `probes`): started (its startup
    # probe succeeded, or it has none) and ready (started, and its readiness probe succeeded).
    started: bool = True
    ready: bool = True


def container_id(cid: str) -> str:
    return f"{RUNTIME}://{cid}"


def _time(t: Any) -> str | None:
    return clock_mod.rfc3339(t) if t is not None else None


def _state(cs: containers_mod.ContainerStatus, message: str = "") -> JSON:
    if cs.state == containers_mod.RUNNING or cs.state == containers_mod.PAUSED:
        return {"running": {"startedAt": _time(cs.started_at or cs.created_at)}}
    if cs.state == containers_mod.CREATED:
        return {"waiting": {"reason": "ContainerCreating"}}
    term: JSON = {"exitCode": cs.exit_code if cs.exit_code is not None else UNKNOWN_EXIT,
                  "reason": cs.reason or "Error"}
    if cs.exit_code is None and not cs.oom_killed:
        term["message"] = "The container could not be located when the pod was terminated"
    elif message:
        term["message"] = message
    term["startedAt"] = _time(cs.started_at)
    term["finishedAt"] = _time(cs.finished_at)
    term["containerID"] = container_id(cs.id)
    return {"terminated": term}


def container_status(container: Mapping[str, Any], obs: Observed, *, old: Mapping[str, Any] | None,
                     default_waiting: str, init: bool, deleting: bool = False) -> JSON:
    name = str(container.get("name"))
    image = str(container.get("image") or "")
    latest = obs.latest
    if latest is None:
        old = old or {}
        if (old.get("state") or {}).get("terminated") and obs.waiting is None:
            return dict(old)
        out: JSON = {"name": name, "state": {"waiting": {"reason": default_waiting}},
                     "lastState": dict(old.get("lastState") or {}), "ready": False,
                     "restartCount": int(old.get("restartCount") or 0), "image": image,
                     "imageID": str(old.get("imageID") or ""), "started": False}
        if "running" in (old.get("state") or {}):
            # It ran, and is gone without a trace (a reboot or a power cut took it with the
            # runtime's state): it terminated, how is unknown, as upstream's kubelet infers
            # (before a waiting reason replaces the state, which keeps these). Upstream skips
            # this when the old status already has a terminated lastState, so a node whose
            # runtime keeps no history counts the first of many power cuts only; each one
            # counts here (written once: the status written next no longer shows it running).
            terminated: JSON = {"exitCode": UNKNOWN_EXIT, "reason": "ContainerStatusUnknown", "message": LOST_MESSAGE}
            if old.get("containerID"):
                terminated["containerID"] = old["containerID"]
            out["lastState"] = {"terminated": terminated}
            if not deleting:
                out["restartCount"] += 1
        elif old.get("containerID"):
            # Its last run (attempt restartCount) is gone too, but was counted already (it had
            # exited, or waited in back-off): the id stays, so that the next run is the next attempt.
            out["containerID"] = old["containerID"]
        if obs.waiting is not None:
            out["state"] = {"waiting": _waiting(*obs.waiting)}
        return out
    state = _state(latest, obs.messages.get(latest.id, ""))
    # The run before, from the runtime; when the runtime has none left (lost with a reboot),
    # what the API last showed, as upstream keeps the old status's lastState.
    last: JSON = _state(obs.previous, obs.messages.get(obs.previous.id, "")) if obs.previous is not None else (
        dict((old or {}).get("lastState") or {}) if latest.attempt > 0 else {})
    if obs.will_restart and "terminated" in state and obs.waiting is not None:
        last = state
        state = {"waiting": _waiting(*obs.waiting)}
    running = "running" in state
    terminated = state.get("terminated") or {}
    ready = (terminated.get("exitCode") == 0 and "terminated" in state) if init and \
        container.get("restartPolicy") != "Always" else running and obs.ready
    return {
        "name": name, "state": state, "lastState": last, "ready": bool(ready), "restartCount": latest.attempt,
        "image": image, "imageID": latest.annotations.get(ANNOTATION_IMAGE_ID, ""),
        "containerID": container_id(latest.id), "started": running and obs.started,
    }


ANNOTATION_IMAGE_ID = "edgekube.io/image-id"
ANNOTATION_IMAGE = "edgekube.io/image"


def _waiting(reason: str, message: str) -> JSON:
    return {"reason": reason, "message": message} if message else {"reason": reason}


# --- phase ------------------------------------------------------------------------------------


def is_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def _has_run(status: Mapping[str, Any]) -> bool:
    state = status.get("state") or {}
    return "running" in state or "terminated" in state or bool((status.get("lastState") or {}).get("terminated"))


def init_done(spec: Mapping[str, Any], statuses: Mapping[str, JSON],
              regular: Mapping[str, JSON] | None = None) -> tuple[bool, bool, list[str]]:
    """(every init container done, one failed for good under Never..., names not done). Once a
    regular container has run (`regular`: their statuses), the pod stays initialized whatever its
    sidecars do next, as upstream's podHasInitialized: a restarting sidecar, or one whose
    startup probe starts over after an edgekube restart, does not send it back to Pending."""
    if regular and any(_has_run(s) for s in regular.values()):
        return True, False, []
    pending: list[str] = []
    failed = False
    for c in spec.get("initContainers") or []:
        st = statuses.get(str(c.get("name"))) or {}
        state = st.get("state") or {}
        if is_sidecar(c):
            if not st.get("started"):
                pending.append(str(c.get("name")))
            continue
        term = state.get("terminated")
        if term is not None and term.get("exitCode") == 0:
            continue
        pending.append(str(c.get("name")))
        last = (st.get("lastState") or {}).get("terminated")
        if (term is not None and term.get("exitCode") != 0) or (state.get("waiting") is not None and last
                                                                 and last.get("exitCode") != 0):
            failed = True
    return not pending, failed, pending


def phase(pod: Mapping[str, Any], init_statuses: Mapping[str, JSON], statuses: Mapping[str, JSON], *,
          terminal: bool = False) -> str:
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy") or "Always"
    done, failed, _ = init_done(spec, init_statuses, statuses)
    if failed and policy == "Never":
        return "Failed"
    if not done:
        if terminal:
            return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for c in spec.get("containers") or []:
        st = statuses.get(str(c.get("name"))) or {}
        state = st.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif (st.get("lastState") or {}).get("terminated") is not None:
            stopped += 1
            if terminal and st["lastState"]["terminated"].get("exitCode") == 0:
                succeeded += 1
        else:
            waiting += 1
    if terminal:
        if running:
            return "Running"
        return "Succeeded" if stopped and stopped == succeeded and not waiting else "Failed"
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


# --- conditions -------------------------------------------------------------------------------


def _cond(kind: str, ok: bool, *, reason: str = "", message: str = "", now: str,
          previous: Mapping[str, Mapping[str, Any]]) -> JSON:
    status = "True" if ok else "False"
    old = previous.get(kind) or {}
    since = old.get("lastTransitionTime") if old.get("status") == status and old.get("lastTransitionTime") else now
    out: JSON = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def conditions(pod: Mapping[str, Any], init_statuses: Mapping[str, JSON], statuses: Mapping[str, JSON], *,
               pod_phase: str, sandbox_ready: bool, now: str, previous: Sequence[Mapping[str, Any]]) -> list[JSON]:
    spec = pod.get("spec") or {}
    prev = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    done, _, pending = init_done(spec, init_statuses, statuses)
    out = [_cond("PodReadyToStartContainers", sandbox_ready, now=now, previous=prev)]
    if done or pod_phase == "Succeeded":
        out.append(_cond("Initialized", True, reason="PodCompleted" if pod_phase == "Succeeded" and not done else "",
                         now=now, previous=prev))
    else:
        out.append(_cond("Initialized", False, reason="ContainersNotInitialized",
                         message=f"containers with incomplete status: [{' '.join(pending)}]", now=now, previous=prev))
    unready = [str(c.get("name")) for c in spec.get("containers") or []
               if not (statuses.get(str(c.get("name"))) or {}).get("ready")]
    unready += [str(c.get("name")) for c in spec.get("initContainers") or []
                if is_sidecar(c) and not (init_statuses.get(str(c.get("name"))) or {}).get("ready")]
    if pod_phase == "Succeeded":
        ready, reason, message = False, "PodCompleted", ""
    elif unready:
        ready, reason, message = False, "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    else:
        ready, reason, message = True, "", ""
    out.append(_cond("ContainersReady", ready, reason=reason, message=message, now=now, previous=prev))
    gates = [str(g.get("conditionType")) for g in spec.get("readinessGates") or [] if isinstance(g, Mapping)]
    if ready and gates:
        have = {str(c.get("type")): c.get("status") for c in ((pod.get("status") or {}).get("conditions") or [])
                if isinstance(c, Mapping)}
        missing = [g for g in gates if have.get(g) != "True"]
        if missing:
            out.append(_cond("Ready", False, reason="ReadinessGatesNotReady",
                             message=f"corresponding condition of pod readiness gate \"{missing[0]}\" does not exist."
                             if missing[0] not in have else
                             f"the status of pod readiness gate \"{missing[0]}\" is not \"True\", but {have[missing[0]]}",
                             now=now, previous=prev))
            return out
    out.append(_cond("Ready", ready, reason=reason, message=message, now=now, previous=prev))
    return out


def gates(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The status of each of the pod's readiness gates' conditions (None: not there)."""
    names = [str(g.get("conditionType")) for g in (pod.get("spec") or {}).get("readinessGates") or []
             if isinstance(g, Mapping)]
    if not names:
        return {}
    have = {str(c.get("type")): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []
            if isinstance(c, Mapping)}
    return {n: have.get(n) for n in names}


def merge_conditions(current: Sequence[Mapping[str, Any]], ours: Sequence[JSON]) -> list[JSON]:
    """The API's conditions with ours put in (others' kept, in their places)."""
    mine = {c["type"]: c for c in ours}
    out: list[JSON] = []
    for c in current:
        if isinstance(c, Mapping) and c.get("type") in mine:
            out.append(mine.pop(str(c["type"])))
        elif isinstance(c, Mapping):
            out.append(dict(c))
    out.extend(mine.values())
    return out


def ours(status: Mapping[str, Any]) -> JSON:
    """The part of a pod status the kubelet writes (to compare what is there with what is due)."""
    out = {k: status.get(k) for k in ("phase", "hostIP", "hostIPs", "podIP", "podIPs", "startTime",
                                       "containerStatuses", "initContainerStatuses")}
    out["conditions"] = sorted((dict(c) for c in status.get("conditions") or []
                                if isinstance(c, Mapping) and c.get("type") in OURS), key=lambda c: str(c["type"]))
    if not out.get("initContainerStatuses"):
        out.pop("initContainerStatuses", None)
    return out
