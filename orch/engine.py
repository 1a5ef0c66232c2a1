"""Run, resume and cancel: the side-effecting edge around the scheduler.

Owns what surrounds one session of a run: taking ownership, printing ``run_id:``, funnelling
SIGINT/SIGTERM/SIGHUP into the one stop path, recovering from a crashed owner, writing the final
report, and turning the run's outcome into an exit code.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from orch import store as store_mod
from orch.errors import StateError, UsageError
from orch.model import Plan, RunStatus, SkipReason, TaskStatus
from orch.scheduler import Scheduler, StopRequest, plan_state

__all__ = ["EXIT_CODES", "cancel_run", "resume_run", "start_run"]

EXIT_CODES = {
    RunStatus.SUCCESS: 0,
    RunStatus.FAILED: 3,
    RunStatus.CANCELED: 4,
}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_FINAL = (RunStatus.SUCCESS.value, RunStatus.FAILED.value, RunStatus.CANCELED.value)
_HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
# How long `orch cancel` waits for a run whose new owner holds the lock but has not yet
# written owner.json (a resume that is just starting).
_OWNER_WAIT_SEC = 5.0


def _grace_sec() -> float:
    """SIGTERM -> SIGKILL grace period, from ORCH_GRACE_SEC (default 5 s)."""
    text = os.environ.get("ORCH_GRACE_SEC", "5")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"ORCH_GRACE_SEC must be a number of seconds >= 0, got {text!r}")
    return value


def start_run(
    *,
    plan: Plan,
    plan_bytes: bytes,
    plan_path: str,
    home: str,
    workdir: str,
    max_parallel: int,
    fail_fast: bool,
) -> int:
    artifacts_dir = None
    if plan.artifacts_dir is not None:
        artifacts_dir = os.path.join(workdir, plan.artifacts_dir)
    now = store_mod.now_iso()
    state = plan_state(
        plan,
        {
            "status": RunStatus.PENDING.value,
            "goal": plan.goal,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "ended_at": None,
            "workdir": workdir,
            "plan_path": plan_path,
            "artifacts_dir": artifacts_dir,
            "max_parallel": max_parallel,
            "fail_fast": fail_fast,
        },
    )
    grace = _grace_sec()
    stop = StopRequest()
    # Handlers go in before the run exists: a signal sent the moment `run_id:` appears must
    # already take the cancel path.
    with _stop_signals(stop):
        run = store_mod.create_run(home, plan_bytes, state)
        _announce(run.run_id)
        return _execute(run, plan, {t.id for t in plan.tasks}, max_parallel, stop, grace)


def resume_run(*, home: str, run_id: str, failed_only: bool, max_parallel: Optional[int]) -> int:
    from orch.plan import parse_plan

    grace = _grace_sec()
    stop = StopRequest()
    with _stop_signals(stop):
        run = store_mod.open_run(home, run_id)
        try:
            plan_file = os.path.join(run.run_dir, "plan.yaml")
            plan = parse_plan(store_mod.read_plan_text(run.run_dir), plan_file)
            _check_snapshot(plan, run.state, plan_file)
            _announce(run.run_id)
            _recover_interrupted(run, grace)
            selected = _select_for_resume(plan, run.state, failed_only)
            if not selected and run.state["status"] in _FINAL:
                # Nothing to run (e.g. the run already succeeded): no new session, so its
                # recorded times and report stay as they are.
                _close_quietly(run)
                return EXIT_CODES[RunStatus(run.state["status"])]
            if max_parallel is not None:
                run.update_run({"max_parallel": max_parallel})
        except BaseException:
            _close_quietly(run)
            raise
        return _execute(run, plan, selected, int(run.state["max_parallel"]), stop, grace)


def _check_snapshot(plan: Plan, state: Dict[str, Any], plan_file: str) -> None:
    planned = [t.id for t in plan.tasks]
    if set(planned) != set(state["tasks"]):
        raise StateError(
            f"{plan_file}: the plan snapshot does not match the run's state.json "
            f"(tasks {sorted(planned)} vs {sorted(state['tasks'])}); left untouched"
        )


def cancel_run(*, home: str, run_id: str) -> str:
    """Ask the run to stop; returns the line to print."""
    run_dir = store_mod.run_dir_for(home, run_id)
    grace = _grace_sec()
    give_up = time.monotonic() + _OWNER_WAIT_SEC
    while True:
        state = store_mod.read_state(run_dir)
        if store_mod.owner_alive(run_dir):
            # The owner removed any stale cancel file before writing owner.json: this one
            # is for it.
            path = os.path.join(run_dir, store_mod.CANCEL_FILE)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            return f"cancel requested: {run_id}"
        if state["status"] in _FINAL:
            return f"run {run_id} already finished ({state['status']}); nothing to cancel"
        try:
            run = store_mod.open_run(home, run_id)
            break
        except store_mod.RunLocked:
            # Locked but no live owner.json yet: a resume is taking over. Ask it instead.
            if time.monotonic() >= give_up:
                raise
            time.sleep(0.05)
    # Interrupted: its orch died. End what it left behind and close the run as CANCELED.
    try:
        _recover_interrupted(run, grace, canceled=True)
        for task_id, entry in run.state["tasks"].items():
            if entry["status"] in (TaskStatus.PENDING.value, TaskStatus.RUNNING.value):
                run.update_task(
                    task_id,
                    {
                        "status": TaskStatus.CANCELED.value,
                        "canceled": True,
                        "skip_reason": SkipReason.RUN_CANCELED.value,
                    },
                )
        run.update_run({"status": RunStatus.CANCELED.value, "ended_at": store_mod.now_iso()})
        run.flush()
        _write_report(run)
    finally:
        run.close()
    return f"cancel requested: {run_id} (its orch process was gone; run marked CANCELED)"


def _announce(run_id: str) -> None:
    sys.stdout.write(f"run_id: {run_id}\n")
    sys.stdout.flush()


def _execute(
    run: store_mod.RunStore,
    plan: Plan,
    selected: Set[str],
    max_parallel: int,
    stop: StopRequest,
    grace: float,
) -> int:
    """One session of the run. Called with the stop signals already funnelled into ``stop``."""
    from orch.progress import make_progress

    progress = make_progress(sys.stderr, os.environ)
    began = store_mod.now_iso()
    try:
        run.update_run({"status": RunStatus.RUNNING.value, "started_at": began, "ended_at": None})
        # A snapshot, not just a journal line: state.json itself says RUNNING from now on,
        # so that a crash leaves a run that any reader of the file sees as RUNNING.
        run.compact()
        scheduler = Scheduler(
            plan,
            run,
            progress,
            selected=selected,
            max_parallel=max_parallel,
            fail_fast=bool(run.state["fail_fast"]),
            stop=stop,
            grace_sec=grace,
        )
        status = scheduler.run()
        run.update_run({"status": status.value, "ended_at": store_mod.now_iso()})
        run.flush()
        report_path = _write_report(run)
    except OSError as err:
        raise StateError(
            f"run {run.run_id} stopped: cannot write to {err.filename or run.run_dir}: "
            f"{err.strerror or err}"
        ) from None
    finally:
        _close_quietly(run)
    progress.run_finished(status.value, _counts(run.state), _wall(began), report_path)
    return EXIT_CODES[status]


def _close_quietly(run: store_mod.RunStore) -> None:
    try:
        run.close()
    except OSError as err:
        sys.stderr.write(f"orch: cannot write the final state of run {run.run_id}: {err}\n")


@contextlib.contextmanager
def _stop_signals(stop: StopRequest) -> Iterator[None]:
    """Funnel Ctrl-C, SIGTERM and SIGHUP into the scheduler's one stop path."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

    def handler(signum: int, frame: Any) -> None:
        stop.request()

    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _counts(state: Dict[str, Any]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for entry in state["tasks"].values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    return counts


def _wall(began_iso: str) -> float:
    from datetime import datetime

    return (datetime.now().astimezone() - datetime.fromisoformat(began_iso)).total_seconds()


def _write_report(run: store_mod.RunStore) -> str:
    from orch import logs, report

    def stderr_tail(task_id: str, lines: int) -> List[str]:
        path = run.state["tasks"][task_id]["stderr_path"]
        try:
            raw = logs.tail_lines(path, lines)
        except OSError:
            return []
        return [line.decode("utf-8", "replace").rstrip("\n") for line in raw]

    path = os.path.join(run.run_dir, "report", "final_report.md")
    text = report.render_final_report(run.state, stderr_tail)
    store_mod.write_file_atomic(path, text.encode("utf-8"))
    return path


def _recover_interrupted(run: store_mod.RunStore, grace: float, canceled: bool = False) -> None:
    """End what a dead owner left running, then close its attempts as ``interrupted``.

    With ``canceled`` the RUNNING tasks keep their status for the caller to mark CANCELED;
    otherwise they become FAILED, so that a resume runs them again.
    """
    tasks = run.state["tasks"]
    recorded = []
    for entry in tasks.values():
        history = entry["history"]
        if history and history[-1].get("ended_at") is None and history[-1].get("pid"):
            recorded.append((int(history[-1]["pid"]), history[-1].get("identity")))
    _end_leftovers(run.run_id, set(tasks), recorded, grace)
    now = store_mod.now_iso()
    for task_id, entry in tasks.items():
        history = entry["history"]
        if history and history[-1].get("ended_at") is None:
            run.update_attempt(task_id, {"ended_at": now, "error": "interrupted"})
        if entry["status"] == TaskStatus.RUNNING.value and not canceled:
            run.update_task(
                task_id,
                {"status": TaskStatus.FAILED.value, "error": "interrupted", "ended_at": now},
            )
    run.flush()


# ---------------------------------------------------------------------------- leftovers
#
# After a crash the run's processes may outlive orch. The state names the leader of every
# attempt it recorded, but not all of them: orch can die between spawning a task and writing
# its pid, and a leader can be gone while its grandchildren live on. Every task process gets
# ORCH_RUN_ID and ORCH_TASK_ID in its environment and passes them to its children, so on Linux
# the rest are found in /proc/*/environ. Elsewhere only the recorded leaders' groups are ended.

# A process to end: the group to signal (0: signal the pid alone), its pid, its identity.
_Target = Tuple[int, int, str]
_POLL_SEC = 0.05
_KILL_ROUNDS = 3


def _end_leftovers(
    run_id: str, task_ids: Set[str], recorded: List[Tuple[int, Optional[str]]], grace: float
) -> None:
    """SIGTERM every leftover process of the run, and SIGKILL what is left after ``grace``."""
    termed: Set[Tuple[int, str]] = set()
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
            elif target[1:] not in termed:
                # Rescans find processes forked since the last one: each gets its SIGTERM.
                termed.add(target[1:])
                _signal(target, signal.SIGTERM)
                _signal(target, signal.SIGCONT)  # a stopped process would never see it
        kill_rounds += late
        time.sleep(_POLL_SEC)


def _leftovers(
    run_id: str, task_ids: Set[str], recorded: List[Tuple[int, Optional[str]]]
) -> List[_Target]:
    from orch.runner import process_identity

    found: Dict[int, _Target] = {}
    for pid, identity in recorded:
        # The identity rules out pid reuse: the number may belong to another process by now.
        if identity and process_identity(pid) == identity and not _zombie(pid):
            found[pid] = (pid, pid, identity)  # a leader: its own group (own session)
    if not _HAVE_PROC:
        return list(found.values())
    own_session = os.getsid(0)
    spared = _ancestors()
    for pid in _processes_of_run(run_id, task_ids):
        stat = _stat(pid)
        identity = process_identity(pid)
        if pid in spared or pid in found or stat is None or identity is None or stat[0] in "ZX":
            continue
        # A group in our own session is not one a task made: end only the process itself.
        group = stat[1] if stat[2] != own_session else 0
        found[pid] = (group, pid, identity)
    return list(found.values())


def _signal(target: _Target, sig: int) -> None:
    from orch.runner import process_identity

    group, pid, identity = target
    # Checked just before signaling: while the member lives, its group id cannot be reused.
    # (Race: it could exit and the id be reused within microseconds; as in runner._terminate.)
    if process_identity(pid) != identity:
        return
    if group and _HAVE_PROC:
        stat = _stat(pid)
        if stat is None or stat[1] != group:
            return
    with contextlib.suppress(OSError):
        if group:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)


