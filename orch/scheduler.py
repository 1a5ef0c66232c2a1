"""The one loop: start what is allowed, reap what finished, record every change durably.

Worker threads only wait for their attempt (and collect its outputs); every decision and every
state change happens on the loop's thread, so the state needs no lock. A finished attempt wakes the
loop through a queue at once: there is no polling for dispatch. The loop wakes on its own only to
notice a stop request and to release tasks whose retry backoff is over.
"""

from __future__ import annotations

import functools
import heapq
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

from orch import artifacts
from orch.model import Plan, RunStatus, SkipReason, Task, TaskStatus
from orch.progress import Progress
from orch.runner import (
    Attempt,
    AttemptResult,
    AttemptSpec,
    failed_result,
    start_attempt,
    supervise,
)
from orch.store import RunStore

__all__ = ["Scheduler", "StopRequest"]

_STOP_POLL_SEC = 0.1
_CANCEL_FILE_POLL_SEC = 0.1
_TICK_SEC = 0.5

_Outcome = Tuple[AttemptResult, Optional[artifacts.Collected]]


class StopRequest:
    """Set by signal handlers and by ``orch cancel``; read by the loop. Handlers only count."""

    def __init__(self) -> None:
        self.count = 0

    def request(self) -> None:
        self.count += 1


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat()


def _succeeded(result: AttemptResult) -> bool:
    return (
        result.exit_code == 0
        and not result.timed_out
        and not result.canceled
        and result.error is None
    )


def describe(result: AttemptResult, timeout_sec: Optional[float]) -> str:
    if result.canceled:
        return "canceled"
    if result.timed_out:
        return f"timed out after {timeout_sec:g}s" if timeout_sec else "timed out"
    if result.error:
        return result.error
    if result.signal is not None:
        try:
            return f"killed by {signal.Signals(result.signal).name}"
        except ValueError:
            return f"killed by signal {result.signal}"
    return f"exit {result.exit_code}"


