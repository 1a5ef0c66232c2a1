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
from typing import Any, Dict, Iterator, List, Optional, Set

from orch import exitcodes, procs
from orch import store as store_mod
from orch.errors import StateError, UsageError
from orch.graph import select_for_resume
from orch.layout import RunLayout
from orch.model import Plan, RunStatus, SkipReason, TaskStatus
from orch.runner import LocalRunner
from orch.scheduler import RunDirectoryGone, Scheduler, StopRequest, recorded_outcome
from orch.state import RunState, initial_run_state

__all__ = ["cancel_run", "resume_run", "start_run"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_FINAL = (RunStatus.SUCCESS.value, RunStatus.FAILED.value, RunStatus.CANCELED.value)
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

    def make_state(run_id: str, run_dir: str) -> RunState:
        layout = RunLayout(run_dir)
        return initial_run_state(
            plan,
            run_id=run_id,
            run_dir=run_dir,
            home=home,
            workdir=workdir,
            plan_path=plan_path,
            artifacts_dir=artifacts_dir,
            max_parallel=max_parallel,
            fail_fast=fail_fast,
            now=store_mod.now_iso(),
            log_paths={
                t.id: (layout.stdout_log(t.id), layout.stderr_log(t.id)) for t in plan.tasks
            },
        )

    grace = _grace_sec()
    stop = StopRequest()
    # Handlers go in before the run exists: a signal sent the moment `run_id:` appears must
    # already take the cancel path.
    with _stop_signals(stop):
        run = store_mod.create_run(home, plan_bytes, make_state)
        _announce(run.run_id)
        return _execute(run, plan, {t.id for t in plan.tasks}, max_parallel, stop, grace)


def resume_run(*, home: str, run_id: str, failed_only: bool, max_parallel: Optional[int]) -> int:
    from orch.plan import parse_plan

    grace = _grace_sec()
    stop = StopRequest()
    with _stop_signals(stop):
        run = store_mod.open_run(home, run_id)
        try:
            plan_file = run.layout.plan
            plan = parse_plan(store_mod.read_plan_text(run.run_dir), plan_file)
            _check_snapshot(plan, run.state, plan_file)
            _announce(run.run_id)
            _recover_interrupted(run, grace)
            recorded = {t: recorded_outcome(e) for t, e in run.state["tasks"].items()}
            selected = select_for_resume(plan.tasks, recorded, failed_only=failed_only)
            if not selected and run.state["status"] in _FINAL:
                # Nothing to run (e.g. the run already succeeded): no new session, so its
                # recorded times and report stay as they are.
                _close_quietly(run)
                return exitcodes.for_run_status(RunStatus(run.state["status"]))
            if max_parallel is not None:
                run.update_run({"max_parallel": max_parallel})
        except BaseException:
            _close_quietly(run)
            raise
        return _execute(run, plan, selected, int(run.state["max_parallel"]), stop, grace)


def _check_snapshot(plan: Plan, state: RunState, plan_file: str) -> None:
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
            path = RunLayout(run_dir).cancel
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
    runner = LocalRunner()
    closed = False
    try:
        run.update_run({"status": RunStatus.RUNNING.value, "started_at": began, "ended_at": None})
        # A snapshot, not just a journal line: state.json itself says RUNNING from now on,
        # so that a crash leaves a run that any reader of the file sees as RUNNING.
        run.compact()
        scheduler = Scheduler(
            plan,
            run,
            progress,
            runner,
            selected=selected,
            max_parallel=_fit_to_descriptor_limit(max_parallel),
            fail_fast=bool(run.state["fail_fast"]),
            stop=stop,
            grace_sec=grace,
        )
        status = scheduler.run()
        run.update_run({"status": status.value, "ended_at": store_mod.now_iso()})
        run.flush()
        report_path = _write_report(run)
    except RunDirectoryGone as err:
        # Nothing can be recorded: give up ownership without writing a stray directory.
        closed = True
        run.abandon()
        raise StateError(str(err)) from None
    except OSError as err:
        raise StateError(
            f"run {run.run_id} stopped: cannot write to {err.filename or run.run_dir}: "
            f"{err.strerror or err}"
        ) from None
    finally:
        runner.close()
        if not closed:
            _close_quietly(run)
    progress.run_finished(status.value, _counts(run.state), _wall(began), report_path)
    return exitcodes.for_run_status(status)


# Descriptors orch itself may hold (journal, lock, std streams, collectors' files, imports),
# and the most one running attempt holds at once (its pidfd; two log files while spawning).
_OWN_DESCRIPTORS = 24
_DESCRIPTORS_PER_ATTEMPT = 2


def _fit_to_descriptor_limit(max_parallel: int) -> int:
    """--max-parallel lowered to what ``ulimit -n`` allows, said once on stderr."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return max_parallel
    if soft == resource.RLIM_INFINITY:
        return max_parallel
    allowed = max(1, (soft - _OWN_DESCRIPTORS) // _DESCRIPTORS_PER_ATTEMPT)
    if allowed >= max_parallel:
        return max_parallel
    sys.stderr.write(
        f"orch: the open-file limit (ulimit -n {soft}) allows {allowed} tasks at once: "
        f"running at most {allowed}, not --max-parallel {max_parallel}\n"
    )
    return allowed


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


def _counts(state: RunState) -> Dict[str, int]:
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
        path = run.state["tasks"][task_id].get("stderr_path")
        try:
            raw = logs.tail_lines(path, lines) if path else []
        except OSError:
            return []
        return [line.decode("utf-8", "replace").rstrip("\n") for line in raw]

    path = run.layout.report
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
        pid = history[-1].get("pid") if history else None
        if pid and history[-1].get("ended_at") is None:
            recorded.append((pid, history[-1].get("identity")))
    procs.end_leftovers(run.run_id, set(tasks), recorded, grace)
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
