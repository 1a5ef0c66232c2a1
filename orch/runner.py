"""Runners: where attempts run (Ninja's CommandRunner). The scheduler sees only ``Runner``.

A runner starts an attempt from an ``AttemptSpec``, reports finished attempts from ``wait``,
enforces each attempt's wall and idle limits itself, and stops an attempt on request with
SIGTERM -> grace -> SIGKILL; every result is a value (``AttemptResult``), never an exception.
It knows nothing of plans, graphs or state files. ``wait`` is polled by the scheduler's one
loop, so a runner whose attempts live elsewhere (a batch system) fits the same shape.

``LocalRunner`` runs each attempt as its own session and process group on this machine, with
stdin from /dev/null and stdout/stderr appended straight to the task's log files by the child
itself (orch holds no pipe). Exits are watched without threads and without reaping early: one
``poll`` over the leaders' pidfds (Linux), one kqueue (macOS/BSD), or ``waitid(WNOWAIT)``
polling elsewhere. Not reaping matters: while a leader is an unreaped zombie its pid, hence its
group id, cannot be reused, so whatever the leader left in its group is killed safely first.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Protocol, Tuple, Union

from orch import procs

__all__ = [
    "AttemptEnv",
    "AttemptResult",
    "AttemptSpec",
    "IdleWatch",
    "LocalRunner",
    "Runner",
    "Started",
    "failed_result",
    "file_size",
]

# Poll interval while an ending attempt's group drains after its leader exited.
_GROUP_POLL = 0.02
# Longest sleep of the polling fallback (no pidfd, no kqueue) between two exit checks.
_POLL_CAP = 0.02
# Idle time is read from the logs' sizes at most this far apart: output is seen at most this late,
# so an idle attempt ends within a second of its limit (the promise), for two stats a check.
_IDLE_CHECK_MAX = 0.9
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT
# Distinct shared environments whose encoding is kept (plans with many different `env`s).
_ENV_CACHE_MAX = 64
_DEVNULL = getattr(os, "devnull", "/dev/null")


class AttemptEnv(Mapping[str, str]):
    """An attempt's environment: ``shared`` (one object for every attempt whose tasks have the
    same `env`, so that a runner encodes it once) overlaid with the attempt's ``own``
    variables (ORCH_TASK_ID, ORCH_ATTEMPT, ...)."""

    __slots__ = ("own", "shared")

    def __init__(self, shared: Mapping[str, str], own: Mapping[str, str]) -> None:
        self.shared = shared
        self.own = own

    def __getitem__(self, key: str) -> str:
        if key in self.own:
            return self.own[key]
        return self.shared[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.own
        yield from (key for key in self.shared if key not in self.own)

    def __len__(self) -> int:
        return len(self.shared) + sum(1 for key in self.own if key not in self.shared)


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
    timeout_sec: Optional[float] = None
    idle_timeout_sec: Optional[float] = None
    grace_sec: float = 5.0


@dataclass(frozen=True)
class Started:
    """An attempt that got a process: what crash recovery needs to find it again."""

    pid: Optional[int]
    identity: Optional[str]
    started_at: float
    stdout_offset: int
    stderr_offset: int
    job_id: Optional[str] = None  # a batch system's handle on the attempt (Slurm's job id)


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended. ``exit_code`` is None when killed by a signal or never started.

    ``timed_out_by`` names the limit that ended it (``timeout_sec`` or ``idle_timeout_sec``);
    ``error`` is set only for an attempt that never got a process (or lost it).
    """

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
    timed_out_by: Optional[str] = None
    job_id: Optional[str] = None  # the batch job that ran the command; None if it never ran

    @property
    def start_error(self) -> bool:
        return self.pid is None and self.job_id is None and self.error is not None


class Runner(Protocol):
    def start(self, spec: AttemptSpec) -> Union[Started, AttemptResult]:
        """Start an attempt; an AttemptResult (never an exception) if it could not start."""

    def wait(self, timeout: float) -> List[Tuple[str, AttemptResult]]:
        """Attempts that ended, by task id; returns as soon as one ends, else after
        ``timeout`` seconds (0: just look)."""

    def cancel(self, task_id: str) -> None:
        """Begin ending an attempt: SIGTERM, the grace period, then SIGKILL."""

    def kill_all(self) -> None:
        """End every attempt now, without grace (a second Ctrl-C)."""

    def running(self) -> int:
        """Attempts started and not yet reported by ``wait``."""

    def close(self) -> None:
        """Kill whatever still runs and release the runner's resources."""

    def adopt(self, spec: AttemptSpec, started: Started) -> None:
        """Take over an attempt an earlier (crashed) orch started, as recorded in ``started``;
        ``wait`` reports its end like any other. A runner that cannot reports it failed."""