class Scheduler:
    """Runs the ``selected`` tasks of a run whose other tasks keep their recorded status."""

    def __init__(
        self,
        plan: Plan,
        store: RunStore,
        progress: Progress,
        *,
        selected: Set[str],
        max_parallel: int,
        fail_fast: bool,
        stop: StopRequest,
        grace_sec: float = 5.0,
    ) -> None:
        self._plan = plan
        self._store = store
        self._state: Dict[str, Any] = store.state
        self._progress = progress
        self._selected = selected
        self._max_parallel = max_parallel
        self._fail_fast = fail_fast
        self._stop = stop
        self._grace_sec = grace_sec
        self._tasks: Dict[str, Task] = {t.id: t for t in plan.tasks}
        self._order: Dict[str, int] = {t.id: i for i, t in enumerate(plan.tasks)}
        self._dependents: Dict[str, List[str]] = {t.id: [] for t in plan.tasks}
        for t in plan.tasks:
            for dep in t.depends_on:
                self._dependents[dep].append(t.id)
        self._waiting: Dict[str, int] = {}
        self._ready: List[Tuple[int, str]] = []
        self._backoff: List[Tuple[float, int, str]] = []
        self._running: Dict[str, Attempt] = {}
        self._in_flight = 0  # attempts handed to workers, started or not
        self._execution_attempts: Dict[str, int] = {}
        self._execution_started: Dict[str, float] = {}
        self._last_attempt: Dict[str, int] = {}  # the last attempt number this execution may use
        self._events: queue.Queue[Tuple[str, Union[_Outcome, BaseException]]] = queue.Queue()
        self._cancel = threading.Event()
        self._canceling = False
        self._killed = False
        self._stop_new = False
        self._next_cancel_check = 0.0
        self._done = 0
        base = dict(os.environ)
        base["ORCH_RUN_ID"] = store.run_id
        base["ORCH_RUN_DIR"] = store.run_dir
        base["ORCH_ARTIFACTS_DIR"] = os.path.join(store.run_dir, "artifacts")
        self._base_env = base

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunStatus:
        self._prepare()
        self._progress.run_started(self._store.run_id, len(self._plan.tasks), self._done)
        next_tick = time.monotonic() + _TICK_SEC
        with ThreadPoolExecutor(self._max_parallel, thread_name_prefix="orch-attempt") as pool:
            try:
                while self._ready or self._backoff or self._in_flight:
                    self._check_stop()
                    self._release_due_backoffs()
                    self._start_ready(pool)
                    # Start records need no fsync (they serve the recovery from orch's own
                    # death; a machine crash ends the tasks too). Outcomes are synced below,
                    # before anything can act on them.
                    self._store.flush(sync=False)
                    self._wait_and_reap()
                    self._store.flush()
                    if time.monotonic() >= next_tick:
                        self._progress.tick()
                        next_tick = time.monotonic() + _TICK_SEC
            except BaseException:
                # The state can no longer be recorded (disk full, ...): end the running attempts
                # now rather than wait for them unrecorded; the run stays resumable.
                self._cancel.set()
                raise
        return self._final_status()

    def _wait_and_reap(self) -> None:
        timeout = _STOP_POLL_SEC
        if self._backoff:
            timeout = min(timeout, max(0.0, self._backoff[0][0] - time.monotonic()))
        if self._ready and self._in_flight < self._max_parallel and not self._stop_new:
            timeout = 0.0
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._reap(*event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _check_stop(self) -> None:
        now = time.monotonic()
        if not self._canceling and now >= self._next_cancel_check:
            self._next_cancel_check = now + _CANCEL_FILE_POLL_SEC
            if self._store.cancel_requested():
                self._stop.request()
        if self._stop.count >= 1 and not self._canceling:
            self._begin_cancel()
        if self._stop.count >= 2 and not self._killed:
            # A second Ctrl-C: no grace period for anyone.
            self._killed = True
            for attempt in self._running.values():
                attempt.signal_group(signal.SIGKILL)

    # ------------------------------------------------------------------ preparing

    def _prepare(self) -> None:
        """Reset the selected tasks to PENDING and find the ones that can start at once."""
        tasks = self._state["tasks"]
        blocked: List[str] = []
        for task in self._plan.tasks:
            if task.id not in self._selected:
                if tasks[task.id]["status"] == TaskStatus.SUCCESS.value:
                    self._done += 1
                continue
            entry = tasks[task.id]
            if entry["status"] != TaskStatus.PENDING.value or entry["attempts"]:
                self._store.update_task(task.id, _pending_fields())
            unmet = 0
            for dep in task.depends_on:
                dep_status = tasks[dep]["status"]
                if dep_status == TaskStatus.SUCCESS.value:
                    continue
                if dep not in self._selected:
                    blocked.append(task.id)  # a dependency left as it is and not SUCCESS
                unmet += 1
            self._waiting[task.id] = unmet
            if unmet == 0:
                heapq.heappush(self._ready, (self._order[task.id], task.id))
        for task_id in blocked:
            if tasks[task_id]["status"] == TaskStatus.PENDING.value:
                self._skip_from(task_id, SkipReason.DEPENDENCY_NOT_SUCCESS)
        self._store.flush()

    # ------------------------------------------------------------------ starting

    def _start_ready(self, pool: ThreadPoolExecutor) -> None:
        while self._ready and self._in_flight < self._max_parallel and not self._stop_new:
            _, task_id = heapq.heappop(self._ready)
            self._start(pool, self._tasks[task_id])

    def _release_due_backoffs(self) -> None:
        now = time.monotonic()
        while self._backoff and self._backoff[0][0] <= now:
            _, index, task_id = heapq.heappop(self._backoff)
            heapq.heappush(self._ready, (index, task_id))

    def _start(self, pool: ThreadPoolExecutor, task: Task) -> None:
        entry = self._state["tasks"][task.id]
        number = int(entry["attempts"]) + 1
        in_execution = self._execution_attempts.get(task.id, 0) + 1
        self._execution_attempts[task.id] = in_execution
        spec = self._spec(task, number)
        started: Union[Attempt, AttemptResult]
        try:
            self._write_context(task, number, spec.env["ORCH_CONTEXT"])
        except OSError as err:
            started = failed_result(f"cannot write the task context: {err.strerror or err}")
        else:
            started = start_attempt(spec)
        fields: Dict[str, Any] = {"status": TaskStatus.RUNNING.value, "attempts": number}
        if in_execution == 1:
            self._last_attempt[task.id] = number + task.retries
            self._execution_started[task.id] = started.started_at
            fields["started_at"] = _iso(started.started_at)
        self._store.update_task(task.id, fields)
        if isinstance(started, Attempt):
            self._running[task.id] = started
        self._store.add_attempt(task.id, _attempt_entry(number, started))
        self._in_flight += 1
        self._progress.task_started(task.id, number, self._last_attempt[task.id])
        future = pool.submit(self._attempt_worker, task, spec, started)
        future.add_done_callback(functools.partial(self._on_done, task.id))

    def _on_done(self, task_id: str, future: Future[_Outcome]) -> None:
        """Called in the worker thread: hand the outcome to the loop, which wakes at once."""
        self._events.put((task_id, _outcome(future)))

    def _write_context(self, task: Task, number: int, path: str) -> None:
        tasks = self._state["tasks"]
        artifacts.write_context(
            path,
            run_id=self._store.run_id,
            task_id=task.id,
            attempt=number,
            run_dir=self._store.run_dir,
            artifacts_dir=self._base_env["ORCH_ARTIFACTS_DIR"],
            dependencies={dep: tasks[dep] for dep in task.depends_on},
        )

    def _spec(self, task: Task, number: int) -> AttemptSpec:
        tasks = self._state["tasks"]
        context_path = artifacts.context_path(self._store.run_dir, task.id)
        env = dict(self._base_env)
        env.update(task.env)
        env["ORCH_TASK_ID"] = task.id
        env["ORCH_ATTEMPT"] = str(number)
        env["ORCH_CONTEXT"] = context_path
        return AttemptSpec(
            task_id=task.id,
            attempt=number,
            argv=task.cmd,
            cwd=os.path.join(self._state["workdir"], task.cwd),
            env=env,
            stdout_path=tasks[task.id]["stdout_path"],
            stderr_path=tasks[task.id]["stderr_path"],
            timeout_sec=task.timeout_sec,
            grace_sec=self._grace_sec,
        )

    def _attempt_worker(
        self, task: Task, spec: AttemptSpec, started: Union[Attempt, AttemptResult]
    ) -> _Outcome:
        """Runs in a worker thread: wait for the attempt, then collect its outputs."""
        if isinstance(started, Attempt):
            result = supervise(started, spec, self._cancel)
        else:
            result = started
        collected = None
        if task.outputs:
            collected = artifacts.collect_outputs(
                task.outputs,
                spec.cwd,
                self._base_env["ORCH_ARTIFACTS_DIR"],
                self._state.get("artifacts_dir"),
                task.id,
                # Never collect orch's own run directories (a `**` over a workdir holding the home).
                exclude=[os.path.join(self._state["home"], "runs")],
            )
        return result, collected

    # ------------------------------------------------------------------ reaping

    def _reap(self, task_id: str, outcome: Union[_Outcome, BaseException]) -> None:
        self._in_flight -= 1
        self._running.pop(task_id, None)
        task = self._tasks[task_id]
        if isinstance(outcome, BaseException):
            # A bug in a worker must not take the run down: the task fails, visibly.
            result = failed_result(f"orch internal error: {outcome!r}")
            collected = None
        else:
            result, collected = outcome
        self._record_attempt_end(task_id, result, collected)
        if _succeeded(result):
            self._finish(task_id, TaskStatus.SUCCESS, result)
        elif result.canceled:
            self._finish(task_id, TaskStatus.CANCELED, result, SkipReason.RUN_CANCELED)
        elif self._execution_attempts[task_id] <= task.retries and not self._stop_new:
            self._schedule_retry(task, result)
        else:
            self._finish(task_id, TaskStatus.FAILED, result)
            if self._fail_fast and not self._stop_new:
                self._begin_fail_fast()

    def _record_attempt_end(
        self, task_id: str, result: AttemptResult, collected: Optional[artifacts.Collected]
    ) -> None:
        self._store.update_attempt(
            task_id,
            {
                "ended_at": _iso(result.ended_at),
                "duration_sec": round(result.ended_at - result.started_at, 6),
                "exit_code": result.exit_code,
                "signal": result.signal,
                "timed_out": result.timed_out,
                "canceled": result.canceled,
                "error": result.error,
            },
        )
        if collected is not None:
            self._store.update_task(
                task_id,
                {
                    "artifacts": collected.artifacts,
                    "artifact_paths": collected.artifact_paths,
                    "missing_outputs": collected.missing_outputs,
                    "artifact_errors": collected.errors,
                },
            )

    def _schedule_retry(self, task: Task, result: AttemptResult) -> None:
        next_attempt = self._execution_attempts[task.id] + 1
        delay = task.backoff_before(next_attempt)
        self._store.update_task(task.id, {"status": TaskStatus.PENDING.value})
        heapq.heappush(self._backoff, (time.monotonic() + delay, self._order[task.id], task.id))
        self._progress.task_retrying(
            task.id,
            int(self._state["tasks"][task.id]["attempts"]) + 1,
            delay,
            describe(result, task.timeout_sec),
            self._last_attempt[task.id],
        )

    def _finish(
        self,
        task_id: str,
        status: TaskStatus,
        result: AttemptResult,
        skip_reason: Optional[SkipReason] = None,
    ) -> None:
        entry = self._state["tasks"][task_id]
        ended = _iso(result.ended_at)
        fields: Dict[str, Any] = {
            "status": status.value,
            "ended_at": ended,
            "exit_code": result.exit_code,
            "signal": result.signal,
            "timed_out": result.timed_out,
            "canceled": status is TaskStatus.CANCELED,
            "error": result.error,
            "skip_reason": skip_reason.value if skip_reason else None,
        }
        if task_id in self._execution_started:
            fields["duration_sec"] = round(result.ended_at - self._execution_started[task_id], 6)
        self._store.update_task(task_id, fields)
        self._done += 1
        self._progress.task_finished(
            task_id,
            status.value,
            int(entry["attempts"]),
            fields.get("duration_sec") or 0.0,
            ""
            if status is TaskStatus.SUCCESS
            else describe(result, self._tasks[task_id].timeout_sec),
        )
        if status is TaskStatus.SUCCESS:
            self._release_dependents(task_id)
        else:
            self._skip_from(task_id, SkipReason.DEPENDENCY_NOT_SUCCESS, include_self=False)

    def _release_dependents(self, task_id: str) -> None:
        for dependent in self._dependents[task_id]:
            if dependent not in self._waiting:
                continue
            self._waiting[dependent] -= 1
            if self._waiting[dependent] == 0 and self._is_pending(dependent):
                if self._canceling:
                    self._mark_skipped(dependent, SkipReason.RUN_CANCELED, TaskStatus.CANCELED)
                elif self._stop_new:
                    self._mark_skipped(dependent, SkipReason.FAIL_FAST)
                else:
                    heapq.heappush(self._ready, (self._order[dependent], dependent))

    def _skip_from(self, root: str, reason: SkipReason, include_self: bool = True) -> None:
        """Mark ``root`` (optionally) and every pending task downstream of it SKIPPED."""
        stack = [root] if include_self else list(self._dependents[root])
        while stack:
            task_id = stack.pop()
            if task_id not in self._waiting or not self._is_pending(task_id):
                continue
            self._mark_skipped(task_id, reason)
            stack.extend(self._dependents[task_id])

    def _is_pending(self, task_id: str) -> bool:
        return bool(self._state["tasks"][task_id]["status"] == TaskStatus.PENDING.value) and (
            task_id not in self._running
        )

    def _mark_skipped(
        self, task_id: str, reason: SkipReason, status: TaskStatus = TaskStatus.SKIPPED
    ) -> None:
        self._store.update_task(
            task_id,
            {
                "status": status.value,
                "skip_reason": reason.value,
                "canceled": status is TaskStatus.CANCELED,
            },
        )
        self._done += 1
        self._progress.task_finished(task_id, status.value, 0, 0.0, reason.value)

    # ------------------------------------------------------------------ stopping

    def _begin_fail_fast(self) -> None:
        self._stop_new = True
        self._abandon_waiting(SkipReason.FAIL_FAST, TaskStatus.SKIPPED)

    def _begin_cancel(self) -> None:
        self._canceling = True
        self._stop_new = True
        self._cancel.set()
        self._abandon_waiting(SkipReason.RUN_CANCELED, TaskStatus.CANCELED)

    def _abandon_waiting(self, reason: SkipReason, status: TaskStatus) -> None:
        """Ready and backing-off tasks will not start; nor will anything still waiting."""
        backing_off = {task_id for _, _, task_id in self._backoff}
        self._ready.clear()
        self._backoff.clear()
        for task in self._plan.tasks:
            if task.id not in self._waiting or not self._is_pending(task.id):
                continue
            if task.id in backing_off and status is TaskStatus.SKIPPED:
                # It has already failed once: under fail-fast its last attempt stands.
                last = self._state["tasks"][task.id]["history"][-1]
                self._store.update_task(
                    task.id, {"status": TaskStatus.FAILED.value, "ended_at": last["ended_at"]}
                )
                self._done += 1
                continue
            self._mark_skipped(task.id, reason, status)

    def _final_status(self) -> RunStatus:
        if self._canceling:
            return RunStatus.CANCELED
        statuses = (entry["status"] for entry in self._state["tasks"].values())
        if all(s == TaskStatus.SUCCESS.value for s in statuses):
            return RunStatus.SUCCESS
        return RunStatus.FAILED


# The result fields of a task or attempt that has not ended.
_NO_RESULT: Dict[str, Any] = {
    "ended_at": None,
    "duration_sec": None,
    "exit_code": None,
    "signal": None,
    "timed_out": False,
    "canceled": False,
    "error": None,
}


def _pending_fields() -> Dict[str, Any]:
    return {
        "status": TaskStatus.PENDING.value,
        "started_at": None,
        "skip_reason": None,
        **_NO_RESULT,
    }


def _attempt_entry(number: int, started: Union[Attempt, AttemptResult]) -> Dict[str, Any]:
    """The history entry of an attempt as it starts (or fails to start)."""
    attempt = started if isinstance(started, Attempt) else None
    return {
        "attempt": number,
        "started_at": _iso(started.started_at),
        **_NO_RESULT,
        "pid": attempt.pid if attempt else None,
        "identity": attempt.identity if attempt else None,
        "stdout_offset": started.stdout_offset,
        "stderr_offset": started.stderr_offset,
    }


def _outcome(future: Future[_Outcome]) -> Union[_Outcome, BaseException]:
    error = future.exception()
    return error if error is not None else future.result()


def initial_task_state(task: Task) -> Dict[str, Any]:
    """A task's state entry before it ever ran (paths are filled in by the store)."""
    entry = _pending_fields()
    entry.update(
        depends_on=list(task.depends_on),
        cmd=list(task.cmd),
        attempts=0,
        stdout_path=None,
        stderr_path=None,
        artifact_paths=[],
        artifacts=[],
        missing_outputs=[],
        artifact_errors=[],
        history=[],
    )
    return entry


def plan_state(plan: Plan, mapping: Mapping[str, Any]) -> Dict[str, Any]:
    """The initial run state for ``plan``; ``mapping`` holds the run-level fields."""
    state: Dict[str, Any] = dict(mapping)
    state["tasks"] = {task.id: initial_task_state(task) for task in plan.tasks}
    return state
