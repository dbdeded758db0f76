"""An asyncio wrapper over the runc binary: create, start, run -d, exec, state, list, kill, delete,
events --stats; runc's failures as typed exceptions that carry runc's own message.

Every call is `runc --root <root> ...` as an asyncio subprocess with a timeout (the process is
killed and `RuncTimeout` raised when it passes), so nothing blocks the loop. The root (state.json
per container) lives under the data dir: it outlives edgekube, which is what lets a restarted
edgekube `list` the containers it had started and adopt them.

Containers are detached: `create` and `run_detached` hand runc the container's stdio as runc's
own stdin/stdout/stderr (runc's "pass-through" mode with `process.terminal` false), so the
container's init holds those descriptors itself and nothing of edgekube's. The caller passes
the write ends of the container's log FIFOs (see `crilog`). Because runc's stderr is then the
container's, runc's error message for those two commands is read back from the JSON log file
given with `--log` (one per container, in its bundle); other commands capture stderr.

`state`/`list` report what runc can tell: id, init pid, status (created, running, paused,
stopped), bundle, rootfs, creation time and the config's annotations. runc keeps no exit
status: for a stopped container it knows neither the exit code nor when it stopped (see
`exits` for how edgekube learns them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ID_RE = re.compile(r"^[\w+\-.]+$")


class RuncError(Exception):
    """runc failed. `message` is runc's own (stderr or its log file); `command` the argv."""

    def __init__(self, message: str, *, command: Sequence[str], returncode: int | None) -> None:
        self.message = message.strip() or "(runc printed nothing)"
        self.command = list(command)
        self.returncode = returncode
        super().__init__(f"{' '.join(self.command[:4])}... failed (exit {returncode}): {self.message}")


class NotFoundError(RuncError):
    """The container does not exist in runc's root."""


class AlreadyExistsError(RuncError):
    """A container with that id already exists."""


class NotRunningError(RuncError):
    """The container's process is not running (kill of a stopped container)."""


class RuncTimeout(RuncError):
    """runc did not finish in time and was killed."""


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """What a process run by `exec` did: its exit code (128+signal when a signal ended it; None
    when it outlived its timeout and was killed) and its stdout and stderr together, as they came,
    cut at the caller's limit."""

    exit_code: int | None
    output: bytes


@dataclasses.dataclass(frozen=True)
class State:
    id: str
    pid: int
    status: str  # created | running | pausing | paused | stopped
    bundle: str
    rootfs: str
    created: datetime.datetime
    annotations: Mapping[str, str]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> State:
        return cls(id=str(obj.get("id") or ""), pid=int(obj.get("pid") or 0), status=str(obj.get("status") or ""),
                   bundle=str(obj.get("bundle") or ""), rootfs=str(obj.get("rootfs") or ""),
                   created=parse_time(str(obj.get("created") or "")),
                   annotations={str(k): str(v) for k, v in (obj.get("annotations") or {}).items()})


