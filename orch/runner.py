"""One attempt of one task, as a real process group (Ninja's CommandRunner).

The runner knows nothing of plans, graphs or state files: it starts a command in its own
session with stdin from /dev/null and stdout/stderr appended straight to the task's log
files, waits for it without spinning, enforces the deadline and the cancel event with
SIGTERM -> grace -> SIGKILL to the whole group, and returns what happened as a value.

The interface is narrow on purpose (``start_attempt`` / ``supervise`` / ``Attempt``) so that
another executor could replace local ``Popen`` without touching the scheduler.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "Attempt",
    "AttemptResult",
    "AttemptSpec",
    "failed_result",
    "process_identity",
    "run_attempt",
    "start_attempt",
    "supervise",
]

# Longest single wait while supervising: bounds how late a set cancel event is noticed.
# The leader's exit itself is noticed at once (pidfd / kqueue), not at the end of a slice.
_SLICE = 0.05
# Longest sleep of the polling fallback (no pidfd, no kqueue) between two exit checks.
_POLL_CAP = 0.02
# Poll interval while waiting for the rest of a group to go after SIGTERM.
_GROUP_POLL = 0.02
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")


@dataclass(frozen=True)
class AttemptSpec:
    """Everything needed to run one attempt. ``env`` is the complete environment."""

    task_id: str
    attempt: int
    argv: Tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    stdout_path: str
    stderr_path: str
    timeout_sec: Optional[float]
    grace_sec: float = 5.0


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended. ``exit_code`` is None when killed by a signal or never started."""

    exit_code: Optional[int]
    signal: Optional[int]
    timed_out: bool
    canceled: bool
    error: Optional[str]
    started_at: float
    ended_at: float
    pid: Optional[int]
    stdout_offset: int
    stderr_offset: int


# --------------------------------------------------------------------------- identity


_boot_id: Optional[str] = None


def _linux_boot_id() -> str:
    # Start times count clock ticks since boot; the boot id keeps an identity taken before
    # a reboot from matching an early-boot process of the next boot.
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = "unknown"
    return _boot_id


def _proc_stat_fields(pid: int) -> Optional[Tuple[str, ...]]:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return tuple(raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split())


def process_identity(pid: int) -> Optional[str]:
    """A string that tells process ``pid`` apart from a later process reusing its pid.

    Linux: boot id + start time (field 22 of /proc/<pid>/stat). Elsewhere: ``ps -o lstart=``.
    None if there is no such process.
    """
    if _HAVE_PROC:
        fields = _proc_stat_fields(pid)
        if fields is None or len(fields) < 20:
            return None
        return f"{_linux_boot_id()}:{fields[19]}"
    try:
        out = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.decode("ascii", "replace").strip()
    return f"ps:{text}" if out.returncode == 0 and text else None


# --------------------------------------------------------------------------- groups


def _killpg(pgid: int, sig: int) -> bool:
    """killpg tolerating a group that is already gone; False if nothing was signaled."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # macOS answers EPERM for a group whose members are all zombies.
        if sys.platform != "darwin":
            raise
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return sys.platform != "darwin"
    if not _HAVE_PROC:
        return True
    # kill(0) also succeeds on zombies, and orphaned zombies linger forever under an init
    # that does not reap (some containers); look for a member that is actually running.
    wanted = str(pgid)
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _proc_stat_fields(int(name))
            if fields and len(fields) > 2 and fields[2] == wanted and fields[0] not in "ZX":
                return True
    return False


def _wait_group_gone(pgid: int, until: float) -> bool:
    """Poll until the group has no live member or the monotonic time ``until``; True if gone."""
    while _group_alive(pgid):
        left = until - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(_GROUP_POLL, left))
    return True


def _killpg_quiet(pgid: int, sig: int) -> bool:
    # Used where nothing better can be done about EPERM (e.g. a setuid member).
    try:
        return _killpg(pgid, sig)
    except OSError:
        return False


# --------------------------------------------------------------------------- exit watch


class _ExitWatch:
    """Waits for a child's exit *without reaping it*.

    Not reaping matters: while the leader is an unreaped zombie its pid, hence the group id,
    cannot be reused, so the group can still be signaled safely after the leader is done.
    Linux 5.3+ (Python 3.9+) uses a pidfd and macOS/BSD a kqueue: both wake the instant the
    child exits. Otherwise waitid(WNOWAIT) is polled with a short growing backoff.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self._exited = False
        self._poll: Optional[Any] = None
        self._fd = -1
        self._kq: Optional[Any] = None
        self._delay = 0.0001  # backoff of the polling fallback, kept across calls
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._fd = pidfd_open(popen.pid)
            except OSError:
                self._fd = -1  # old kernel or seccomp: fall through
            else:
                self._poll = select.poll()
                self._poll.register(self._fd, select.POLLIN)
                return
        if hasattr(select, "kqueue"):
            self._kq = _kqueue_for_exit(popen.pid)

    def wait(self, timeout: float) -> bool:
        """True once the child has exited (still unreaped); waits at most ``timeout``."""
        if self._exited or self._popen.returncode is not None:
            self._exited = True
        elif self._poll is not None:
            self._exited = bool(self._poll.poll(max(0.0, timeout) * 1000.0))
        elif self._kq is not None:
            self._exited = bool(self._kq.control(None, 1, max(0.0, timeout)))
        else:
            self._exited, self._delay = _poll_exit(self._popen, timeout, self._delay)
        return self._exited

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._kq is not None:
            self._kq.close()
            self._kq = None