def failed_result(
    error: str, started_at: Optional[float] = None, offsets: Tuple[int, int] = (0, 0)
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


# --------------------------------------------------------------------------- spawning


def file_size(path: str) -> int:
    """A log's (or metrics file's) size; 0 while it does not exist."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _cwd_error(cwd: str) -> str:
    if not os.path.exists(cwd):
        return f"cwd does not exist: {cwd}"
    return f"cwd is not a directory: {cwd}"


def _absolute_path_list(path: str, cwd: str) -> str:
    # Relative PATH entries mean relative to the task's cwd, as for exec in the child.
    return os.pathsep.join(os.path.join(cwd, p) if p else cwd for p in path.split(os.pathsep))


class _Spawner:
    """Starts leaders, remembering per run what every start would otherwise look up again
    (a cwd's real path, where a command lives in a PATH): the hot path of flat plans."""

    def __init__(self) -> None:
        self._here = os.getcwd()
        self._real: Dict[str, str] = {}
        self._found: Dict[Tuple[str, str, str], str] = {}
        # id(shared env) -> (that env, kept alive so the id stays its own; its encoding)
        self._encodings: Dict[int, Tuple[Mapping[str, str], Dict[bytes, bytes]]] = {}

    def _encoded(self, env: Mapping[str, str]) -> Dict[bytes, bytes]:
        """The environment as bytes, its shared part encoded once per run: posix_spawn would
        re-encode all ~100 inherited variables for every task (~20 us)."""
        if not isinstance(env, AttemptEnv):
            return {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        held = self._encodings.get(id(env.shared))
        if held is None or held[0] is not env.shared:
            if len(self._encodings) >= _ENV_CACHE_MAX:
                self._encodings.clear()
            encoded = {os.fsencode(k): os.fsencode(v) for k, v in env.shared.items()}
            held = self._encodings[id(env.shared)] = (env.shared, encoded)
        out = dict(held[1])
        for key, value in env.own.items():
            out[os.fsencode(key)] = os.fsencode(value)
        return out

    def spawn(self, spec: AttemptSpec) -> Union[int, str]:
        """The started leader's pid, or why it could not start."""
        if not spec.argv or not spec.argv[0]:
            return "empty command"
        if hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_OPEN"):
            try:
                return self._posix_spawn(spec)
            except NotImplementedError:
                pass  # no setsid in this libc's posix_spawn: Popen can do it
        if not os.path.isdir(spec.cwd):
            return _cwd_error(spec.cwd)
        return _popen(spec)

    def _executable(self, spec: AttemptSpec) -> Optional[str]:
        """argv[0] as exec would find it: a path with a '/' is taken as is (relative to the
        cwd), a bare name is looked up in the task's own PATH (not orch's)."""
        argv0 = spec.argv[0]
        if "/" in argv0:
            return argv0
        key = (argv0, spec.env.get("PATH", os.defpath), spec.cwd)
        found = self._found.get(key)
        if found is None:
            found = shutil.which(argv0, path=_absolute_path_list(key[1], spec.cwd))
            if found is not None:
                self._found[key] = found
        return found

    def _posix_spawn(self, spec: AttemptSpec) -> Union[int, str]:
        # posix_spawn has no cwd: orch's own cwd is moved for the call. Safe because the
        # loop's thread is the only one that spawns, and every path orch uses elsewhere is
        # absolute.
        real = self._real.get(spec.cwd)
        if real is None:
            if not os.path.isdir(spec.cwd):
                return _cwd_error(spec.cwd)
            real = self._real[spec.cwd] = os.path.realpath(spec.cwd)
        exe = self._executable(spec)
        if exe is None:
            return f"cannot start {spec.argv[0]!r}: No such file or directory"
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, _DEVNULL, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, spec.stdout_path, _LOG_FLAGS, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, spec.stderr_path, _LOG_FLAGS, 0o600),
        ]
        moved = real != self._here
        try:
            if moved:
                os.chdir(spec.cwd)
            try:
                return os.posix_spawn(
                    exe, list(spec.argv), self._encoded(spec.env), file_actions=actions, setsid=True
                )
            finally:
                if moved:
                    os.chdir(self._here)
        except (OSError, ValueError) as exc:
            self._found.pop((spec.argv[0], spec.env.get("PATH", os.defpath), spec.cwd), None)
            self._real.pop(spec.cwd, None)
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)) and not os.path.isdir(
                spec.cwd
            ):
                return _cwd_error(spec.cwd)
            if not os.access(os.path.dirname(spec.stdout_path) or ".", os.W_OK):
                return f"cannot open log {spec.stdout_path}: {getattr(exc, 'strerror', exc)}"
            return _start_error(spec, exc)