def _stat(pid: int) -> Optional[Tuple[str, int, int]]:
    """(state, process group, session) of a Linux process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: the fields start after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def _zombie(pid: int) -> bool:
    stat = _stat(pid) if _HAVE_PROC else None
    return stat is not None and stat[0] in "ZX"


def _ancestors() -> Set[int]:
    """This process and its ancestors: never leftovers, whatever their environment says."""
    chain = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in chain:
        chain.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            pid = int(raw[raw.rfind(b")") + 2 :].split()[1])
        except (OSError, IndexError, ValueError):
            break
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


def _select_for_resume(plan: Plan, state: Dict[str, Any], failed_only: bool) -> Set[str]:
    tasks = state["tasks"]
    if not failed_only:
        return {t.id for t in plan.tasks if tasks[t.id]["status"] != TaskStatus.SUCCESS.value}
    # PENDING is a task the run never finished: an interrupted run's tasks that never
    # started or waited out a retry backoff. Leaving them PENDING would leave the run
    # unfinishable by --failed-only, so they count with the failed ones.
    again = (TaskStatus.FAILED.value, TaskStatus.PENDING.value)
    selected = {t.id for t in plan.tasks if tasks[t.id]["status"] in again}
    # SKIPPED because of a selected task, transitively: repeat until nothing changes, in
    # dependency order without recursion.
    dependents: Dict[str, List[str]] = {t.id: [] for t in plan.tasks}
    for t in plan.tasks:
        for dep in t.depends_on:
            dependents[dep].append(t.id)
    stack = list(selected)
    while stack:
        for child in dependents[stack.pop()]:
            entry = tasks[child]
            if (
                child not in selected
                and entry["status"] == TaskStatus.SKIPPED.value
                and entry["skip_reason"] == SkipReason.DEPENDENCY_NOT_SUCCESS.value
            ):
                selected.add(child)
                stack.append(child)
    return selected