def _kqueue_for_exit(pid: int) -> Optional[Any]:
    if sys.platform.startswith("linux"):
        return None  # Linux has no kqueue (and mypy, checking for Linux, knows it)
    try:
        kq = select.kqueue()
    except OSError:
        return None
    ev = select.kevent(
        pid,
        filter=select.KQ_FILTER_PROC,
        flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
        fflags=select.KQ_NOTE_EXIT,
    )
    try:
        kq.control([ev], 0, 0)
    except OSError:
        # Registering fails (ESRCH) for a child that is already a zombie: the polling
        # fallback will see it at its first check.
        kq.close()
        return None
    return kq


def _exited_nowait(popen: subprocess.Popen[bytes]) -> bool:
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        # No way to peek without reaping: reap (the group-id reuse window is then tiny).
        return popen.poll() is not None
    try:
        return waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped through the Popen object


def _poll_exit(popen: subprocess.Popen[bytes], timeout: float, delay: float) -> Tuple[bool, float]:
    """Poll for the exit until ``timeout``; returns (exited, the backoff delay reached)."""
    end = time.monotonic() + timeout
    while not _exited_nowait(popen):
        left = end - time.monotonic()
        if left <= 0:
            return False, delay
        time.sleep(min(delay, left))
        # Short first sleeps catch quick commands early; the cap bounds the lag on long ones.
        delay = min(delay * 2, _POLL_CAP)
    return True, delay


# --------------------------------------------------------------------------- attempt