def _start_error(spec: AttemptSpec, exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None) or str(exc)
    return f"cannot start {spec.argv[0]!r}: {strerror}"


def _popen(spec: AttemptSpec) -> Union[int, str]:
    fds: List[int] = []
    try:
        for path in (spec.stdout_path, spec.stderr_path):
            fds.append(os.open(path, _LOG_FLAGS | getattr(os, "O_CLOEXEC", 0), 0o600))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        return f"cannot open log {exc.filename or ''}: {exc.strerror or exc}"
    try:
        child = subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=fds[0],
            stderr=fds[1],
            close_fds=True,
            start_new_session=True,  # own session and process group; never a shell
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return _start_error(spec, exc)
    finally:
        for fd in fds:
            os.close(fd)
    # The runner reaps the pid itself; the Popen object must not try to (nor warn).
    child.returncode = 0
    return child.pid


# --------------------------------------------------------------------------- exit watch


class _ExitWatch:
    """Tells which watched pids have exited, without reaping them."""

    def __init__(self) -> None:
        self._poll: Optional[Any] = select.poll() if hasattr(os, "pidfd_open") else None
        self._fds: Dict[int, int] = {}  # fd -> pid
        self._pidfd_ok = self._poll is not None
        self._kq: Optional[Any] = None
        if (
            not self._pidfd_ok
            and hasattr(select, "kqueue")
            and not sys.platform.startswith("linux")
        ):
            self._kq = select.kqueue()
        self._polled: Dict[int, bool] = {}  # pids watched by polling waitid
        self._exited: List[int] = []  # seen exited at registration
        self._delay = 0.0001

    def add(self, pid: int) -> None:
        if self._pidfd_ok:
            try:
                fd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
            except OSError:
                self._pidfd_ok = False  # old kernel or seccomp: poll from now on
            else:
                assert self._poll is not None
                self._fds[fd] = pid
                self._poll.register(fd, select.POLLIN)
                return
        if self._kq is not None and self._kq_add(pid):
            return
        self._polled[pid] = True

    def _kq_add(self, pid: int) -> bool:
        if sys.platform.startswith("linux"):
            return False  # Linux has no kqueue (and mypy, checking for Linux, knows it)
        assert self._kq is not None
        ev = select.kevent(
            pid,
            filter=select.KQ_FILTER_PROC,
            flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
            fflags=select.KQ_NOTE_EXIT,
        )
        try:
            self._kq.control([ev], 0, 0)
        except ProcessLookupError:
            self._exited.append(pid)  # already a zombie
        except OSError:
            return False
        return True

    def remove(self, pid: int) -> None:
        self._polled.pop(pid, None)
        for fd, watched in list(self._fds.items()):
            if watched == pid:
                assert self._poll is not None
                self._poll.unregister(fd)
                os.close(fd)
                del self._fds[fd]

    def wait(self, timeout: float) -> List[int]:
        """Pids that exited (still unreaped); waits at most ``timeout`` for the first."""
        if self._exited:
            done, self._exited = self._exited, []
            return done
        timeout = max(0.0, timeout)
        done = []
        if self._polled:
            # Short first sleeps catch quick commands early; the cap bounds the lag.
            timeout = min(timeout, self._delay)
            self._delay = min(self._delay * 2, _POLL_CAP)
        if self._poll is not None and self._fds:
            for fd, _ in self._poll.poll(timeout * 1000.0):
                done.append(self._fds[fd])
        elif self._kq is not None and not sys.platform.startswith("linux"):
            for ev in self._kq.control(None, 64, timeout):
                done.append(int(ev.ident))
        elif timeout:
            time.sleep(timeout)
        for pid in list(self._polled):
            if _exited_nowait(pid):
                done.append(pid)
        if done:
            self._delay = 0.0001
        return done

    def close(self) -> None:
        for pid in list(self._fds.values()):
            self.remove(pid)
        if self._kq is not None:
            self._kq.close()


# Exit statuses of leaders reaped early by the fallback below (pid -> waitpid status).
_reaped: Dict[int, int] = {}


def _exited_nowait(pid: int) -> bool:
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        # No way to peek without reaping: reap now and keep the status (the group id may
        # then be reused before leftovers are killed; a tiny window).
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done == pid:
            _reaped[pid] = status
        return done == pid
    try:
        return waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _reap(pid: int) -> int:
    """Reap the exited leader; its returncode as Popen gives it (negative: a signal)."""
    status = _reaped.pop(pid, None)
    if status is None:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 0  # reaped by someone else: nothing more can be known
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# --------------------------------------------------------------------------- idle time


