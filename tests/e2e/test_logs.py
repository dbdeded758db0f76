"""`kubectl logs` end to end: real kubectl 1.36 against `edgekube server`, every flag of issue 5's
Logs section, rotation, following, and upstream's error messages.

The server runs without its kubelet, with a config file that puts the pod log dir (and the
rotation settings) under the test's temp dir. The tests play the kubelet's part, as a kubelet
would: pods are bound to a node name, their status (restartCount, running or terminated state,
lastState) is set through the status subresource, and their CRI log files are written where the
kubelet writes them (`<pod-log-dir>/<ns>_<pod>_<uid>/<container>/<restart>.log`) with the
kubelet's own writer (`crilog.LogFile`, rotating with the policy read from the server's config).
The last tests run the real thing once: a server with its kubelet on, real runc containers
from a busybox-static image in a registry on 127.0.0.1 (as test_kubelet.py), followed to their
end, restarted for `--previous`; those need root, runc, umoci, skopeo and docker-registry.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekube import config as config_mod
from edgekube.kubelet import logrotate, logs
from edgekube.kubelet.runtime import crilog
from tests.conftest import Server
from tests.e2e.test_kubectl import Kubectl
from tests.support import images as ti
from tests.support.kubelet import KubeletServer
from tests.support.waiting import fresh_namespace, until

pytestmark = pytest.mark.e2e

NODE = "edge-1"
SECOND = 1_000_000_000


class LogServer:
    def __init__(self, root: Path) -> None:
        self.log_dir = root / "pod-logs"
        self.config_file = root / "config.yaml"
        self.config_file.write_text(yaml.safe_dump({"kubelet": {
            "pod-log-dir": str(self.log_dir), "container-log-max-size": "2Ki", "container-log-max-files": 3}}))
        settings = config_mod.load(config_file=self.config_file).kubelet
        self.rotation = logrotate.from_settings(max_size=settings.container_log_max_size,
                                                max_files=settings.container_log_max_files)
        self.server = Server(root / "data", extra=["--config", str(self.config_file)])


@pytest.fixture(scope="module")
def log_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogServer]:
    ls = LogServer(tmp_path_factory.mktemp("logs"))
    ls.server.start()
    try:
        yield ls
    finally:
        ls.server.close()


class Kubelet:
    """The kubelet's part for the test's pods: bind, report status, write CRI logs."""

    def __init__(self, k: Kubectl, ls: LogServer) -> None:
        self.k = k
        self.ls = ls
        self.files: list[crilog.LogFile] = []

    def pod(self, name: str, *, containers: tuple[str, ...] = ("app",), init: tuple[str, ...] = (),
            labels: dict[str, str] | None = None, node: str | None = NODE) -> str:
        spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox"} for c in containers]}
        if init:
            spec["initContainers"] = [{"name": c, "image": "busybox"} for c in init]
        if node:
            spec["nodeName"] = node
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}
        self.k.run("apply", "-f", "-", input=json.dumps(pod))
        return self.uid(name)

    def uid(self, name: str) -> str:
        return str(self.k.json("get", "pod", name)["metadata"]["uid"])

    def bind(self, name: str) -> None:
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}}
        self.k.run("create", "--raw", f"/api/v1/namespaces/{self.k.ns}/pods/{name}/binding", "-f", "-",
                   input=json.dumps(binding))

    def status(self, name: str, *statuses: dict[str, Any], init: tuple[dict[str, Any], ...] = (),
               phase: str = "Running") -> None:
        status: dict[str, Any] = {"phase": phase, "containerStatuses": list(statuses)}
        if init:
            status["initContainerStatuses"] = list(init)
        self.k.run("patch", "pod", name, "--subresource=status", "--type=merge", "-p",
                   json.dumps({"status": status}))

    def path(self, pod: str, container: str = "app", restart: int = 0) -> Path:
        return logs.FileLogs(self.ls.log_dir).pod_dir(self.k.ns, pod, self.uid(pod)) / container / f"{restart}.log"

    def log(self, pod: str, container: str = "app", restart: int = 0, *, rotate: bool = False,
            now: Any = time.time) -> crilog.LogFile:
        f = crilog.LogFile(self.path(pod, container, restart), rotation=self.ls.rotation if rotate else None, now=now)
        self.files.append(f)
        return f

    def wait(self) -> int:
        """Until kubectl ended by itself (and all it printed was gathered); its exit code."""
        code = self.proc.wait(timeout=30)
        self._thread.join(timeout=10)
        return code

    def close(self) -> None:
        for f in self.files:
            f.release()


def running(name: str = "app", *, restarts: int = 0, cid: str = "runc://current",
            last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "ready": True, "started": True, "restartCount": restarts, "image": "busybox",
            "imageID": "", "containerID": cid, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            "lastState": {"terminated": last} if last else {}}


def terminated(cid: str = "runc://current", code: int = 0) -> dict[str, Any]:
    return {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "containerID": cid,
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:00Z"}


def exited(name: str = "app", *, restarts: int = 0, cid: str = "runc://current", code: int = 0) -> dict[str, Any]:
    return {"name": name, "ready": False, "started": False, "restartCount": restarts, "image": "busybox",
            "imageID": "", "containerID": cid, "state": {"terminated": terminated(cid, code)}, "lastState": {}}


def waiting(name: str = "app", reason: str = "ContainerCreating", *, restarts: int = 0,
            last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "ready": False, "started": False, "restartCount": restarts, "image": "busybox",
            "imageID": "", "state": {"waiting": {"reason": reason}},
            "lastState": {"terminated": last} if last else {}}


def write(f: crilog.LogFile, text: str, *, stream: str = "stdout", at: int | None = None, tag: str = "F") -> None:
    f.write(crilog.format_entry(at if at is not None else time.time_ns(), stream, tag, text.encode()))


@pytest.fixture
def k(log_server: LogServer, request: pytest.FixtureRequest) -> Kubectl:
    return fresh_namespace(log_server.server, request)


@pytest.fixture
def kubelet(k: Kubectl, log_server: LogServer) -> Iterator[Kubelet]:
    kl = Kubelet(k, log_server)
    try:
        yield kl
    finally:
        kl.close()


def error(k: Kubectl, *args: str) -> str:
    proc = k.run(*args, check=False)
    assert proc.returncode != 0, f"kubectl {' '.join(args)} succeeded: {proc.stdout}"
    return proc.stderr.strip()


# --- reading -----------------------------------------------------------------------------------


def test_logs_of_a_running_container_with_every_reading_flag(k: Kubectl, kubelet: Kubelet) -> None:
    kubelet.pod("web")
    kubelet.status("web", running())
    f = kubelet.log("web")
    now = time.time_ns()
    write(f, "from two hours ago", at=now - 7200 * SECOND)
    write(f, "hello", at=now - 5 * SECOND)
    long = "x" * (crilog.MAX_LINE + 100)  # the writer's limit: a P entry then an F entry
    f.write(crilog.format_entry(now - 4 * SECOND, "stdout", "P", long[:crilog.MAX_LINE].encode()))
    write(f, long[crilog.MAX_LINE:], at=now - 4 * SECOND)
    write(f, "oops", stream="stderr", at=now - 3 * SECOND)
    assert k.out("logs", "web") == f"from two hours ago\nhello\n{long}\noops\n"
    assert k.out("logs", "pod/web", "--tail=2") == f"{long}\noops\n"
    assert k.out("logs", "web", "--tail=0") == ""
    assert k.out("logs", "web", "--since=1h") == f"hello\n{long}\noops\n"
    an_hour_ago = datetime.datetime.fromtimestamp(now / SECOND - 3600, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert k.out("logs", "web", f"--since-time={an_hour_ago}") == f"hello\n{long}\noops\n"
    stamp = datetime.datetime.fromtimestamp((now - 3 * SECOND) // SECOND, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert k.out("logs", "web", "--timestamps", "--tail=1") == f"{stamp}.{(now - 3 * SECOND) % SECOND:09d}Z oops\n"
    assert k.out("logs", "web", "--limit-bytes=7") == "from tw"
    assert k.out("logs", "web", "--tail=1", "--insecure-skip-tls-verify-backend") == "oops\n"
    raw = f"/api/v1/namespaces/{k.ns}/pods/web/log"
    assert k.out("get", "--raw", f"{raw}?stream=Stderr") == "oops\n"


def test_containers_of_a_pod(k: Kubectl, kubelet: Kubelet) -> None:
    kubelet.pod("multi", containers=("app", "sidecar"), init=("setup",))
    kubelet.status("multi", running("app"), running("sidecar", cid="runc://side"),
                   init=(exited("setup", cid="runc://setup"),))
    for container, text in (("setup", "init done"), ("app", "app line"), ("sidecar", "side line")):
        write(kubelet.log("multi", container), text)
    assert k.out("logs", "multi", "-c", "sidecar") == "side line\n"
    assert k.out("logs", "multi", "--container=setup") == "init done\n"
    # Without -c kubectl picks the first container itself and says so.
    proc = k.run("logs", "multi")
    assert proc.stdout == "app line\n" and 'Defaulted container "app" out of: app, sidecar, setup (init)' in proc.stderr
    # (kubectl keeps its requests in a map: the containers come in any order)
    assert sorted(k.out("logs", "multi", "--all-containers").splitlines()) == ["app line", "init done", "side line"]
    assert sorted(k.out("logs", "multi", "--all-containers", "--prefix").splitlines()) == [
        "[pod/multi/app] app line", "[pod/multi/setup] init done", "[pod/multi/sidecar] side line"]
    # The API's own checks (kubectl checks -c itself before asking).
    raw = f"/api/v1/namespaces/{k.ns}/pods/multi/log"
    assert error(k, "get", "--raw", raw) == \
        "Error from server (BadRequest): a container name must be specified for pod multi, " \
        "choose one of: [setup app sidecar]"
    assert error(k, "get", "--raw", f"{raw}?container=nope") == \
        "Error from server (BadRequest): container nope is not valid for pod multi"


def test_previous_run(k: Kubectl, kubelet: Kubelet) -> None:
    kubelet.pod("crashy")
    write(kubelet.log("crashy", restart=1), "run 1")
    write(kubelet.log("crashy", restart=2), "run 2")
    kubelet.status("crashy", running(restarts=2, cid="runc://r2", last=terminated("runc://r1", code=1)))
    assert k.out("logs", "crashy") == "run 2\n"
    assert k.out("logs", "crashy", "--previous") == "run 1\n"
    assert k.out("logs", "crashy", "-p", "--timestamps").endswith(" run 1\n")
    # Crashed again and waiting to restart: lastState is that newest run.
    kubelet.status("crashy", waiting(reason="CrashLoopBackOff", restarts=2, last=terminated("runc://r2", code=1)))
    assert k.out("logs", "crashy") == "run 2\n"
    assert k.out("logs", "crashy", "--previous") == "run 2\n"

    kubelet.pod("fresh")
    kubelet.status("fresh", running())
    write(kubelet.log("fresh"), "only run")
    assert error(k, "logs", "fresh", "--previous") == \
        'Error from server (BadRequest): previous terminated container "app" in pod "fresh" not found'


def test_errors_as_upstream_words_them(k: Kubectl, kubelet: Kubelet) -> None:
    assert 'pods "nope" not found' in error(k, "logs", "nope")
    kubelet.pod("pending")
    assert error(k, "logs", "pending") == \
        'Error from server (BadRequest): container "app" in pod "pending" is waiting to start: ContainerCreating'
    kubelet.status("pending", waiting(reason="ImagePullBackOff"), phase="Pending")
    assert error(k, "logs", "pending") == 'Error from server (BadRequest): container "app" in pod "pending" is ' \
                                          "waiting to start: trying and failing to pull image"
    kubelet.pod("unscheduled", node=None)
    assert k.out("logs", "unscheduled") == ""  # as upstream: no node, nothing to read
    kubelet.pod("nofile")
    kubelet.status("nofile", running())
    path = kubelet.path("nofile")
    assert error(k, "logs", "nofile") == f'Error from server (BadRequest): failed to try resolving symlinks in ' \
                                         f'path "{path}": lstat {path}: no such file or directory'
    raw = f"/api/v1/namespaces/{k.ns}/pods/nofile/log"
    assert error(k, "get", "--raw", f"{raw}?tailLines=-1&limitBytes=0") == \
        'The PodLogOptions "nofile" is invalid: \n* tailLines: Invalid value: -1: must be greater than or equal to 0' \
        "\n* limitBytes: Invalid value: 0: must be greater than 0"
    assert "at most one of `sinceTime` or `sinceSeconds` may be specified" in \
        error(k, "get", "--raw", f"{raw}?sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z")
    assert "is not an integer" in error(k, "get", "--raw", f"{raw}?tailLines=ten")


# --- following --------------------------------------------------------------------------------


class Follower:
    """`kubectl logs -f ...` running, its output gathered as it comes."""

    def __init__(self, k: Kubectl, *args: str) -> None:
        self.proc = subprocess.Popen([str(k.bin), "-n", k.ns, "logs", "-f", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=k.env)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return text in self.lines

    def wait(self) -> int:
        """Until kubectl ended by itself (and all it printed was gathered); its exit code."""
        code = self.proc.wait(timeout=30)
        self._thread.join(timeout=10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._thread.join(timeout=10)


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    try:
        yield started
    finally:
        for f in started:
            f.close()


def test_follow_sees_new_lines_across_rotations_until_the_container_ends(
        k: Kubectl, kubelet: Kubelet, followers: list[Follower]) -> None:
    kubelet.pod("tail")
    kubelet.status("tail", running(cid="runc://t1"))
    f = kubelet.log("tail", rotate=True)
    write(f, "first")
    follower = Follower(k, "tail")
    followers.append(follower)
    until(lambda: follower.saw("first"), what="the line written before kubectl started")
    write(f, "second")
    until(lambda: follower.saw("second"), what="a line appended after kubectl started")
    # Each line below is ~100 bytes; the policy from the server's config rotates at 2Ki.
    path = kubelet.path("tail")
    for i in range(60):
        text = f"line {i:02d} " + "z" * 80
        write(f, text)
        until(lambda: follower.saw(text), what=f"line {i}")  # noqa: B023 (called before the loop moves on)
    assert len(logrotate.rotated(path)) == 2  # rotated meanwhile: max files 3, the live one included
    assert follower.proc.poll() is None
    # The container ends: kubectl's stream ends by itself.
    kubelet.status("tail", exited(cid="runc://t1"), phase="Succeeded")
    assert follower.wait() == 0
    assert follower.lines == ["first", "second", *[f"line {i:02d} " + "z" * 80 for i in range(60)]]


def _open_in_server(ls: LogServer, path: Path) -> bool:
    """Whether the server process holds `path` open."""
    assert ls.server.proc is not None
    fds = Path(f"/proc/{ls.server.proc.pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(fd.readlink())
        except FileNotFoundError:
            continue  # closed meanwhile
    return path in targets


def test_a_follower_that_goes_away_is_let_go(k: Kubectl, kubelet: Kubelet, followers: list[Follower]) -> None:
    kubelet.pod("left")
    kubelet.status("left", running())
    write(kubelet.log("left"), "anyone there?")
    path = kubelet.path("left")
    follower = Follower(k, "left")
    followers.append(follower)
    until(lambda: follower.saw("anyone there?"), what="the first line")
    assert _open_in_server(kubelet.ls, path)  # the server follows the file for kubectl
    follower.close()
    until(lambda: not _open_in_server(kubelet.ls, path), what="the server closing the file once kubectl went")


def test_follow_of_a_run_that_ended_returns_at_once(k: Kubectl, kubelet: Kubelet) -> None:
    kubelet.pod("done")
    kubelet.status("done", exited(code=0), phase="Succeeded")
    write(kubelet.log("done"), "all done")
    assert k.out("logs", "-f", "done") == "all done\n"


# --- rotation ----------------------------------------------------------------------------------


def test_rotation_at_the_configured_size_and_logs_show_the_live_file(k: Kubectl, kubelet: Kubelet) -> None:
    kubelet.pod("rot")
    kubelet.status("rot", running())
    clock = iter(range(1_800_000_000, 1_800_001_000))  # one second per rotation: names in order
    f = kubelet.log("rot", rotate=True, now=lambda: next(clock))
    for i in range(120):
        write(f, f"line {i:03d} " + "r" * 40)
    path = kubelet.path("rot")
    rotated = logrotate.rotated(path)
    # At most 3 files, the live one included: the newest rotated file as is, the older gzipped.
    assert len(rotated) == 2 and rotated[0].name.endswith(".gz") and not rotated[1].name.endswith(".gz")
    assert all(p.name.startswith("0.log.2027") for p in rotated) and rotated[0].name < rotated[1].name
    raw = [gzip.decompress(rotated[0].read_bytes()), rotated[1].read_bytes(), path.read_bytes()]
    assert len(raw[0]) >= 2048 and len(raw[1]) >= 2048 and len(raw[2]) < 2048  # rotated at the size
    contents = [logs.Formatter().feed(r) for r in raw]
    everything = b"".join(contents).decode().splitlines()
    assert everything[-1].startswith("line 119") and not any(line.startswith("line 000") for line in everything)
    numbers = [int(line.split()[1]) for line in everything]
    assert numbers == list(range(numbers[0], 120))  # the oldest went; nothing after them is lost
    live = contents[-1].decode()
    assert k.out("logs", "rot") == live  # the live file only, as upstream
    assert k.out("logs", "rot", "--tail=1000") == live  # --tail does not reach into rotated files either
    assert k.out("logs", "rot", "--tail=2") == "".join(live.splitlines(keepends=True)[-2:])
    # A restarted writer goes on in the same live file and rotates at the same size.
    f.release()
    kubelet.files.remove(f)
    g = kubelet.log("rot", rotate=True, now=lambda: next(clock))
    write(g, "after restart")
    assert k.out("logs", "rot", "--tail=1") == "after restart\n"
    assert k.out("logs", "rot") == live + "after restart\n"


# --- many pods --------------------------------------------------------------------------------


def test_selectors_fan_out_with_max_log_requests(k: Kubectl, kubelet: Kubelet) -> None:
    for i in range(6):
        name = f"web-{i}"
        kubelet.pod(name, labels={"app": "web", "half": "a" if i < 3 else "b"})
        kubelet.status(name, exited(cid=f"runc://w{i}"), phase="Succeeded")
        f = kubelet.log(name)
        for n in range(12):
            write(f, f"{name} says {n}")
    out = k.out("logs", "-l", "half=a").splitlines()
    # kubectl asks for the last 10 lines of each pod when it selects.
    assert sorted(out) == sorted(f"web-{i} says {n}" for i in range(3) for n in range(2, 12))
    prefixed = k.out("logs", "-l", "half=b", "--prefix", "--tail=1").splitlines()
    assert sorted(prefixed) == [f"[pod/web-{i}/app] web-{i} says 11" for i in range(3, 6)]
    assert "maximum allowed concurrency is 5" in error(k, "logs", "-f", "-l", "app=web")
    followed = k.out("logs", "-f", "-l", "app=web", "--max-log-requests=6", "--tail=1").splitlines()
    assert sorted(followed) == [f"web-{i} says 11" for i in range(6)]


def test_logs_of_a_deployment_pick_a_pod_through_its_selector(k: Kubectl, kubelet: Kubelet) -> None:
    k.run("create", "deployment", "api", "--image=busybox", "--replicas=2")
    names = until(lambda: [p["metadata"]["name"] for p in k.json("get", "pods", "-l", "app=api")["items"]]
                  if len(k.json("get", "pods", "-l", "app=api")["items"]) == 2 else None, what="2 pods")
    for name in names:
        kubelet.bind(name)  # no node in this server: the test binds as the scheduler would
        kubelet.status(name, running("busybox"))
        write(kubelet.log(name, "busybox"), f"I am {name}")
    proc = k.run("logs", "deployment/api")
    chosen = proc.stderr.strip().removeprefix("Found 2 pods, using pod/")
    assert chosen in names and proc.stdout == f"I am {chosen}\n"
    assert sorted(k.out("logs", "deployment/api", "--all-pods").splitlines()) == \
        sorted(f"[pod/{n}/busybox] I am {n}" for n in names)  # --all-pods prefixes by itself


# --- with the real kubelet ---------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet runs runc containers: needs root")
needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "docker-registry")),
                                 reason="needs runc, umoci, skopeo and docker-registry (make installs them)")


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeletServer, str]]:
    """A server with its kubelet on, and `127.0.0.1:<port>/busybox:1.0` in a real registry."""
    work = tmp_path_factory.mktemp("logs-kubelet")
    layout = ti.busybox_layout(work / "layout", tag="1.0")
    registry = ti.Registry(work / "registry").start()
    node = KubeletServer(work / "node")
    try:
        ti.skopeo_copy(layout, f"docker://{registry.host}/busybox:1.0")
        node.start()
        yield node, f"{registry.host}/busybox:1.0"
    finally:
        node.cleanup()
        registry.close()
    left = node.leftovers()
    assert not left, f"left behind on the host: {left}"


def _status(k: Kubectl, name: str) -> dict[str, Any]:
    statuses = k.json("get", "pod", name)["status"].get("containerStatuses") or [{}]
    return dict(statuses[0])


@needs_root
@needs_tools
def test_real_container_followed_to_its_end(real_node: tuple[KubeletServer, str], request: pytest.FixtureRequest,
                                            followers: list[Follower]) -> None:
    node, image = real_node
    k = fresh_namespace(node.server, request)
    # It prints a line, waits for /go (which the test makes once kubectl follows), then 20 more.
    script = "echo started; while [ ! -e /go ]; do sleep 0.05; done; " \
             "i=0; while [ $i -lt 20 ]; do echo tick $i; i=$((i+1)); done; echo bye >&2"
    k.run("run", "ticker", f"--image={image}", "--restart=Never", "--command", "--", "sh", "-c", script)
    until(lambda: "running" in (_status(k, "ticker").get("state") or {}), what="the container running")
    follower = Follower(k, "ticker", "--timestamps")
    followers.append(follower)
    until(lambda: any(line.endswith(" started") for line in follower.lines), what="its first line")
    cid = str(_status(k, "ticker")["containerID"]).split("://", 1)[1]
    Path(f"/proc/{node.runc_list()[cid]['pid']}/root/go").touch()
    assert follower.wait() == 0  # the stream ended with the container
    assert [line.split(" ", 1)[1] for line in follower.lines] == ["started", *[f"tick {i}" for i in range(20)], "bye"]
    assert all(logs.instant(line.split(" ", 1)[0].encode()) for line in follower.lines)
    assert k.out("logs", "ticker", "--tail=2") == "tick 19\nbye\n"


@needs_root
@needs_tools
def test_real_container_restarted_shows_previous(real_node: tuple[KubeletServer, str],
                                                 request: pytest.FixtureRequest) -> None:
    node, image = real_node
    k = fresh_namespace(node.server, request)
    script = "if [ -e /data/ran ]; then echo second run; exec sleep 3600; fi; touch /data/ran; echo first run; exit 3"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "twice"},
           "spec": {"terminationGracePeriodSeconds": 0, "volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [{"name": "app", "image": image, "command": ["sh", "-c", script],
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}
    k.run("apply", "-f", "-", input=json.dumps(pod))
    until(lambda: _status(k, "twice").get("restartCount") == 1 and "running" in _status(k, "twice")["state"],
          timeout=90, what="the second run running")
    assert k.out("logs", "twice") == "second run\n"
    assert k.out("logs", "twice", "--previous") == "first run\n"
