"""Run, resume and cancel: the side-effecting edge around the scheduler.

Owns what surrounds one session of a run: taking ownership, printing ``run_id:``, funnelling
SIGINT/SIGTERM/SIGHUP into the one stop path, recovering from a crashed owner, writing the final
report, and turning the run's outcome into an exit code.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, Optional, Sequence, Set, Tuple

from orch import exitcodes, procs
from orch import store as store_mod
from orch.errors import StateError, UsageError
from orch.graph import PlanChanges, plan_changes, select_for_resume
from orch.graph import downstream as graph_downstream
from orch.layout import RunLayout
from orch.model import Plan, RunStatus, SkipReason, TaskStatus
from orch.runner import LocalRunner, Runner
from orch.scheduler import RunDirectoryGone, Scheduler, StopRequest, recorded_outcome
from orch.state import RunState, initial_run_state, initial_task_state

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
    executor: Optional[str] = None,
) -> int:
    artifacts_dir = None
    if plan.artifacts_dir is not None:
        artifacts_dir = os.path.join(workdir, plan.artifacts_dir)
    executor = executor or plan.executor
    _check_executor(executor)  # nothing submitted, no run directory, when Slurm is not there
    from orch import workspace

    # workspace: worktree: each cwd inside a git repository (a plan error otherwise, before
    # any run directory exists), and each repository's HEAD now, the run's base.
    bases = workspace.check_plan(plan, workdir)

    began = store_mod.now_iso()

    def make_state(run_id: str, run_dir: str) -> RunState:
        state = initial_run_state(
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
        )
        state["executor"] = executor  # a resume keeps it, unless --executor says otherwise
        # Created RUNNING, its first session begun: the snapshot says so from the start, with
        # no second one written right after (10,000 tasks: 8 MB and two fsyncs).
        state.update(_session_start(state, began))  # type: ignore[typeddict-item]
        return workspace.with_bases(state, bases)

    grace = _grace_sec()
    stop = StopRequest()
    # Handlers go in before the run exists: a signal sent the moment `run_id:` appears must
    # already take the cancel path.
    with _stop_signals(stop):
        run = store_mod.create_run(home, plan_bytes, make_state)
        _announce(run.run_id)
        return _execute(
            run,
            plan,
            {t.id for t in plan.tasks},
            max_parallel,
            stop,
            grace,
            executor=executor,
            began=began,
        )


def _check_executor(executor: str) -> None:
    """UsageError (exit 2, one line) when the executor cannot run anything here."""
    if executor == "slurm":
        from orch import slurm

        slurm.preflight()


def _make_runner(executor: str, run: store_mod.RunStore, plan: Plan) -> Runner:
    if executor == "slurm":
        from orch.slurm import SlurmRunner

        options = {t.id: t.slurm for t in plan.tasks if t.slurm is not None}
        return SlurmRunner(run.run_dir, run.run_id, options)
    return LocalRunner()


def resume_run(
    *,
    home: str,
    run_id: str,
    failed_only: bool,
    max_parallel: Optional[int],
    rerun: Sequence[str] = (),
    downstream: bool = False,
    plan_file: Optional[str] = None,
    executor: Optional[str] = None,
) -> int:
    from orch.plan import load_plan, parse_plan

    if downstream and not rerun:
        raise UsageError("--downstream needs --rerun TASK: it names what to go down from")
    edited: Optional[Tuple[Plan, bytes]] = None
    if plan_file is not None:
        edited = load_plan(plan_file)  # every problem at once, exit 2, before anything changes
    grace = _grace_sec()
    stop = StopRequest()
    with _stop_signals(stop):
        run = store_mod.open_run(home, run_id)
        try:
            snapshot = run.layout.plan
            plan = parse_plan(store_mod.read_plan_text(run.run_dir), snapshot)
            _check_snapshot(plan, run.state, snapshot)
            again = list(rerun)
            if edited is not None:
                changes = plan_changes(plan, edited[0])
                _check_edit(changes, plan_file or "")
            _check_rerun(again, edited[0] if edited else plan)
            chosen = executor or run.state.get("executor") or plan.executor
            _check_executor(chosen)
            _announce(run.run_id)
            adoptable = _recover_interrupted(run, grace, adopt=chosen == "slurm")
            if edited is not None:
                plan = _adopt_edited_plan(run, edited[0], edited[1], changes)
                # A changed task runs again with everything below it; an added one runs.
                again = list(dict.fromkeys([*again, *changes.changed]))
                downstream_of = set(changes.changed)
            else:
                downstream_of = set()
            recorded = {t: recorded_outcome(e) for t, e in run.state["tasks"].items()}
            selected = select_for_resume(
                plan.tasks,
                recorded,
                failed_only=failed_only,
                rerun=again,
                rerun_downstream=downstream,
            )
            selected |= graph_downstream(plan.tasks, downstream_of)
            if edited is not None:
                selected |= set(changes.added)
            adopted = _keep_adoptable(run, plan, adoptable, selected, set(again))
            selected |= adoptable  # a dropped one is FAILED now: it runs again
            if run.state["status"] in _FINAL and (
                not selected or (run.state["status"] == RunStatus.SUCCESS.value and not again)
            ):
                # Nothing to run: no new session, so the recorded times and report stay.
                _close_quietly(run)
                sys.stderr.write(
                    f"orch: run {run.run_id} already finished ({run.state['status']}): nothing "
                    "to do (--rerun TASK runs a task again)\n"
                )
                return exitcodes.for_run_status(RunStatus(run.state["status"]))
            if max_parallel is not None:
                run.update_run({"max_parallel": max_parallel})
            if chosen != run.state.get("executor"):
                run.update_run({"executor": chosen})
        except BaseException:
            _close_quietly(run)
            raise
        return _execute(
            run,
            plan,
            selected,
            int(run.state["max_parallel"]),
            stop,
            grace,
            executor=chosen,
            adopted=adopted,
        )


def _check_rerun(task_ids: Sequence[str], plan: Plan) -> None:
    known = [t.id for t in plan.tasks]
    problems = []
    for task_id in task_ids:
        if task_id not in known:
            close = [k for k in known if k.lower() == task_id.lower()]
            close = close or difflib.get_close_matches(task_id, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"--rerun: unknown task '{task_id}'{hint}")
    if problems:
        raise UsageError("\n".join(problems))


def _check_edit(changes: PlanChanges, plan_file: str) -> None:
    if changes.removed:
        names = ", ".join(f"'{t}'" for t in changes.removed)
        raise UsageError(
            f"{plan_file}: the edited plan removes task(s) {names} of the run; a run's tasks "
            "can be changed or added to, not removed (start a new run instead)"
        )


def _adopt_edited_plan(
    run: store_mod.RunStore, plan: Plan, plan_bytes: bytes, changes: PlanChanges
) -> Plan:
    """Make ``plan`` the run's plan: the old snapshot kept as plan.N.yaml, the new one in
    plan.yaml, its new tasks in the state (in plan order), its changed definitions recorded."""
    layout = run.layout
    version = int(run.state.get("plan_version") or 1)
    store_mod.write_file_atomic(layout.plan_version(version), _read_bytes(layout.plan))
    store_mod.write_file_atomic(layout.plan, plan_bytes)
    tasks = run.state["tasks"]
    new_tasks = {}
    for task in plan.tasks:
        if task.id in tasks:
            new_tasks[task.id] = tasks[task.id]
        else:
            new_tasks[task.id] = initial_task_state(task, layout)
    run.state["tasks"] = new_tasks
    run.state["plan_version"] = version + 1
    # A snapshot now: journal records about the added tasks must never precede their entry.
    run.compact()
    for task in plan.tasks:
        if task.id in changes.changed:
            run.update_task(task.id, {"cmd": list(task.cmd), "depends_on": list(task.depends_on)})
    return plan


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


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
    *,
    executor: str = "local",
    adopted: Optional[Set[str]] = None,
    began: Optional[str] = None,
) -> int:
    """One session of the run. Called with the stop signals already funnelled into ``stop``.

    ``adopted``: tasks whose attempt a crashed session left running (Slurm jobs), which the
    scheduler takes over instead of starting them again. ``began``: the session was begun
    when the run was created, at that time (its snapshot says RUNNING already)."""
    from orch.progress import make_progress

    progress = make_progress(sys.stderr, os.environ)
    runner = _make_runner(executor, run, plan)
    closed = False
    try:
        if began is None:
            began = store_mod.now_iso()
            run.update_run(_session_start(run.state, began))
            # A snapshot, not just a journal line: state.json itself says RUNNING from now
            # on, so that a crash leaves a run that any reader of the file sees as RUNNING.
            run.compact()
        sessions = list(run.state["sessions"])
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
            adopted=adopted,
        )
        status = scheduler.run()
        # Its bookkeeping is not needed for the report: freed first, the report reuses the
        # memory (10,000 tasks: peak RSS 54 -> 52 MB).
        del scheduler
        ended = store_mod.now_iso()
        sessions[-1] = {"started_at": began, "ended_at": ended}
        run.update_run({"status": status.value, "ended_at": ended, "sessions": sessions})
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


def _session_start(state: RunState, began: str) -> Dict[str, Any]:
    """The run fields of a session that begins at ``began``."""
    return {
        "status": RunStatus.RUNNING.value,
        "started_at": began,
        "ended_at": None,
        "sessions": [*state.get("sessions", []), {"started_at": began, "ended_at": None}],
    }


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
    from orch import final_report

    path = run.layout.report
    # Reads the failed attempts' log tails itself: bounded reads from each attempt's offset.
    text = final_report.render_final_report(run.state)
    store_mod.write_file_atomic(path, text.encode("utf-8"))
    return path


def _recover_interrupted(
    run: store_mod.RunStore, grace: float, canceled: bool = False, adopt: bool = False
) -> Set[str]:
    """End what a dead owner left running, then close its attempts as ``interrupted``.

    With ``canceled`` the RUNNING tasks keep their status for the caller to mark CANCELED;
    otherwise they become FAILED, so that a resume runs them again. With ``adopt`` (a resume
    with the slurm executor) the attempts that are Slurm jobs stay open and RUNNING instead:
    returned, for the scheduler to take over; every other job of the run is ended.
    """
    if run.state["status"] in _FINAL:
        # Its last session ended cleanly, every attempt recorded: nothing can be left running,
        # so no /proc hunt and no squeue call for a `resume --rerun` of a finished run.
        return set()
    tasks = run.state["tasks"]
    jobs = {
        task_id: str(entry["history"][-1]["job_id"])
        for task_id, entry in tasks.items()
        if entry["history"]
        and entry["history"][-1].get("ended_at") is None
        and entry["history"][-1].get("job_id")
    }
    adopted: Set[str] = set()
    if jobs or run.state.get("executor") == "slurm":
        from orch import slurm

        kept = slurm.recover_jobs(run.run_id, jobs, grace, adopt=adopt and not canceled, warn=_warn)
        adopted = set(kept)
    sessions = run.state.get("sessions") or []
    if sessions and sessions[-1].get("ended_at") is None:
        # The dead owner's session ended, as far as anyone can tell, at its last record.
        closed = {**sessions[-1], "ended_at": run.state.get("updated_at")}
        run.update_run({"sessions": [*sessions[:-1], closed]})
    recorded = []
    for entry in tasks.values():
        history = entry["history"]
        pid = history[-1].get("pid") if history else None
        if pid and history[-1].get("ended_at") is None:
            recorded.append((pid, history[-1].get("identity")))
    # An adopted job's processes carry the run's ORCH_RUN_ID too (on a node that is this
    # machine): the hunt must spare them.
    procs.end_leftovers(run.run_id, set(tasks) - adopted, recorded, grace)
    now = store_mod.now_iso()
    for task_id, entry in tasks.items():
        history = entry["history"]
        if task_id in adopted:
            continue
        open_attempt = bool(history) and history[-1].get("ended_at") is None
        running = entry["status"] == TaskStatus.RUNNING.value and not canceled
        if open_attempt or running:
            run.update_task(
                task_id,
                _interrupted(now) if running else None,
                attempt_fields={"ended_at": now, "error": "interrupted"} if open_attempt else None,
            )
    run.flush()
    return adopted


def _interrupted(now: str) -> Dict[str, Any]:
    """A RUNNING task whose attempt no orch watched to its end: FAILED, so that it runs again."""
    return {"status": TaskStatus.FAILED.value, "error": "interrupted", "ended_at": now}


def _keep_adoptable(
    run: store_mod.RunStore, plan: Plan, adopted: Set[str], selected: Set[str], again: Set[str]
) -> Set[str]:
    """The adopted jobs whose result this resume can use: not one of a task named to run
    again (``--rerun``, an edited definition), nor of one whose dependency runs again. The
    others are ended and closed as interrupted (FAILED: they run again)."""
    deps = {t.id: t.depends_on for t in plan.tasks}
    dropped = {
        t
        for t in adopted
        if t in again or any(d in selected and d not in adopted for d in deps.get(t, ()))
    }
    if dropped:
        from orch import slurm

        tasks = run.state["tasks"]
        jobs = [str(tasks[t]["history"][-1].get("job_id")) for t in sorted(dropped)]
        slurm.cancel_run_jobs(
            run.run_id, [slurm.JobInfo(j, "", "", "") for j in jobs], _grace_sec(), _warn
        )
        now = store_mod.now_iso()
        for task_id in dropped:
            run.update_task(
                task_id, _interrupted(now), attempt_fields={"ended_at": now, "error": "interrupted"}
            )
        run.flush()
    return adopted - dropped


def _warn(line: str) -> None:
    sys.stderr.write(line + "\n")