class IdleWatch:
    """Idle time of one attempt, read from the growth of its two log files (no pipe); every
    runner uses it. ``fired`` says when ``limit`` seconds passed with no new byte on either
    stream (output is seen at most _IDLE_CHECK_MAX late, so within a second of the limit)."""

    __slots__ = ("check_at", "due", "limit", "sizes")

    def __init__(
        self, limit: float, now: float, sizes: Tuple[int, int], quiet: float = 0.0
    ) -> None:
        self.limit = limit
        self.sizes = sizes
        self.due = now + limit - quiet  # ``quiet``: seconds already idle (an adopted attempt)
        self.check_at: Optional[float] = min(self.due, now + min(_IDLE_CHECK_MAX, limit / 2))

    def fired(self, now: float, spec: AttemptSpec) -> bool:
        """True once the attempt has been idle for its limit (checked only when due)."""
        return self.check_at is not None and now >= self.check_at and self._check(now, spec)

    def _check(self, now: float, spec: AttemptSpec) -> bool:
        sizes = (file_size(spec.stdout_path), file_size(spec.stderr_path))
        if sizes != self.sizes:
            self.sizes = sizes
            self.due = now + self.limit
        elif now >= self.due:
            self.check_at = None
            return True
        self.check_at = min(self.due, now + min(_IDLE_CHECK_MAX, self.limit / 2))
        return False


# --------------------------------------------------------------------------- local runner


class _Proc:
    """One running attempt of the local runner."""

    __slots__ = (
        "canceled",
        "code",
        "idle",
        "kill_at",
        "pid",
        "spec",
        "started",
        "timed_out_by",
        "wall_deadline",
    )

    def __init__(self, spec: AttemptSpec, pid: int, started: Started, now: float) -> None:
        self.spec = spec
        self.pid = pid
        self.started = started
        self.wall_deadline = None if spec.timeout_sec is None else now + spec.timeout_sec
        self.idle: Optional[IdleWatch] = None
        if spec.idle_timeout_sec is not None:
            offsets = (started.stdout_offset, started.stderr_offset)
            self.idle = IdleWatch(spec.idle_timeout_sec, now, offsets)
        self.kill_at: Optional[float] = None  # set once SIGTERM was sent
        self.code: Optional[int] = None  # the leader's returncode once reaped
        self.timed_out_by: Optional[str] = None
        self.canceled = False

    def next_event(self) -> Optional[float]:
        idle = self.idle.check_at if self.idle is not None else None
        times = [t for t in (self.wall_deadline, idle, self.kill_at) if t is not None]
        if self.code is not None:
            times.append(time.monotonic() + _GROUP_POLL)
        return min(times) if times else None


