"""Jobs and CronJobs end to end: real kubectl 1.36, a real server, the scheduler and a test node
whose pods exit with the code their annotation asks for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support.testnode import PREFIX, NodeProcess
from tests.support.waiting import fresh_namespace
from tests.support.waiting import until as _until

pytestmark = pytest.mark.e2e

TRACKING = "batch.kubernetes.io/job-tracking"


@pytest.fixture
def k(server: Server, test_node: NodeProcess, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(server, request)


def _job(name: str, *, exit_code: int | None = 0, restart: str = "Never", annotations: dict[str, str] | None = None,
         **spec: Any) -> str:
    pod_annotations = dict(annotations or {})
    if exit_code is not None:
        pod_annotations[PREFIX + "exit-code"] = str(exit_code)
    return json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {**spec, "template": {
            "metadata": {"annotations": pod_annotations},
            "spec": {"restartPolicy": restart, "containers": [{"name": "work", "image": "busybox:1.36"}]}}},
    })


def _pods(k: Kubectl, job: str) -> list[dict[str, Any]]:
    return list(k.json("get", "pods", "-l", f"batch.kubernetes.io/job-name={job}")["items"])


def _conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in job.get("status", {}).get("conditions", [])}


def _events(k: Kubectl, name: str) -> list[dict[str, Any]]:
    return [e for e in k.json("get", "events")["items"] if e["involvedObject"].get("name") == name]


def _event(k: Kubectl, name: str, reason: str) -> list[dict[str, Any]]:
    return _until(lambda: [e for e in _events(k, name) if e["reason"] == reason], timeout=30, what=f"event {reason}")


def test_job_with_completions_and_parallelism_runs_to_complete(k: Kubectl) -> None:
    k.run("create", "-f", "-", input=_job("batch", completions=3, parallelism=2))
    k.run("wait", "--for=condition=complete", "job/batch", "--timeout=90s")
    job = k.json("get", "job", "batch")
    status = job["status"]
    assert status["succeeded"] == 3 and "failed" not in status and "active" not in status
    assert status["ready"] == 0 and status["terminating"] == 0
    assert status["startTime"] <= status["completionTime"]
    conds = _conditions(job)
    for kind in ("SuccessCriteriaMet", "Complete"):
        assert conds[kind]["status"] == "True"
        assert conds[kind]["reason"] == "CompletionsReached"
        assert conds[kind]["message"] == "Reached expected number of succeeded pods"
    # exactly three pods ever ran: a burst of pod events never made extra ones
    pods = _pods(k, "batch")
    assert len(pods) == 3
    uid = job["metadata"]["uid"]
    for pod in pods:
        meta = pod["metadata"]
        assert meta["name"].startswith("batch-") and meta["generateName"] == "batch-"
        assert meta["labels"]["batch.kubernetes.io/controller-uid"] == uid
        assert meta["labels"]["controller-uid"] == uid
        assert meta["labels"]["batch.kubernetes.io/job-name"] == "batch" and meta["labels"]["job-name"] == "batch"
        [ref] = meta["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Job", "batch", uid, True)
        assert TRACKING not in meta.get("finalizers", [])  # counted, then released
        assert pod["status"]["phase"] == "Succeeded"
    created = _event(k, "batch", "SuccessfulCreate")
    assert {e["message"] for e in created} == {f"Created pod: {p['metadata']['name']}" for p in pods}
    [done] = _event(k, "batch", "Completed")
    assert done["message"] == "Job completed" and done["source"]["component"] == "job-controller"
    table = k.out("get", "job", "batch")
    assert "3/3" in table and "Complete" in table


def test_a_job_without_completions_finishes_on_the_first_success(k: Kubectl) -> None:
    k.run("create", "-f", "-", input=_job("queue", parallelism=2))
    k.run("wait", "--for=condition=complete", "job/queue", "--timeout=90s")
    job = k.json("get", "job", "queue")
    assert "completions" not in job["spec"]
    assert job["status"]["succeeded"] >= 1
    assert len(_pods(k, "queue")) == 2  # parallelism, never replaced after a success


def test_failing_job_hits_its_backoff_limit(k: Kubectl) -> None:
    # backoffLimit 1: the second failed pod (after the 10 s pod backoff) fails the Job
    k.run("create", "-f", "-", input=_job("crash", exit_code=1, backoffLimit=1))
    k.run("wait", "--for=condition=failed", "job/crash", "--timeout=120s")
    job = k.json("get", "job", "crash")
    assert job["status"]["failed"] == 2 and "succeeded" not in job["status"]
    assert "completionTime" not in job["status"]
    conds = _conditions(job)
    for kind in ("FailureTarget", "Failed"):
        assert conds[kind]["reason"] == "BackoffLimitExceeded"
        assert conds[kind]["message"] == "Job has reached the specified backoff limit"
    assert "Complete" not in conds
    pods = _pods(k, "crash")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    assert all(TRACKING not in p["metadata"].get("finalizers", []) for p in pods)
    [ev] = _event(k, "crash", "BackoffLimitExceeded")
    assert ev["type"] == "Warning" and ev["message"] == "Job has reached the specified backoff limit"


def test_active_deadline_stops_a_job_that_runs_too_long(k: Kubectl) -> None:
    # no exit code: the pods run until they are stopped
    k.run("create", "-f", "-", input=_job("slow", exit_code=None, parallelism=2, completions=2,
                                          activeDeadlineSeconds=3))
    k.run("wait", "--for=condition=failed", "job/slow", "--timeout=90s")
    job = k.json("get", "job", "slow")
    assert _conditions(job)["Failed"]["reason"] == "DeadlineExceeded"
    assert _conditions(job)["Failed"]["message"] == "Job was active longer than specified deadline"
    assert job["status"]["failed"] == 2 and "active" not in job["status"]
    _until(lambda: not _pods(k, "slow"), what="the running pods deleted")
    [ev] = _event(k, "slow", "DeadlineExceeded")
    assert ev["type"] == "Warning"
    assert len(_event(k, "slow", "SuccessfulDelete")) == 2


def test_indexed_job_reports_completed_indexes(k: Kubectl) -> None:
    k.run("create", "-f", "-", input=_job("idx", completions=4, parallelism=2, completionMode="Indexed"))
    k.run("wait", "--for=condition=complete", "job/idx", "--timeout=90s")
    job = k.json("get", "job", "idx")
    assert job["status"]["completedIndexes"] == "0-3"
    assert job["status"]["succeeded"] == 4
    pods = _pods(k, "idx")
    assert len(pods) == 4
    seen = set()
    for pod in pods:
        ix = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == ix
        assert pod["metadata"]["generateName"] == f"idx-{ix}-"
        assert pod["spec"]["hostname"] == f"idx-{ix}"
        [env] = [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
        assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-completion-index']"
        seen.add(int(ix))
    assert seen == {0, 1, 2, 3}


def test_suspended_job_starts_when_resumed(k: Kubectl) -> None:
    k.run("create", "-f", "-", input=_job("later", suspend=True))
    job = _until(lambda: _conditions(k.json("get", "job", "later")).get("Suspended") and k.json("get", "job", "later"),
                 what="Suspended condition")
    cond = _conditions(job)["Suspended"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "JobSuspended", "Job suspended")
    assert "startTime" not in job["status"]
    assert _pods(k, "later") == []
    k.run("patch", "job", "later", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    k.run("wait", "--for=condition=complete", "job/later", "--timeout=90s")
    cond = _conditions(k.json("get", "job", "later"))["Suspended"]
    assert (cond["status"], cond["reason"]) == ("False", "JobResumed")
    assert _event(k, "later", "Resumed")[0]["message"] == "Job resumed"


def test_ttl_after_finished_deletes_the_job_and_its_pods(k: Kubectl) -> None:
    k.run("create", "-f", "-", input=_job("brief", ttlSecondsAfterFinished=2))
    _until(lambda: k.run("get", "job", "brief", check=False).returncode != 0, what="the Job deleted after its TTL")
    _until(lambda: not _pods(k, "brief"), what="its pods deleted")


def test_create_job_from_cronjob(k: Kubectl) -> None:
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 1 1 *", "jobTemplate": {"spec": {"template": {
            "metadata": {"annotations": {PREFIX + "exit-code": "0"}},
            "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "work", "image": "busybox:1.36"}]}}}}},
    }
    k.run("create", "-f", "-", input=json.dumps(cronjob))
    assert "job.batch/by-hand created" in k.out("create", "job", "by-hand", "--from=cronjob/nightly")
    k.run("wait", "--for=condition=complete", "job/by-hand", "--timeout=90s")
    job = k.json("get", "job", "by-hand")
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    [ref] = job["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"]) == ("CronJob", "nightly")
    # the CronJob controller sees a Job it did not start: it says so and does not track it
    [ev] = _event(k, "nightly", "UnexpectedJob")
    assert ev["message"] == "Saw a job that the controller did not create or forgot: by-hand"
    assert not k.json("get", "cronjob", "nightly").get("status", {}).get("active")
    # deleting the CronJob takes its Jobs along
    k.run("delete", "cronjob", "nightly")
    _until(lambda: k.run("get", "job", "by-hand", check=False).returncode != 0, what="the Job collected")
