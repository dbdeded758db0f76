"""Container logs without a server: the CRI reader (entries, `P` pieces joined, timestamps, since,
tail, limits, streams), following across a rotation, size-based rotation of the writer (files,
names, trimming, gzip, after a restart), and how `pods/log` picks the container and the run from
a pod's status."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekube import config as config_mod
from edgekube.api import errors, podlogs
from edgekube.kubelet import logrotate, logs
from edgekube.kubelet.runtime import crilog

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z


def entry(ns: int, stream: str, tag: str, text: str) -> bytes:
    return crilog.format_entry(ns, stream, tag, text.encode())


def sec(n: float) -> int:
    return T0 + int(n * 1_000_000_000)


# --- parsing and formatting ----------------------------------------------------------------------


def test_parse_entries_and_reject_what_is_not_one() -> None:
    e = logs.parse(b"2023-11-14T22:13:20.5Z stdout F hello world\n")
    assert e == logs.Entry(time=b"2023-11-14T22:13:20.5Z", stream=b"stdout", partial=False, content=b"hello world")
    p = logs.parse(b"2023-11-14T22:13:20Z stderr P:x piece")
    assert p is not None and p.partial and p.stream == b"stderr" and p.content == b"piece"
    empty = logs.parse(b"2023-11-14T22:13:20Z stdout F ")
    assert empty is not None and empty.content == b""
    for bad in (b"", b"garbage", b"2023-11-14T22:13:20Z stdin F x", b"yesterday stdout F x",
                b"2023-11-14T22:13:20Z stdout"):
        assert logs.parse(bad) is None, bad


def test_times_as_instants_and_fixed_width() -> None:
    assert logs.instant(b"2023-11-14T22:13:20Z") == T0
    assert logs.instant(b"2023-11-14T22:13:20.000000001Z") == T0 + 1
    assert logs.instant(b"2023-11-15T00:13:20.5+02:00") == T0 + 500_000_000
    assert logs.instant(b"not a time") is None
    assert logs.fixed(b"2023-11-14T22:13:20Z") == b"2023-11-14T22:13:20.000000000Z"
    assert logs.fixed(b"2023-11-14T22:13:20.12Z") == b"2023-11-14T22:13:20.120000000Z"
    assert logs.fixed(b"2023-11-15T00:13:20.5+02:00") == b"2023-11-15T00:13:20.500000000+02:00"


SAMPLE = b"".join([
    entry(sec(0), "stdout", "F", "one"),
    entry(sec(1), "stdout", "P", "tw"),
    entry(sec(1), "stderr", "F", "err line"),
    entry(sec(2), "stdout", "F", "o"),
    b"this line is not an entry\n",
    entry(sec(3), "stdout", "F", "three"),
])


def test_partial_pieces_are_joined_per_stream_and_bad_lines_skipped() -> None:
    assert logs.Formatter().feed(SAMPLE) == b"one\ntwerr line\no\nthree\n"
    assert logs.Formatter(stream="Stdout").feed(SAMPLE) == b"one\ntwo\nthree\n"
    assert logs.Formatter(stream="Stderr").feed(SAMPLE) == b"err line\n"


def test_timestamps_once_per_line_in_fixed_form() -> None:
    out = logs.Formatter(timestamps=True, stream="Stdout").feed(SAMPLE).decode()
    assert out.splitlines() == [
        "2023-11-14T22:13:20.000000000Z one",
        "2023-11-14T22:13:21.000000000Z two",
        "2023-11-14T22:13:23.000000000Z three",
    ]


def test_since_leaves_out_older_entries() -> None:
    assert logs.Formatter(since_ns=sec(2)).feed(SAMPLE) == b"o\nthree\n"
    assert logs.Formatter(since_ns=sec(3) + 1).feed(SAMPLE) == b""
    assert logs.Formatter(since_ns=sec(0)).feed(SAMPLE) == logs.Formatter().feed(SAMPLE)


def test_limit_bytes_cuts_the_output_and_ends_it() -> None:
    fmt = logs.Formatter(limit_bytes=6)
    assert fmt.feed(SAMPLE) == b"one\ntw"
    assert fmt.done and fmt.feed(SAMPLE) == b""
    assert logs.Formatter(limit_bytes=4, timestamps=True).feed(SAMPLE) == b"2023"


def _file(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "0.log"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


@pytest.mark.parametrize("block", [7, 64 * 1024])
def test_tail_counts_whole_lines_from_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(logs, "SCAN_BLOCK", block)  # small blocks: lines cross block edges
    fd = _file(tmp_path, SAMPLE)
    try:
        def tail(n: int) -> bytes:
            start = logs.tail_start(fd, n)
            return logs.Formatter().feed(os.pread(fd, 1 << 20, start))

        assert tail(1) == b"three\n"
        assert tail(2) == b"o\nthree\n"
        # "tw" and "o" were split by a stderr entry (the copier writes a line's pieces together
        # unless the line spans reads): they count apart, as every entry does upstream.
        assert tail(3) == b"err line\no\nthree\n"
        assert tail(4) == b"twerr line\no\nthree\n"
        assert tail(5) == b"one\ntwerr line\no\nthree\n"
        assert tail(100) == tail(5)
        assert tail(0) == b""
    finally:
        os.close(fd)


def test_tail_counts_a_long_lines_pieces_and_a_trailing_partial_line_once(tmp_path: Path) -> None:
    data = entry(sec(0), "stdout", "F", "a") + entry(sec(1), "stderr", "P", "lo") + \
        entry(sec(1), "stderr", "P", "n") + entry(sec(1), "stderr", "F", "g") + \
        entry(sec(2), "stdout", "P", "still ") + entry(sec(2), "stdout", "P", "writing")
    fd = _file(tmp_path, data)
    try:
        assert logs.Formatter().feed(os.pread(fd, 4096, logs.tail_start(fd, 1))) == b"still writing"
        assert logs.Formatter().feed(os.pread(fd, 4096, logs.tail_start(fd, 2))) == b"long\nstill writing"
        assert logs.tail_start(fd, 3) == 0
        assert logs.tail_start(fd, 0) == len(data)
    finally:
        os.close(fd)


def test_tail_of_an_empty_file(tmp_path: Path) -> None:
    fd = _file(tmp_path, b"")
    try:
        assert logs.tail_start(fd, 10) == 0 and logs.tail_start(fd, 0) == 0
    finally:
        os.close(fd)


# --- the file source ---------------------------------------------------------------------------


TARGET = podlogs.Target(namespace="ns", pod="p", uid="u1", container="c", restart=0, container_id="runc://x")


async def _collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def test_file_source_reads_the_runs_file_with_options(tmp_path: Path) -> None:
    source = logs.FileLogs(tmp_path, poll=0.01)
    path = source.path(TARGET)
    assert path == tmp_path / "ns_p_u1" / "c" / "0.log"
    path.parent.mkdir(parents=True)
    path.write_bytes(SAMPLE)
    got = await _collect(await source.open(TARGET, podlogs.Options(tail_lines=1), follow_while=lambda: False))
    assert got == b"three\n"
    got = await _collect(await source.open(TARGET, podlogs.Options(), follow_while=lambda: False))
    assert got == b"one\ntwerr line\no\nthree\n"
    with pytest.raises(podlogs.LogUnavailable, match=r'failed to try resolving symlinks in path ".*/1\.log"'):
        await source.open(podlogs.Target(**{**TARGET.__dict__, "restart": 1}), podlogs.Options(),
                          follow_while=lambda: False)


async def test_follow_sees_appends_and_goes_on_across_a_rotation(tmp_path: Path) -> None:
    source = logs.FileLogs(tmp_path, poll=0.01)
    path = source.path(TARGET)
    writer = crilog.LogFile(path, rotation=logrotate.Policy(max_size=200, max_files=3))
    writer.write(entry(sec(0), "stdout", "F", "first"))
    running = True
    chunks = await source.open(TARGET, podlogs.Options(follow=True), follow_while=lambda: running)
    seen = b""

    async def until(text: bytes) -> None:
        nonlocal seen
        async with asyncio.timeout(10):
            while text not in seen:
                seen += await anext(chunks)

    await until(b"first\n")
    writer.write(entry(sec(1), "stdout", "F", "appended"))
    await until(b"appended\n")
    # Enough to rotate several times while the follower reads.
    for i in range(20):
        writer.write(entry(sec(2), "stdout", "F", f"line {i:02d} " + "x" * 40))
        await until(f"line {i:02d}".encode())
    await writer.tidied()
    assert len(logrotate.rotated(path)) == 2  # max_files 3: two rotated files and the live one
    assert [line.split()[1] for line in seen.decode().splitlines()[2:]] == [f"{i:02d}" for i in range(20)]
    running = False
    rest = await _collect(chunks)  # ends once follow_while() is false
    assert rest == b""
    writer.release()


# --- rotation ----------------------------------------------------------------------------------


def test_rotated_names_sort_by_age_and_never_overwrite(tmp_path: Path) -> None:
    live = tmp_path / "0.log"
    names = []
    for _ in range(3):
        live.write_text("x")
        names.append(logrotate.rotate(live, now=1_700_000_000).name)
    assert names == ["0.log.20231114-221320", "0.log.20231114-221320-1", "0.log.20231114-221320-2"]
    live.write_text("x")
    names.append(logrotate.rotate(live, now=1_700_000_001).name)
    assert [p.name for p in logrotate.rotated(live)] == names
    (tmp_path / "0.log.unrelated").write_text("not ours")
    (tmp_path / "10.log.20231114-221320").write_text("another run")
    assert [p.name for p in logrotate.rotated(live)] == names


def test_tidy_keeps_max_files_compresses_older_and_cleans_leftovers(tmp_path: Path) -> None:
    live = tmp_path / "0.log"
    for i in range(5):
        live.write_text(f"content {i}\n")
        logrotate.rotate(live, now=1_700_000_000 + i)
    # Leftovers of an interrupted round: a half-written .gz.tmp, and a file compressed whose
    # original was not removed yet.
    (tmp_path / "0.log.20231114-221321.gz.tmp").write_bytes(b"half")
    with gzip.open(tmp_path / "0.log.20231114-221322.gz", "wb") as f:
        f.write(b"content 2\n")
    live.write_text("live\n")
    logrotate.tidy(live, logrotate.Policy(max_size=1, max_files=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0.log", "0.log.20231114-221322.gz", "0.log.20231114-221323.gz", "0.log.20231114-221324"]
    assert gzip.decompress((tmp_path / "0.log.20231114-221323.gz").read_bytes()) == b"content 3\n"
    assert (tmp_path / "0.log.20231114-221324").read_text() == "content 4\n"
    logrotate.remove(live)
    assert list(tmp_path.iterdir()) == []


def test_policy_and_settings() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        logrotate.Policy(max_files=1)
    assert logrotate.from_settings(max_size=0, max_files=5) is None
    assert logrotate.from_settings(max_size=10 * 1024 * 1024, max_files=5) == logrotate.UPSTREAM


@pytest.mark.parametrize(("size", "files", "expected"), [
    ("10Mi", 5, (10 * 1024 * 1024, 5)), ("500k", "3", (500_000, 3)), (1048576, 2, (1048576, 2)), ("0", 5, (0, 5))])
def test_rotation_settings(tmp_path: Path, size: Any, files: Any, expected: tuple[int, int]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"kubelet: {{container-log-max-size: {size!r}, container-log-max-files: {files!r}}}\n")
    k = config_mod.load(config_file=cfg).kubelet
    assert (k.container_log_max_size, k.container_log_max_files) == expected
    assert config_mod.DEFAULTS["kubelet"]["container-log-max-size"] == "10Mi"  # upstream's defaults
    assert config_mod.DEFAULTS["kubelet"]["container-log-max-files"] == 5


@pytest.mark.parametrize(("size", "files", "message"), [
    ("ten", 5, "'container-log-max-size' must be a size such as 10Mi"),
    ("1.5Mi", 5, "'container-log-max-size' must be a size"),
    ("10Mi", 1, "'container-log-max-files' must be"),
])
def test_bad_rotation_settings(tmp_path: Path, size: Any, files: Any, message: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"kubelet: {{container-log-max-size: {size!r}, container-log-max-files: {files!r}}}\n")
    with pytest.raises(config_mod.ConfigError, match=re.escape(message)):
        config_mod.load(config_file=cfg)


def test_writer_rotates_at_the_size_and_picks_up_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "pod" / "c" / "0.log"
    policy = logrotate.Policy(max_size=100, max_files=3)
    clock = iter(range(1_700_000_000, 1_700_001_000))
    log = crilog.LogFile(path, rotation=policy, now=lambda: next(clock))
    line = entry(sec(0), "stdout", "F", "y" * 30)  # 58 bytes: the second write reaches 100
    log.write(line)
    assert logrotate.rotated(path) == []
    log.write(line)
    assert [p.read_bytes() for p in logrotate.rotated(path)] == [line * 2]
    assert path.read_bytes() == b""
    log.write(line)
    log.release()
    # A new process: the live file holds one entry already, so one more write rotates it.
    log = crilog.LogFile(path, rotation=policy, now=lambda: next(clock))
    log.write(line)
    rotated = logrotate.rotated(path)
    assert [p.name.endswith(".gz") for p in rotated] == [True, False]  # no loop: tidied inline
    assert gzip.decompress(rotated[0].read_bytes()) == line * 2 and rotated[1].read_bytes() == line * 2
    for _ in range(6):
        log.write(line)
    assert len(logrotate.rotated(path)) == 2  # max_files 3, the live one included
    log.release()


async def test_copier_output_rotates_on_the_loop_and_tidies_off_it(tmp_path: Path) -> None:
    out, _ = crilog.make_fifos(tmp_path)
    w = crilog.open_for_container(out)
    path = tmp_path / "logs" / "0.log"
    log = crilog.LogFile(path, rotation=logrotate.Policy(max_size=4096, max_files=4))
    copier = crilog.Copier(out, stream="stdout", log=log)
    copier.start()
    for i in range(400):
        os.write(w, f"line {i:04d}\n".encode())
        if i % 50 == 0:
            await asyncio.sleep(0)
    os.close(w)
    async with asyncio.timeout(5):
        await copier.wait()
    await log.tidied()
    files = [*logrotate.rotated(path), path]
    assert len(files) == 4 and files[0].name.endswith(".gz") and files[1].name.endswith(".gz")
    contents = [gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes() for f in files]
    # Rotated once they reached the size (by whole writes: the copier writes what one read gave).
    assert all(len(c) >= 4096 for c in contents[:-1]) and len(contents[-1]) < 4096
    text = b"".join(contents)
    numbers = [int(line.split()[-1]) for line in logs.Formatter().feed(text).decode().splitlines()]
    assert numbers == list(range(numbers[0], 400))  # the oldest went, nothing in between is lost


# --- pods/log: options, container, run -----------------------------------------------------------


def test_options_from_the_query_and_upstreams_validation() -> None:
    o = podlogs.parse_options({"container": "c", "follow": "true", "tailLines": "5", "timestamps": "1",
                               "sinceSeconds": "10", "insecureSkipTLSVerifyBackend": "true"}, pod="p", now_ns=T0)
    assert (o.container, o.follow, o.tail_lines, o.timestamps, o.since_ns) == ("c", True, 5, True, T0 - 10 * 10**9)
    o = podlogs.parse_options({"sinceTime": "2023-11-14T22:13:20.5Z", "limitBytes": "10"}, pod="p", now_ns=0)
    assert o.since_ns == T0 + 500_000_000 and o.limit_bytes == 10
    with pytest.raises(errors.APIError) as exc:
        podlogs.parse_options({"tailLines": "-1", "limitBytes": "0", "sinceSeconds": "0"}, pod="p", now_ns=0)
    assert exc.value.code == 422 and exc.value.message == (
        'PodLogOptions "p" is invalid: [tailLines: Invalid value: -1: must be greater than or equal to 0, '
        "limitBytes: Invalid value: 0: must be greater than 0, sinceSeconds: Invalid value: 0: must be greater than 0]")
    with pytest.raises(errors.APIError, match="at most one of `sinceTime` or `sinceSeconds`"):
        podlogs.parse_options({"sinceSeconds": "5", "sinceTime": "2023-11-14T22:13:20Z"}, pod="p", now_ns=0)
    with pytest.raises(errors.APIError, match="mutually exclusive"):
        podlogs.parse_options({"stream": "Stdout", "tailLines": "1"}, pod="p", now_ns=0)
    for bad in ({"tailLines": "x"}, {"follow": "yes"}, {"sinceTime": "yesterday"}):
        with pytest.raises(errors.APIError) as exc:
            podlogs.parse_options(bad, pod="p", now_ns=0)
        assert exc.value.code == 400


def _pod(*names: str, init: tuple[str, ...] = (), statuses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": n} for n in names]}
    if init:
        spec["initContainers"] = [{"name": n} for n in init]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec,
            "status": {"containerStatuses": statuses or []}}


def test_container_choice_with_upstreams_messages() -> None:
    assert podlogs.choose_container(_pod("a"), "") == "a"
    assert podlogs.choose_container(_pod("a", "b", init=("i",)), "i") == "i"
    with pytest.raises(errors.APIError, match=r"^a container name must be specified for pod p, choose one of: \[i a b\]$"):
        podlogs.choose_container(_pod("a", "b", init=("i",)), "")
    with pytest.raises(errors.APIError, match=r"^container z is not valid for pod p$"):
        podlogs.choose_container(_pod("a"), "z")


RUN = {"running": {"startedAt": "2023-11-14T22:13:20Z"}}
DEAD = {"terminated": {"exitCode": 1, "reason": "Error", "containerID": "runc://old"}}


@pytest.mark.parametrize(("status", "previous", "restart", "cid"), [
    ({"restartCount": 0, "state": RUN, "containerID": "runc://new"}, False, 0, "runc://new"),
    ({"restartCount": 3, "state": RUN, "lastState": DEAD, "containerID": "runc://new"}, False, 3, "runc://new"),
    ({"restartCount": 3, "state": RUN, "lastState": DEAD, "containerID": "runc://new"}, True, 2, "runc://old"),
    ({"restartCount": 2, "state": {"terminated": {"exitCode": 0, "containerID": "runc://t"}}}, False, 2, "runc://t"),
    # CrashLoopBackOff: lastState is the newest run itself.
    ({"restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": DEAD}, False, 4, "runc://old"),
    ({"restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": DEAD}, True, 4, "runc://old"),
])
def test_which_run(status: dict[str, Any], previous: bool, restart: int, cid: str) -> None:
    t = podlogs.resolve(_pod("c", statuses=[{"name": "c", **status}]), "c", previous=previous)
    assert (t.namespace, t.pod, t.uid, t.container, t.restart, t.container_id) == ("ns", "p", "u1", "c", restart, cid)


@pytest.mark.parametrize(("pod", "previous", "message"), [
    (_pod("c"), False, 'container "c" in pod "p" is waiting to start: ContainerCreating'),
    (_pod("c", init=("i",)), False, 'container "c" in pod "p" is waiting to start: PodInitializing'),
    (_pod("c", statuses=[{"name": "c", "restartCount": 0, "state": RUN}]), True,
     'previous terminated container "c" in pod "p" not found'),
    (_pod("c", statuses=[{"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]), False,
     'container "c" in pod "p" is waiting to start: trying and failing to pull image'),
    (_pod("c", statuses=[{"name": "c", "state": {"waiting": {"reason": "ErrImagePull"}}}]), False,
     'container "c" in pod "p" is waiting to start: image can\'t be pulled'),
    (_pod("c", statuses=[{"name": "c", "state": {}}]), False, 'container "c" in pod "p" is waiting to start - no logs yet'),
])
def test_no_run_to_read(pod: dict[str, Any], previous: bool, message: str) -> None:
    with pytest.raises(errors.APIError) as exc:
        podlogs.resolve(pod, "c", previous=previous)
    assert exc.value.code == 400 and exc.value.message == message


def test_following_ends_with_the_run() -> None:
    t = podlogs.Target(namespace="ns", pod="p", uid="u1", container="c", restart=0, container_id="runc://a")
    running = _pod("c", statuses=[{"name": "c", "state": RUN, "containerID": "runc://a"}])
    assert podlogs.still_running(running, t)
    assert not podlogs.still_running(_pod("c", statuses=[{"name": "c", "state": RUN, "containerID": "runc://b"}]), t)
    assert not podlogs.still_running(_pod("c", statuses=[{"name": "c", "state": DEAD}]), t)
    assert not podlogs.still_running({**running, "metadata": {"uid": "other"}}, t)
    assert not podlogs.still_running(None, t)
