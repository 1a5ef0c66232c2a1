"""Processes and process groups: identity, liveness, group signals, the leftover hunt.

The only module that reads /proc or calls killpg. Linux reads /proc; elsewhere (macOS) the
identity comes from ``ps`` and the leftover hunt is limited to the recorded groups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

__all__ = [
    "HAVE_PROC",
    "ProcStat",
    "end_leftovers",
    "group_alive",
    "identity",
    "is_zombie",
    "killpg",
    "killpg_quiet",
    "owner_alive",
    "pid_exists",
    "proc_stat",
]

HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")


class ProcStat(NamedTuple):
    """The fields of /proc/<pid>/stat that orch uses."""

    state: str
    pgrp: int
    session: int
    starttime: str
    ppid: int


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


def proc_stat(pid: int) -> Optional[ProcStat]:
    """/proc/<pid>/stat of a Linux process; None if it is gone (or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: the fields start after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcStat(
            fields[0].decode("ascii", "replace"),
            int(fields[2]),
            int(fields[3]),
            fields[19].decode("ascii", "replace"),
            int(fields[1]),
        )
    except (IndexError, ValueError):
        return None


def identity(pid: int) -> Optional[str]:
    """A string that tells process ``pid`` apart from a later process reusing its pid.

    Linux: boot id + start time (field 22 of /proc/<pid>/stat). Elsewhere: ``ps -o lstart=``.
    None if there is no such process.
    """
    if HAVE_PROC:
        stat = proc_stat(pid)
        return None if stat is None else f"{_linux_boot_id()}:{stat.starttime}"
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


def is_zombie(pid: int) -> bool:
    """True for a dead process not yet reaped (Linux only; False where it cannot be told)."""
    stat = proc_stat(pid) if HAVE_PROC else None
    return stat is not None and stat.state in "ZX"


def pid_exists(pid: int) -> bool:
    """Whether any process (a zombie included) holds ``pid``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def owner_alive(pid: int, recorded_identity: Optional[str]) -> bool:
    """Whether the process recorded as (pid, identity) still runs (pid reuse ruled out).

    A SIGKILLed owner stays a zombie, with its identity, until its parent reaps it; it holds
    no lock any more (the kernel closed its files), so it owns nothing.
    """
    found = identity(pid)
    return found is not None and found == recorded_identity and not is_zombie(pid)


# --------------------------------------------------------------------------- groups


def killpg(pgid: int, sig: int) -> bool:
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


def killpg_quiet(pgid: int, sig: int) -> bool:
    """killpg where nothing better can be done about EPERM (e.g. a setuid member)."""
    try:
        return killpg(pgid, sig)
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return sys.platform != "darwin"
    if not HAVE_PROC:
        return True
    # kill(0) also succeeds on zombies, and orphaned zombies linger forever under an init
    # that does not reap (some containers); look for a member that is actually running.
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None and stat.pgrp == pgid and stat.state not in "ZX":
                return True
    return False


# --------------------------------------------------------------------------- leftovers
#
# After a crash the run's processes may outlive orch. The state names the leader of every
# attempt it recorded, but not all of them: orch can die between spawning a task and writing
# its pid, and a leader can be gone while its grandchildren live on. Three ways find them:
# a recorded leader still alive (same identity); a recorded group that still has members
# while no process holds its number (Linux never gives a live group's number to a new
# process, so that group can only be the attempt's); and, on Linux, any process whose
# environment carries the run's ORCH_RUN_ID and one of its ORCH_TASK_IDs.

# A process to end: the group to signal (0: signal the pid alone), its pid, its identity.
# A pid of 0 stands for "the group alone": no member was recorded, only the group's number.
_Target = Tuple[int, int, str]
_POLL_SEC = 0.05
_KILL_ROUNDS = 3


def end_leftovers(
    run_id: str, task_ids: Set[str], recorded: Sequence[Tuple[int, Optional[str]]], grace: float
) -> None:
    """SIGTERM every leftover process of the run, and SIGKILL what is left after ``grace``."""
    termed: Set[Tuple[int, int, str]] = set()
    deadline = time.monotonic() + grace
    kill_rounds = 0
    while kill_rounds < _KILL_ROUNDS:  # what survives three SIGKILLs is not ours to end
        targets = _leftovers(run_id, task_ids, recorded)
        if not targets:
            return
        late = time.monotonic() >= deadline
        for target in targets:
            if late:
                _signal(target, signal.SIGKILL)
            elif target not in termed:
                # Rescans find processes forked since the last one: each gets its SIGTERM.
                termed.add(target)
                _signal(target, signal.SIGTERM)
                _signal(target, signal.SIGCONT)  # a stopped process would never see it
        kill_rounds += late
        time.sleep(_POLL_SEC)


def _leftovers(
    run_id: str, task_ids: Set[str], recorded: Sequence[Tuple[int, Optional[str]]]
) -> List[_Target]:
    found: Dict[Tuple[int, int], _Target] = {}
    for pid, recorded_identity in recorded:
        # The identity rules out pid reuse: the number may belong to another process by now.
        if recorded_identity and owner_alive(pid, recorded_identity):
            found[(pid, pid)] = (pid, pid, recorded_identity)  # a leader: its own group
        elif not pid_exists(pid) and group_alive(pid):
            found[(pid, 0)] = (pid, 0, "")  # the leader is gone, its group lives on
    if not HAVE_PROC:
        return list(found.values())
    own_session = os.getsid(0)
    spared = _ancestors()
    for pid in _processes_of_run(run_id, task_ids):
        stat = proc_stat(pid)
        if pid in spared or stat is None or stat.state in "ZX":
            continue
        # A group in our own session is not one a task made: end only the process itself.
        group = stat.pgrp if stat.session != own_session else 0
        if (group, pid) in found or (group, 0) in found:
            continue
        found[(group, pid)] = (group, pid, f"{_linux_boot_id()}:{stat.starttime}")
    return list(found.values())


def _signal(target: _Target, sig: int) -> None:
    group, pid, recorded_identity = target
    if pid == 0:
        # Only the group's number is known: it is signaled only while no process holds that
        # number, i.e. while it can still only be the same group.
        if not pid_exists(group):
            killpg_quiet(group, sig)
        return
    # Checked just before signaling: while the member lives, its group id cannot be reused.
    # (Race: it could exit and the id be reused within microseconds.)
    if identity(pid) != recorded_identity:
        return
    if group and HAVE_PROC:
        stat = proc_stat(pid)
        if stat is None or stat.pgrp != group:
            return
    with contextlib.suppress(OSError):
        if group:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)


def _ancestors() -> Set[int]:
    """This process and its ancestors: never leftovers, whatever their environment says."""
    chain = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        stat = proc_stat(pid)
        if stat is None:
            break
        pid = stat.ppid
    return chain


def _processes_of_run(run_id: str, task_ids: Set[str]) -> List[int]:
    """Pids whose environment holds ORCH_RUN_ID=run_id and ORCH_TASK_ID=<a task of the run>."""
    want_run = b"ORCH_RUN_ID=" + run_id.encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue  # gone, or another user's process: not ours to end anyway
        if want_run not in environ:
            continue
        for item in environ:
            if item.startswith(b"ORCH_TASK_ID="):
                if item[len(b"ORCH_TASK_ID=") :].decode("utf-8", "replace") in task_ids:
                    pids.append(int(name))
                break
    return pids