class Attempt:
    """A started attempt: the leader of its own process group (pid == pgid)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        started_at: float,
        started_mono: float,
        stdout_offset: int,
        stderr_offset: int,
    ) -> None:
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the leader's pid names the group
        self.identity = process_identity(popen.pid)
        self.started_at = started_at
        self.stdout_offset = stdout_offset
        self.stderr_offset = stderr_offset
        self._started_mono = started_mono
        self._popen = popen
        self._watch = _ExitWatch(popen)
        self._lock = threading.Lock()

    def poll(self) -> Optional[int]:
        """The leader's returncode (negative: signal) if it has exited and was reaped, else None."""
        return self._popen.returncode

    def wait(self, timeout: Optional[float]) -> Optional[int]:
        """Wait for the leader and reap it; None if ``timeout`` passed first.

        For callers that manage the group themselves; ``supervise`` does not need it.
        """
        if timeout is None:
            while not self._exited(_SLICE):
                pass
        elif not self._exited(timeout):
            return None
        return self._popen.wait()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole group, tolerating one that is already gone."""
        _killpg(self.pgid, sig)

    def _exited(self, timeout: float) -> bool:
        with self._lock:
            return self._watch.wait(timeout)

    def _reap(self) -> int:
        code = self._popen.wait()
        with self._lock:
            self._watch.close()
        return code


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat()


def _open_log(path: str, marker: bytes) -> Tuple[int, int]:
    """Open ``path`` for appending and write ``marker``; returns (fd, offset of the marker)."""
    fd = os.open(path, _LOG_FLAGS, 0o600)
    try:
        offset = os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, marker)
    except OSError:
        os.close(fd)
        raise
    return fd, offset


def _start_error(spec: AttemptSpec, exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None) or str(exc)
    if getattr(exc, "filename", None) == spec.cwd and isinstance(exc, FileNotFoundError):
        return f"cwd does not exist: {spec.cwd}"
    return f"cannot start {spec.argv[0]!r}: {strerror}"


def start_attempt(spec: AttemptSpec) -> Union[Attempt, AttemptResult]:
    """Write the log markers and spawn the command; an AttemptResult if it could not start.

    Called from the scheduler's thread. Never raises for a bad command, cwd or log path.
    """
    started_at = time.time()
    marker = f"=== orch: task {spec.task_id} attempt {spec.attempt} started {_iso(started_at)} ==="
    fds: List[int] = []
    offsets = [0, 0]
    try:
        try:
            for i, path in enumerate((spec.stdout_path, spec.stderr_path)):
                fd, offsets[i] = _open_log(path, (marker + "\n").encode("utf-8", "replace"))
                fds.append(fd)
        except OSError as exc:
            error = f"cannot open log {exc.filename or ''}: {exc.strerror or exc}"
            return failed_result(error, started_at, offsets)
        spawned = _spawn(spec, fds[0], fds[1])
        if isinstance(spawned, str):
            _write_quietly(fds[1], f"orch: {spawned}\n")
            return failed_result(spawned, started_at, offsets)
        return Attempt(spawned, started_at, time.monotonic(), offsets[0], offsets[1])
    finally:
        # The child holds its own copies; orch keeps no descriptor and no pipe.
        for fd in fds:
            os.close(fd)


def _spawn(spec: AttemptSpec, out_fd: int, err_fd: int) -> Union[subprocess.Popen[bytes], str]:
    """The started leader, or why it could not start."""
    error = _precheck(spec)
    if error is not None:
        return error
    try:
        return subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            close_fds=True,
            start_new_session=True,  # own session and process group; never a shell
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return _start_error(spec, exc)


def _precheck(spec: AttemptSpec) -> Optional[str]:
    if not spec.argv or not spec.argv[0]:
        return "empty command"
    if not os.path.exists(spec.cwd):
        return f"cwd does not exist: {spec.cwd}"
    if not os.path.isdir(spec.cwd):
        return f"cwd is not a directory: {spec.cwd}"
    return None


def _write_quietly(fd: int, text: str) -> None:
    # The error is in the result already; the log line is a courtesy to the reader.
    with contextlib.suppress(OSError):
        os.write(fd, text.encode("utf-8", "replace"))


def failed_result(
    error: str, started_at: Optional[float] = None, offsets: Sequence[int] = (0, 0)
) -> AttemptResult:
    """The result of an attempt that never got a process."""
    ended_at = time.time()
    return AttemptResult(
        exit_code=None,
        signal=None,
        timed_out=False,
        canceled=False,
        error=error,
        started_at=ended_at if started_at is None else started_at,
        ended_at=ended_at,
        pid=None,
        stdout_offset=offsets[0],
        stderr_offset=offsets[1],
    )


def supervise(attempt: Attempt, spec: AttemptSpec, cancel: threading.Event) -> AttemptResult:
    """Block until the attempt is over (worker thread); enforce deadline and cancel.

    The leader's exit wakes the wait immediately; ``cancel`` is looked at every ``_SLICE``.
    """
    deadline = None if spec.timeout_sec is None else attempt._started_mono + spec.timeout_sec
    timed_out = canceled = False
    while True:
        wait = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
        if attempt._exited(wait):
            break
        if cancel.is_set():
            canceled = True
            break
        if deadline is not None and time.monotonic() >= deadline:
            timed_out = True
            break
    if timed_out or canceled:
        _terminate(attempt, spec.grace_sec)
    else:
        # The leader is done but is still an unreaped zombie, so its pid (= the group id)
        # cannot have been reused: kill whatever it left in its group (daemons, `cmd &`)
        # now. Left alone they would keep running unsupervised, hold the log files open and
        # write into the next attempt's part of the log.
        _killpg_quiet(attempt.pgid, signal.SIGKILL)
    code = attempt._reap()
    return AttemptResult(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        timed_out=timed_out,
        canceled=canceled,
        error=None,
        started_at=attempt.started_at,
        ended_at=time.time(),
        pid=attempt.pid,
        stdout_offset=attempt.stdout_offset,
        stderr_offset=attempt.stderr_offset,
    )


def _terminate(attempt: Attempt, grace_sec: float) -> None:
    """SIGTERM the group, give it ``grace_sec`` to go, then SIGKILL what is left."""
    pgid = attempt.pgid
    _killpg_quiet(pgid, signal.SIGTERM)
    # A stopped member would never see its SIGTERM.
    _killpg_quiet(pgid, signal.SIGCONT)
    kill_at = time.monotonic() + grace_sec
    while not attempt._exited(min(_SLICE, kill_at - time.monotonic())):
        if time.monotonic() >= kill_at:
            # The leader (alive or unreaped) still holds the group id: KILL is safe.
            _killpg_quiet(pgid, signal.SIGKILL)
            return
    # Reap the leader so its zombie no longer counts, then give the rest of the group the
    # remaining grace. Race: if the group empties and its number is taken by a new group
    # between the check and the KILL, that group would be hit; it needs the pid space to
    # wrap onto this exact number within microseconds.
    attempt._reap()
    if not _wait_group_gone(pgid, kill_at):
        _killpg_quiet(pgid, signal.SIGKILL)


def run_attempt(spec: AttemptSpec, cancel: threading.Event) -> AttemptResult:
    """Start and supervise one attempt in the calling thread."""
    started = start_attempt(spec)
    if isinstance(started, AttemptResult):
        return started
    return supervise(started, spec, cancel)
