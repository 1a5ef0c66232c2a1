"""Run, resume and cancel: the side-effecting edge around the scheduler.

Owns what surrounds one session of a run: taking ownership, printing ``run_id:``, funnelling
SIGINT/SIGTERM/SIGHUP into the one stop path, recovering from a crashed owner, writing the final
report, and turning the run's outcome into an exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Set

from orch import store as store_mod
from orch.errors import StateError
from orch.model import Plan, RunStatus, SkipReason, TaskStatus
from orch.scheduler import Scheduler, StopRequest, plan_state

__all__ = ["EXIT_CODES", "cancel_run", "resume_run", "start_run"]

EXIT_CODES = {
    RunStatus.SUCCESS: 0,
    RunStatus.FAILED: 3,
    RunStatus.CANCELED: 4,
}
_GRACE_SEC = float(os.environ.get("ORCH_GRACE_SEC", "5"))
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
    run = store_mod.create_run(home, plan_bytes, state)
    _announce(run.run_id)
    return _execute(run, plan, {t.id for t in plan.tasks}, max_parallel)


def resume_run(*, home: str, run_id: str, failed_only: bool, max_parallel: Optional[int]) -> int:
    from orch.plan import parse_plan

    run = store_mod.open_run(home, run_id)
    try:
        plan = parse_plan(
            store_mod.read_plan_text(run.run_dir), os.path.join(run.run_dir, "plan.yaml")
        )
        _recover_interrupted(run)
        selected = _select_for_resume(plan, run.state, failed_only)
        if max_parallel is not None:
            run.update_run({"max_parallel": max_parallel})
    except BaseException:
        run.close()
        raise
    _announce(run.run_id)
    return _execute(run, plan, selected, int(run.state["max_parallel"]))


def cancel_run(*, home: str, run_id: str) -> str:
    """Ask the run to stop; returns the line to print."""
    run_dir = store_mod.run_dir_for(home, run_id)
    state = store_mod.read_state(run_dir)
    if store_mod.owner_alive(run_dir):
        fd = os.open(os.path.join(run_dir, store_mod.CANCEL_FILE), os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        return f"cancel requested: {run_id}"
    if state["status"] in (
        RunStatus.SUCCESS.value,
        RunStatus.FAILED.value,
        RunStatus.CANCELED.value,
    ):
        return f"run {run_id} already finished ({state['status']}); nothing to cancel"
    # Interrupted: its orch died. End what it left behind and close the run as CANCELED.
    run = store_mod.open_run(home, run_id)
    try:
        _recover_interrupted(run, canceled=True)
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


def _execute(run: store_mod.RunStore, plan: Plan, selected: Set[str], max_parallel: int) -> int:
    from orch.progress import make_progress

    progress = make_progress(sys.stderr, os.environ)
    stop = StopRequest()
    run.clear_cancel_request()
    began = store_mod.now_iso()
    try:
        run.update_run({"status": RunStatus.RUNNING.value, "started_at": began, "ended_at": None})
        run.flush()
        scheduler = Scheduler(
            plan,
            run,
            progress,
            selected=selected,
            max_parallel=max_parallel,
            fail_fast=bool(run.state["fail_fast"]),
            stop=stop,
            grace_sec=_GRACE_SEC,
        )
        with _stop_signals(stop):
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


def _recover_interrupted(run: store_mod.RunStore, canceled: bool = False) -> None:
    """End the process groups a dead owner left behind and close their attempts."""
    from orch.runner import kill_group_if_alive

    now = store_mod.now_iso()
    for task_id, entry in run.state["tasks"].items():
        if entry["status"] != TaskStatus.RUNNING.value:
            continue
        history = entry["history"]
        if history and history[-1].get("ended_at") is None:
            last = history[-1]
            if last.get("pid"):
                kill_group_if_alive(int(last["pid"]), last.get("identity"), _GRACE_SEC)
            run.update_attempt(task_id, {"ended_at": now, "error": "interrupted"})
        if canceled:
            continue
        run.update_task(
            task_id,
            {"status": TaskStatus.FAILED.value, "error": "interrupted", "ended_at": now},
        )
    run.flush()


def _select_for_resume(plan: Plan, state: Dict[str, Any], failed_only: bool) -> Set[str]:
    tasks = state["tasks"]
    if not failed_only:
        return {t.id for t in plan.tasks if tasks[t.id]["status"] != TaskStatus.SUCCESS.value}
    selected = {t.id for t in plan.tasks if tasks[t.id]["status"] == TaskStatus.FAILED.value}
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
