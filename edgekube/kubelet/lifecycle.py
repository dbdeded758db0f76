"""Container lifecycle hooks (postStart, preStop), run as upstream's handler runner
(pkg/kubelet/lifecycle/handlers.go) runs them; when they run is the pod worker's (`pods`):
postStart right after the container started, before it counts as started; preStop before
SIGTERM, within the grace period.

- **exec**: the command in the container (`runc exec`), no time limit of its own; any exit code
  but 0 fails it.
- **httpGet**: a GET to the pod (see `actions`, User-Agent `kube-lifecycle/<major>.<minor>`);
  any HTTP response succeeds, whatever its status, as upstream; only a failed connection fails.
- **sleep**: waits `seconds`.
- **tcpSocket** is accepted by the API for old objects but, as upstream, never run: it fails.

A failure returns upstream's message (`Exec lifecycle hook ([cmd]) for Container "c" in Pod
"p" failed - error: ..., message: "..."`), which the pod worker puts in its FailedPostStartHook
or FailedPreStopHook event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from edgekube.kubelet import actions
from edgekube.kubelet.runtime import runc as runc_mod


async def run(hook: Mapping[str, Any], target: actions.Target, *, runtime: actions.Exec, pod: str) -> str | None:
    """Run one hook to its end; None when it succeeded, else why not. `pod` names the pod as
    upstream's messages do (`name_namespace(uid)`)."""
    where = f'for Container "{target.container.get("name")}" in Pod "{pod}" failed'
    if isinstance(hook.get("exec"), Mapping):
        command = [str(a) for a in hook["exec"].get("command") or []]
        try:
            done = await runtime.exec(target.cid, command, time_limit=None, limit=actions.OUTPUT_LIMIT)
        except (runc_mod.RuncError, OSError) as exc:
            error, output = str(exc), ""
        else:
            if done.exit_code == 0:
                return None
            error, output = f"command '{' '.join(command)}' exited with {done.exit_code}: ", \
                done.output.decode(errors="replace")
        return f"Exec lifecycle hook ([{' '.join(command)}]) {where} - error: {error}, message: {json.dumps(output)}"
    if isinstance(hook.get("httpGet"), Mapping):
        action = hook["httpGet"]
        try:
            outcome = await actions.http_get(action, target, time_limit=None, purpose="lifecycle")
        except actions.ActionError as exc:
            outcome = actions.Outcome(actions.FAILURE, str(exc))
        if outcome.result != actions.FAILURE:
            return None
        return f'Http lifecycle hook ({action.get("path") or ""}) {where} - error: {outcome.output}, message: ""'
    if isinstance(hook.get("sleep"), Mapping):
        seconds = hook["sleep"].get("seconds")
        await asyncio.sleep(seconds if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0 else 0)
        return None
    kind = next(iter(hook), "none")
    return f"Cannot run handler: invalid handler: {kind} is not a lifecycle handler this kubelet runs"