class LocalRunner:
    """Attempts as process groups on this machine (see the module docstring)."""

    def __init__(self) -> None:
        self._procs: Dict[str, _Proc] = {}
        self._by_pid: Dict[int, str] = {}
        self._watch = _ExitWatch()
        self._done: List[Tuple[str, AttemptResult]] = []
        self._spawner = _Spawner()
        self._next_due: Optional[float] = None  # the earliest limit or drain check of any proc
        self._changed = False  # an attempt started or is being ended: look at limits again

    def start(self, spec: AttemptSpec) -> Union[Started, AttemptResult]:
        started_at = time.time()
        offsets = (file_size(spec.stdout_path), file_size(spec.stderr_path))
        spawned = self._spawner.spawn(spec)
        if isinstance(spawned, str):
            return failed_result(spawned, started_at, offsets)
        # On Linux crash recovery finds a live leader by its ORCH_RUN_ID environment (procs),
        # so the identity (a /proc read, or a `ps` elsewhere) is only taken where it cannot.
        identity = None if procs.HAVE_PROC else procs.identity(spawned)
        started = Started(spawned, identity, started_at, *offsets)
        self._procs[spec.task_id] = _Proc(spec, spawned, started, time.monotonic())
        self._by_pid[spawned] = spec.task_id
        self._watch.add(spawned)
        self._changed = True
        return started

    def running(self) -> int:
        return len(self._procs)

    def adopt(self, spec: AttemptSpec, started: Started) -> None:
        # A process is watched only by its parent: a dead orch's children cannot be taken over.
        error = "interrupted: the local runner cannot take over an earlier orch's process"
        offsets = (started.stdout_offset, started.stderr_offset)
        self._done.append((spec.task_id, failed_result(error, started.started_at, offsets)))

    def wait(self, timeout: float) -> List[Tuple[str, AttemptResult]]:
        if self._done:
            return self._take_done()
        now = time.monotonic()
        if self._next_due is not None:
            timeout = min(timeout, max(0.0, self._next_due - now))
        exited = self._watch.wait(timeout if self._procs else 0.0)
        for pid in exited:
            task_id = self._by_pid.get(pid)
            if task_id is not None:
                self._leader_exited(self._procs[task_id])
        now = time.monotonic()
        if exited or self._changed or (self._next_due is not None and now >= self._next_due):
            # Limits are looked at only when one may be due or something changed, not at
            # every wake: 100 quiet attempts cost next to nothing to supervise.
            self._changed = False
            due = []
            for proc in list(self._procs.values()):
                self._check_limits(proc, now)
                event = proc.next_event()
                if event is not None and proc.spec.task_id in self._procs:
                    due.append(event)
            self._next_due = min(due) if due else None
        return self._take_done()

    def cancel(self, task_id: str) -> None:
        proc = self._procs.get(task_id)
        if proc is not None and proc.kill_at is None and proc.code is None:
            proc.canceled = True
            self._terminate(proc)

    def kill_all(self) -> None:
        for proc in self._procs.values():
            procs.killpg_quiet(proc.pid, signal.SIGKILL)
            proc.kill_at = time.monotonic()
        self._changed = True

    def close(self) -> None:
        for proc in list(self._procs.values()):
            if proc.code is None:
                procs.killpg_quiet(proc.pid, signal.SIGKILL)
                self._watch.remove(proc.pid)
                proc.code = _reap(proc.pid)
        self._procs.clear()
        self._by_pid.clear()
        self._watch.close()

    # ------------------------------------------------------------------ internals

    def _take_done(self) -> List[Tuple[str, AttemptResult]]:
        done, self._done = self._done, []
        return done

    def _terminate(self, proc: _Proc) -> None:
        procs.killpg_quiet(proc.pid, signal.SIGTERM)
        procs.killpg_quiet(proc.pid, signal.SIGCONT)  # a stopped member would never see it
        proc.kill_at = time.monotonic() + proc.spec.grace_sec
        self._changed = True

    def _check_limits(self, proc: _Proc, now: float) -> None:
        if proc.kill_at is not None:
            if now >= proc.kill_at:
                # The leader (alive, or an unreaped zombie) still holds the group id; after
                # it was reaped, the group's number is only reused once the group is empty.
                procs.killpg_quiet(proc.pid, signal.SIGKILL)
                if proc.code is not None:
                    self._finish(proc)
                else:
                    proc.kill_at = now + _GROUP_POLL  # again, until the leader is gone
            elif proc.code is not None and not procs.group_alive(proc.pid):
                self._finish(proc)
            return
        if proc.wall_deadline is not None and now >= proc.wall_deadline:
            proc.timed_out_by = "timeout_sec"
            self._terminate(proc)
        elif proc.idle is not None and proc.idle.fired(now, proc.spec):
            proc.timed_out_by = "idle_timeout_sec"
            self._terminate(proc)

    def _leader_exited(self, proc: _Proc) -> None:
        self._watch.remove(proc.pid)
        if proc.kill_at is None:
            # The leader is done but still an unreaped zombie, so its pid (= the group id)
            # cannot have been reused: kill whatever it left in its group (daemons, `cmd &`)
            # now. Left alone they would run unsupervised and write into the next attempt's
            # part of the log.
            procs.killpg_quiet(proc.pid, signal.SIGKILL)
            proc.code = _reap(proc.pid)
            self._finish(proc)
            return
        # Ending (timeout or cancel): reap the leader so its zombie no longer counts, then
        # give the rest of the group what is left of the grace period (_check_limits).
        proc.code = _reap(proc.pid)
        if not procs.group_alive(proc.pid):
            self._finish(proc)

    def _finish(self, proc: _Proc) -> None:
        if self._procs.pop(proc.spec.task_id, None) is None:
            return
        self._by_pid.pop(proc.pid, None)
        code = proc.code if proc.code is not None else -signal.SIGKILL
        started = proc.started
        self._done.append(
            (
                proc.spec.task_id,
                AttemptResult(
                    exit_code=code if code >= 0 else None,
                    signal=-code if code < 0 else None,
                    timed_out=proc.timed_out_by is not None,
                    canceled=proc.canceled,
                    error=None,
                    started_at=started.started_at,
                    ended_at=time.time(),
                    pid=proc.pid,
                    stdout_offset=started.stdout_offset,
                    stderr_offset=started.stderr_offset,
                    timed_out_by=proc.timed_out_by,
                ),
            )
        )