def parse_time(text: str) -> datetime.datetime:
    """Go's RFC3339Nano (nanoseconds cut to microseconds); the epoch when unparsable."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return datetime.datetime.fromtimestamp(0, datetime.UTC)
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}")


def check_id(cid: str) -> str:
    if not ID_RE.match(cid) or cid in (".", ".."):
        raise ValueError(f"container id {cid!r} is invalid: runc wants letters, digits, '_', '+', '-', '.'")
    return cid


class Runc:
    def __init__(self, *, root: Path, binary: str = "runc", timeout: float = 30.0) -> None:
        self.root = root
        self.binary = binary
        self.timeout = timeout

    async def _run(self, args: Sequence[str], *, stdin: int | None = None, stdout: int | None = None,
                   stderr: int | None = None, log_file: Path | None = None) -> tuple[bytes, bytes]:
        argv = [self.binary, "--root", str(self.root)]
        if log_file is not None:
            argv += ["--log", str(log_file), "--log-format", "json"]
        argv += list(args)
        capture_out = stdout is None
        capture_err = stderr is None
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if capture_out else stdout,
            stderr=asyncio.subprocess.PIPE if capture_err else stderr,
            # runc gets 0, 1 and 2 only: no other descriptor of edgekube reaches a container.
            close_fds=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuncTimeout(f"runc {args[0]} took longer than {self.timeout}s",
                              command=argv, returncode=None) from None
        if proc.returncode != 0:
            message = (err or b"").decode(errors="replace")
            if log_file is not None:
                message = _log_errors(log_file) or message
            raise _classify(message, command=argv, returncode=proc.returncode)
        return out or b"", err or b""

    async def create(self, cid: str, *, bundle: Path, stdout: int, stderr: int, pid_file: Path,
                     stdin: int | None = None) -> int:
        """`runc create`: the container's init is set up and waits for `start`. Returns its pid."""
        await self._run(["create", "--bundle", str(bundle), "--pid-file", str(pid_file), check_id(cid)],
                        stdin=stdin, stdout=stdout, stderr=stderr, log_file=bundle / "runc.log")
        return _read_pid(pid_file)

    async def start(self, cid: str) -> None:
        await self._run(["start", check_id(cid)])

    async def run_detached(self, cid: str, *, bundle: Path, stdout: int, stderr: int, pid_file: Path,
                           stdin: int | None = None) -> int:
        """`runc run -d`: create and start in one step. Returns the init's pid."""
        await self._run(["run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file), check_id(cid)],
                        stdin=stdin, stdout=stdout, stderr=stderr, log_file=bundle / "runc.log")
        return _read_pid(pid_file)

    async def exec(self, cid: str, *, process: Path, pid_file: Path, time_limit: float | None,
                   limit: int) -> ExecResult:
        """`runc exec --process FILE`: one more process in the running container, as FILE (an OCI
        process, `terminal` false) says, waited for. Its stdout and stderr are one pipe read on
        the loop (the first `limit` bytes kept, the rest drained), and runc's own stdio are that
        pipe too (runc's pass-through mode), so nothing else of edgekube reaches it. Past
        `time_limit` (or when the caller is cancelled) the process is SIGKILLed through the pid
        runc wrote to `pid_file`. runc's failure to start the process at all (no pid written)
        raises, with runc's message."""
        argv = [self.binary, "--root", str(self.root), "exec", "--process", str(process),
                "--pid-file", str(pid_file), check_id(cid)]
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=write_end,
                                                        stderr=write_end, close_fds=True)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        capture = _Capture(read_end, limit)
        timed_out = False
        try:
            async with asyncio.timeout(time_limit):
                await proc.wait()
        except TimeoutError:
            timed_out = True
        finally:
            try:
                if proc.returncode is None:
                    await _end_exec(proc, pid_file, grace=self.timeout)
            finally:
                # Even when cancelled again meanwhile: the pipe's read end is closed and off the
                # loop. A child the process left behind may hold the pipe: not waited for.
                await capture.finish(grace=0.5)
        code = proc.returncode or 0
        if timed_out:
            return ExecResult(exit_code=None, output=bytes(capture.data))
        if code != 0 and not await asyncio.to_thread(pid_file.exists):
            raise _classify(capture.data.decode(errors="replace"), command=argv, returncode=code)
        return ExecResult(exit_code=code if code >= 0 else 128 - code, output=bytes(capture.data))

    async def state(self, cid: str) -> State:
        out, _ = await self._run(["state", check_id(cid)])
        return State.from_json(json.loads(out))

    async def list(self) -> list[State]:
        out, _ = await self._run(["list", "--format", "json"])
        data = json.loads(out or b"null") or []
        return [State.from_json(o) for o in data]

    async def kill(self, cid: str, sig: int = signal.SIGTERM, *, all_processes: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_processes else []) + [check_id(cid), str(int(sig))]
        await self._run(args)

    async def delete(self, cid: str, *, force: bool = False) -> None:
        await self._run(["delete"] + (["--force"] if force else []) + [check_id(cid)])

    async def stats(self, cid: str) -> dict[str, Any]:
        """One `runc events --stats` sample: the "data" object (cpu, memory, pids, blkio...)."""
        out, _ = await self._run(["events", "--stats", check_id(cid)])
        event = json.loads(out)
        data = event.get("data") if isinstance(event, dict) else None
        return data if isinstance(data, dict) else {}


def _read_pid(path: Path) -> int:
    return int(path.read_text().strip())


async def _end_exec(proc: asyncio.subprocess.Process, pid_file: Path, *, grace: float) -> None:
    """End an exec'd process past its time: SIGKILL it (by the pid runc wrote) and let runc reap
    it and exit; runc itself is killed only when the process never started or runc hangs (an
    orphan of runc would be re-parented to edgekube, the subreaper, and left a zombie)."""
    try:
        pid: int | None = _read_pid(pid_file)
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await proc.wait()
                return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


class _Capture:
    """Reads a pipe on the loop until EOF, keeping the first `limit` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        self.data = bytearray()
        self._fd = fd
        self._limit = limit
        self._eof = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close()
            return
        room = self._limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def _close(self) -> None:
        if not self._eof.is_set():
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._eof.set()

    async def finish(self, *, grace: float) -> None:
        """Up to `grace` seconds for the writers to close the pipe, then stop reading."""
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._eof.wait(), grace)
        finally:
            self._close()


def _log_errors(log_file: Path) -> str:
    """The error messages of runc's JSON log (the last few: one failure logs a chain)."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return ""
    msgs = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            msgs.append(str(entry.get("msg") or ""))
    return "; ".join(m for m in msgs if m)


def _classify(message: str, *, command: Sequence[str], returncode: int | None) -> RuncError:
    low = message.lower()
    if "does not exist" in low or ("not found" in low and "container" in low):
        return NotFoundError(message, command=command, returncode=returncode)
    if "not running" in low or "process already finished" in low:
        return NotRunningError(message, command=command, returncode=returncode)
    if "already exists" in low:
        return AlreadyExistsError(message, command=command, returncode=returncode)
    return RuncError(message, command=command, returncode=returncode)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
