"""The one loop (Ninja's Builder): start what is allowed, reap what ended, record every change.

Readiness (graph.Readiness) says what may start; the runner runs attempts and enforces their
limits; the store records. Every decision and state change happens on this loop's thread; the
only other threads collect a task's outputs after an attempt (copies can be long). The loop
sleeps inside ``runner.wait``, which returns the moment an attempt ends, so dispatch never
waits on a poll interval; it wakes on its own only for a stop request, a retry whose backoff is
over, and the runner's own deadlines.
"""

from __future__ import annotations

import heapq
import os
import random
import time
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from orch import artifacts, logs, metrics, policy, workspace
from orch.graph import Outcome, Readiness
from orch.layout import RunLayout
from orch.model import Plan, RunStatus, SkipReason, Task, TaskStatus
from orch.progress import Progress
from orch.runner import (
    AttemptEnv,
    AttemptResult,
    AttemptSpec,
    Runner,
    Started,
    failed_result,
    file_size,
)
from orch.state import AttemptState, RunState, no_result
from orch.store import RunStore, iso_time

if TYPE_CHECKING:  # imported when first needed: most runs collect nothing (~4 ms, 0.8 MB)
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["RunDirectoryGone", "Scheduler", "StopRequest", "recorded_outcome", "run_outcome"]

_CANCEL_FILE_POLL_SEC = 0.2
# Distinct task environments kept (beyond them, each attempt builds its own).
_SHARED_ENVS_MAX = 256
_TICK_SEC = 0.5
# Longest sleep while outputs are being collected (their end is not a runner event).
_COLLECT_POLL_SEC = 0.01


class StopRequest:
    """Set by signal handlers and by ``orch cancel``; read by the loop. Handlers only count."""

    def __init__(self) -> None:
        self.count = 0

    def request(self) -> None:
        self.count += 1


class RunDirectoryGone(Exception):
    """The run directory was removed under a live run: nothing can be recorded any more."""


def recorded_outcome(entry: Mapping[str, Any]) -> Outcome:
    """A stored task's outcome as its dependents see it."""
    return Outcome(
        str(entry.get("status")), entry.get("skip_reason"), bool(entry.get("allowed_failure"))
    )


def run_outcome(state: RunState, canceled: bool) -> RunStatus:
    """0.2's rule: SUCCESS when every task is SUCCESS, skipped for a condition, or an
    allowed failure; CANCELED after a cancel; FAILED otherwise."""
    if canceled:
        return RunStatus.CANCELED
    for entry in state["tasks"].values():
        status = entry["status"]
        if status == TaskStatus.SUCCESS.value:
            continue
        if status == TaskStatus.SKIPPED.value and entry.get("skip_reason") == "condition_not_met":
            continue
        if status == TaskStatus.FAILED.value and entry.get("allowed_failure"):
            continue
        return RunStatus.FAILED
    return RunStatus.SUCCESS


# What a worker does after an attempt: its worktree commit (task fields to record, None
# without a worktree), then its outputs (None without `outputs`).
_AfterAttempt = Tuple[Optional[artifacts.Collected], Optional[Dict[str, Any]]]


class _Collected:
    """An attempt whose worktree is being committed and outputs collected in a worker."""

    __slots__ = ("future", "result")

    def __init__(self, result: AttemptResult, future: Future[_AfterAttempt]) -> None:
        self.result = result
        self.future = future


class Scheduler:
    """Runs the ``selected`` tasks of a run whose other tasks keep their recorded status."""

    def __init__(
        self,
        plan: Plan,
        store: RunStore,
        progress: Progress,
        runner: Runner,
        *,
        selected: Set[str],
        max_parallel: int,
        fail_fast: bool,
        stop: StopRequest,
        grace_sec: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        adopted: Optional[Set[str]] = None,
    ) -> None:
        self._plan = plan
        self._store = store
        self._state = store.state
        self._layout = RunLayout(store.run_dir)
        self._progress = progress
        self._runner = runner
        self._selected = selected
        self._max_parallel = max_parallel
        self._fail_fast = fail_fast
        self._stop = stop
        self._grace_sec = grace_sec
        self._clock = clock
        self._rand = rand
        self._tasks: Dict[str, Task] = {t.id: t for t in plan.tasks}
        self._order: Dict[str, int] = {t.id: i for i, t in enumerate(plan.tasks)}
        self._readiness = Readiness(
            plan.tasks,
            selected,
            {task_id: recorded_outcome(e) for task_id, e in self._state["tasks"].items()},
        )
        self._backoff: List[Tuple[float, int, str]] = []  # (due, plan order, task)
        self._running: Set[str] = set()  # started, not yet reaped (collection included)
        self._pool_use: Dict[str, int] = {}
        self._collecting: Dict[str, _Collected] = {}
        self._collector: Optional[ThreadPoolExecutor] = None
        # workspace: worktree. A task's worktree is made ready (created or adopted) in a
        # worker at its first start of the session, holding its slot meanwhile.
        self._preparing: Dict[str, Future[workspace.Prepared]] = {}
        self._worktrees: Dict[str, workspace.Prepared] = {}  # ready ones: their cwd inside
        self._worktree_refused: Dict[str, str] = {}  # could not be prepared: why
        self._worktree_lock = workspace.WorktreeLock()
        self._execution_attempts: Dict[str, int] = {}
        self._execution_started: Dict[str, float] = {}
        self._last_attempt: Dict[str, int] = {}
        self._released: List[Tuple[str, int]] = []  # (task, attempts) out of backoff this round
        # Attempts a crashed session left running (Slurm jobs), taken over at _prepare. Their
        # task is also in Readiness's ready set (its dependencies ended long ago): that entry
        # is dropped once, when popped (_stale_ready).
        self._adopted = set(adopted or ())
        self._stale_ready: Set[str] = set()
        self._canceling = False
        self._killed = False
        self._stop_new = False
        self._next_cancel_check = 0.0
        self._done = 0
        self._run_dir_id = _dir_id(store.run_dir)
        self._context_cache: Dict[str, str] = {}  # finished dependency -> its context JSON
        self._context_paths = _context_paths(plan, self._layout)
        self._contexts_written: Set[str] = set()  # shared context files of this session
        # Tasks whose outcome was recorded but not yet fsynced (group commit, _start_ready).
        self._unsynced: Set[str] = set()
        self._base_env = dict(os.environ)
        # (worktree?, the task's env) -> the environment every such attempt shares.
        self._shared_envs: Dict[Tuple[bool, Tuple[Tuple[str, str], ...]], Dict[str, str]] = {}
        self._orch_env = {
            "ORCH_RUN_ID": store.run_id,
            "ORCH_RUN_DIR": store.run_dir,
            "ORCH_ARTIFACTS_DIR": self._layout.artifacts,
        }

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunStatus:
        self._prepare()
        self._progress.run_started(
            self._store.run_id, len(self._plan.tasks), self._done, state=self._state
        )
        for task in self._plan.tasks:
            if task.id in self._adopted:
                self._adopt(task)
        next_tick = self._clock() + _TICK_SEC
        try:
            while self._readiness.has_ready() or self._backoff or self._running:
                self._check_stop()
                self._release_due_backoffs()
                self._start_ready()
                self._report_released_waits()
                # Group commit: the round's records (the ends reaped last round, the starts
                # just made) are written with one write but fsynced only before something acts
                # on them (a dependent or a retry starts: _start_ready; the run's outcome: the
                # engine). Start records serve the recovery from orch's own death, which the
                # page cache survives; a machine crash ends the tasks too.
                self._store.flush(sync=False)
                self._wait_and_reap()
                if self._clock() >= next_tick:
                    self._check_run_dir()
                    self._report_pool_waits()
                    self._progress.tick()
                    next_tick = self._clock() + _TICK_SEC
        except BaseException:
            # The state can no longer be recorded (disk full, run directory gone, ...): end
            # the running attempts now rather than leave them unrecorded.
            self._runner.close()
            raise
        finally:
            if self._collector is not None:
                self._collector.shutdown(wait=True)
        return run_outcome(self._state, self._canceling)

    def _wait_timeout(self) -> float:
        # Called right after _start_ready: a task still ready waits for a slot or its pool,
        # which only an attempt's end (a runner event) can free.
        timeout = _CANCEL_FILE_POLL_SEC
        if self._backoff:
            timeout = min(timeout, max(0.0, self._backoff[0][0] - self._clock()))
        if self._collecting or self._preparing:
            timeout = min(timeout, _COLLECT_POLL_SEC)
        return timeout

    def _wait_and_reap(self) -> None:
        for task_id, result in self._runner.wait(self._wait_timeout()):
            self._attempt_ended(task_id, result)
        for task_id in [t for t, c in self._collecting.items() if c.future.done()]:
            collected = self._collecting.pop(task_id)
            outputs, worktree_fields = _collection(collected.future)
            if worktree_fields:
                self._store.update_task(task_id, worktree_fields)
            self._reap(task_id, collected.result, outputs)
        for task_id in [t for t, f in self._preparing.items() if f.done()]:
            self._worktree_ready(task_id, self._preparing.pop(task_id))

    def _check_stop(self) -> None:
        now = self._clock()
        if not self._canceling and now >= self._next_cancel_check:
            self._next_cancel_check = now + _CANCEL_FILE_POLL_SEC
            if self._store.cancel_requested():
                self._stop.request()
        if self._stop.count >= 1 and not self._canceling:
            self._begin_cancel()
        if self._stop.count >= 2 and not self._killed:
            self._killed = True  # a second Ctrl-C: no grace period for anyone
            self._progress.run_killing(len(self._running))
            self._runner.kill_all()

    def _check_run_dir(self) -> None:
        if _dir_id(self._store.run_dir) != self._run_dir_id:
            raise RunDirectoryGone(
                f"run {self._store.run_id} stopped: its directory {self._store.run_dir} was "
                "removed while the run was alive"
            )

    # ------------------------------------------------------------------ preparing

    def _prepare(self) -> None:
        """Reset the selected tasks to PENDING and find the ones that can start at once."""
        tasks = self._state["tasks"]
        try:
            os.mkdir(self._layout.metrics_dir, 0o700)  # a run made before metrics existed
        except FileExistsError:
            pass
        for task in self._plan.tasks:
            entry = tasks[task.id]
            if task.id not in self._selected:
                if entry["status"] == TaskStatus.SUCCESS.value:
                    self._done += 1
                continue
            if task.id in self._adopted:
                continue  # stays RUNNING, its attempt open: it is taken over below
            if entry["status"] != TaskStatus.PENDING.value or entry["attempts"]:
                self._store.update_task(task.id, _pending_fields())
        for task_id, reason in self._readiness.start():
            self._mark_skipped(task_id, SkipReason(reason))
        self._store.flush()

    def _adopt(self, task: Task) -> None:
        """Take over the task's open attempt (still running, or ended while no orch watched:
        the runner reports which). It is the first attempt of this execution."""
        entry = self._state["tasks"][task.id]
        last = entry["history"][-1]
        number = int(last.get("attempt") or entry["attempts"])
        started = Started(
            pid=None,
            identity=None,
            started_at=_epoch(last.get("started_at")),
            stdout_offset=int(last.get("stdout_offset") or 0),
            stderr_offset=int(last.get("stderr_offset") or 0),
            job_id=last.get("job_id"),
        )
        self._execution_attempts[task.id] = 1
        self._last_attempt[task.id] = number + task.retries
        self._execution_started[task.id] = _epoch(entry.get("started_at") or None)
        self._running.add(task.id)
        if task.pool is not None:
            self._pool_use[task.pool] = self._pool_use.get(task.pool, 0) + 1
        self._stale_ready.add(task.id)
        self._runner.adopt(self._spec(task, number), started)
        self._progress.task_started(task.id, number, self._last_attempt[task.id])

    # ------------------------------------------------------------------ starting

    def _free_slot(self) -> bool:
        return len(self._running) < self._max_parallel

    def _pool_free(self, pool: Optional[str]) -> bool:
        return pool is None or self._pool_use.get(pool, 0) < self._plan.pools.get(pool, 1)

    def _start_ready(self) -> None:
        while not self._stop_new and self._free_slot():
            task_id = self._readiness.pop_ready(self._pool_free)
            if task_id is None:
                return
            if task_id in self._stale_ready:
                self._stale_ready.discard(task_id)  # adopted: it runs already
                continue
            task = self._tasks[task_id]
            if self._unsynced and (
                task_id in self._unsynced or any(d in self._unsynced for d in task.depends_on)
            ):
                # The outcomes this start acts on (its dependencies', or its own failed
                # attempt for a retry) are made durable first; one fsync covers them all.
                self._store.flush()
                self._unsynced.clear()
            self._start(task)

    def _release_due_backoffs(self) -> None:
        now = self._clock()
        while self._backoff and self._backoff[0][0] <= now:
            _, _, task_id = heapq.heappop(self._backoff)
            self._readiness.requeue(task_id)
            self._released.append((task_id, self._state["tasks"][task_id]["attempts"]))

    def _report_released_waits(self) -> None:
        """A retry whose backoff is over but that found no free slot or pool waits on: say
        so, or the progress would count down to "retry in 0.0s" and stay there."""
        for task_id, attempts in self._released:
            if self._state["tasks"][task_id]["attempts"] == attempts:  # it did not start
                pool = self._tasks[task_id].pool
                why = "a slot" if self._pool_free(pool) else f"pool {pool}"
                self._progress.task_waiting(task_id, why)
        self._released.clear()

    def _report_pool_waits(self) -> None:
        # Once per tick, not per round: the held tasks of a big pool can be many.
        for task_id in self._readiness.waiting_for_pool(self._pool_free):
            self._progress.task_waiting(task_id, f"pool {self._tasks[task_id].pool}")

    def _start(self, task: Task) -> None:
        if task.workspace is not None and not self._worktree_usable(task.id):
            self._prepare_worktree(task)
            return
        entry = self._state["tasks"][task.id]
        number = entry["attempts"] + 1
        in_execution = self._execution_attempts.get(task.id, 0) + 1
        self._execution_attempts[task.id] = in_execution
        spec = self._spec(task, number)
        started: Any
        # Before the start: what the attempt appends from here on is its own.
        grown = file_size(self._layout.metrics(task.id))
        try:
            self._write_context(task, number, spec.env["ORCH_CONTEXT"])
        except OSError as err:
            started = failed_result(f"cannot write the task context: {err.strerror or err}")
        else:
            refused = self._worktree_refused.pop(task.id, None)
            started = failed_result(refused) if refused else self._runner.start(spec)
        started_iso = iso_time(started.started_at)
        fields: Dict[str, Any] = {"status": TaskStatus.RUNNING.value, "attempts": number}
        job_id = getattr(started, "job_id", None)
        if job_id is not None:
            fields["job_id"] = job_id
        if in_execution == 1:
            self._last_attempt[task.id] = number + task.retries
            self._execution_started[task.id] = started.started_at
            fields["started_at"] = started_iso
        attempt = _attempt_entry(number, started, started_iso)
        if grown:
            attempt["metrics_offset"] = grown  # earlier attempts' lines are theirs
        plan_version = self._state.get("plan_version")
        if plan_version:
            attempt["plan_version"] = plan_version  # only after a `resume --plan` edit
        self._store.update_task(task.id, fields, new_attempt=attempt)
        if job_id is not None:
            # A batch job outlives orch: its id is written (page cache, which survives orch's
            # death) before anything else happens, so a resume can adopt it by that record.
            self._store.flush(sync=False)
        self._running.add(task.id)
        if task.pool is not None:
            self._pool_use[task.pool] = self._pool_use.get(task.pool, 0) + 1
        self._progress.task_started(task.id, number, self._last_attempt[task.id])
        if isinstance(started, AttemptResult):
            self._attempt_ended(task.id, started)

    def _write_context(self, task: Task, number: int, path: str) -> None:
        """The attempt's ORCH_CONTEXT. A file shared by several tasks (no dependencies, or the
        same ones) is written once per session: its dependencies have all ended by the first
        start and do not change afterwards. A file creation per task is the largest cost of a
        plan of many quick tasks."""
        self._context_cache.pop(task.id, None)  # it runs again: its dependents re-encode it
        own = path == self._layout.context(task.id)
        if not own:
            if path in self._contexts_written:
                return
            self._contexts_written.add(path)
        tasks = self._state["tasks"]
        artifacts.write_context(
            path,
            run_id=self._store.run_id,
            task_id=task.id if own else None,
            attempt=number if own else None,
            run_dir=self._store.run_dir,
            artifacts_dir=self._layout.artifacts,
            dependencies={dep: tasks[dep] for dep in task.depends_on},
            encoded=self._context_cache,
            atomic=not own,  # an adopted attempt of an earlier session may be reading it
        )

    def _spec(self, task: Task, number: int) -> AttemptSpec:
        entry = self._state["tasks"][task.id]
        own = {
            "ORCH_TASK_ID": task.id,
            "ORCH_ATTEMPT": str(number),
            "ORCH_METRICS": self._layout.metrics(task.id),
            "ORCH_CONTEXT": self._context_paths.get(task.id, self._layout.run_context),
        }
        return AttemptSpec(
            task_id=task.id,
            attempt=number,
            argv=task.cmd,
            cwd=self._task_cwd(task),
            env=AttemptEnv(self._shared_env(task), own),
            stdout_path=entry.get("stdout_path") or self._layout.stdout_log(task.id),
            stderr_path=entry.get("stderr_path") or self._layout.stderr_log(task.id),
            timeout_sec=task.timeout_sec,
            idle_timeout_sec=task.idle_timeout_sec,
            grace_sec=self._grace_sec,
        )

    def _shared_env(self, task: Task) -> Dict[str, str]:
        """orch's environment, then the task's `env`, then the run's ORCH_* variables: one dict
        for every task with the same `env` (most plans: one for the whole run)."""
        scrub = task.id in self._worktrees
        key = (scrub, tuple(task.env.items()))
        env = self._shared_envs.get(key)
        if env is None:
            env = dict(self._base_env)
            if scrub:
                # An inherited GIT_DIR (and the like) would point the agent's git at the
                # user's repository instead of its worktree.
                workspace.scrub_git_env(env)
            env.update(task.env)
            # orch's own variables last: a plan cannot hide an attempt from crash recovery.
            env.update(self._orch_env)
            if len(self._shared_envs) < _SHARED_ENVS_MAX:
                self._shared_envs[key] = env
        return env

    # ------------------------------------------------------------------ reaping

    def _attempt_ended(self, task_id: str, result: AttemptResult) -> None:
        task = self._tasks[task_id]
        worktree = self._worktrees.get(task_id)
        if worktree is None and task.workspace is not None and task_id in self._adopted:
            # An attempt taken over from an earlier session (_adopt): its recorded worktree.
            worktree = workspace.recorded(task, self._state, self._store.run_dir)
        if not task.outputs and worktree is None:
            self._reap(task_id, result, None)
            return
        number = self._state["tasks"][task_id]["attempts"]
        cwd = self._task_cwd(task)
        future = self._workers().submit(self._after_attempt, task, number, worktree, cwd)
        self._collecting[task_id] = _Collected(result, future)

    def _workers(self) -> ThreadPoolExecutor:
        if self._collector is None:
            from concurrent.futures import ThreadPoolExecutor

            self._collector = ThreadPoolExecutor(2, thread_name_prefix="orch-collect")
        return self._collector

    def _after_attempt(
        self, task: Task, number: int, worktree: Optional[workspace.Prepared], cwd: str
    ) -> _AfterAttempt:
        """In a worker: commit what the attempt left in its worktree, then collect its
        outputs (from the worktree, so they are what was committed)."""
        fields = None
        if worktree is not None:
            fields = workspace.commit_attempt(worktree.target, number)
        if not task.outputs:
            return None, fields
        runs = os.path.join(self._state["home"], "runs")
        collected = artifacts.collect_outputs(
            task.outputs,
            cwd,
            self._layout.artifacts,
            self._state.get("artifacts_dir"),
            task.id,
            workdir=self._state["workdir"],
            # Never collect orch's own run directories (a `**` over a workdir holding the
            # home), unless the cwd is a worktree, which lives in one.
            exclude=[] if worktree is not None else [runs],
        )
        return collected, fields

    # ------------------------------------------------------------------ worktrees

    def _task_cwd(self, task: Task) -> str:
        worktree = self._worktrees.get(task.id)
        if worktree is not None and worktree.cwd is not None:
            return worktree.cwd  # the same relative cwd, inside the task's worktree
        return os.path.join(self._state["workdir"], task.cwd)

    def _worktree_usable(self, task_id: str) -> bool:
        if task_id in self._worktree_refused:
            return True  # the attempt fails at once, saying why
        worktree = self._worktrees.get(task_id)
        return worktree is not None and os.path.isdir(str(worktree.cwd))

    def _prepare_worktree(self, task: Task) -> None:
        """Create or adopt the task's worktree in a worker (a checkout can take long); the
        task holds its slot and pool place meanwhile, and starts in ``_worktree_ready``."""
        self._worktrees.pop(task.id, None)
        target = workspace.target_for(task, self._state, self._store.run_dir)
        last = self._state["tasks"][task.id]["attempts"]
        self._running.add(task.id)
        if task.pool is not None:
            self._pool_use[task.pool] = self._pool_use.get(task.pool, 0) + 1
        future = self._workers().submit(workspace.prepare, target, self._worktree_lock, last)
        self._preparing[task.id] = future

    def _worktree_ready(self, task_id: str, future: Future[workspace.Prepared]) -> None:
        task = self._tasks[task_id]
        self._running.discard(task_id)
        if task.pool is not None:
            self._pool_use[task.pool] -= 1
        error = future.exception()
        if error is not None:  # a bug in prepare must not take the run down
            message = f"orch internal error preparing the worktree: {error!r}"
            self._store.update_task(task_id, {"workspace_error": message})
            self._worktree_refused[task_id] = message
        else:
            prepared = future.result()
            self._store.update_task(task_id, prepared.fields)
            if prepared.cwd is None:
                self._worktree_refused[task_id] = prepared.error or "no worktree"
            else:
                self._worktrees[task_id] = prepared
        if self._canceling:
            # Canceled while its worktree was being made: it never started.
            self._worktree_refused.pop(task_id, None)
            self._mark_skipped(task_id, SkipReason.RUN_CANCELED, TaskStatus.CANCELED)
            return
        self._start(task)

    def _reap(
        self, task_id: str, result: AttemptResult, collected: Optional[artifacts.Collected]
    ) -> None:
        self._running.discard(task_id)
        task = self._tasks[task_id]
        if task.pool is not None:
            self._pool_use[task.pool] -= 1
        missing: List[str] = []
        if task.require_outputs and collected is not None and result.exit_code == 0:
            missing = list(collected.missing_outputs)
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
        self._record_metrics(task)
        # The attempt's end goes in the same journal record as the task's next status.
        end = _attempt_end(result, missing)
        if policy.succeeded(result, missing):
            self._finish(task_id, TaskStatus.SUCCESS, result, attempt_end=end)
            return
        if result.canceled:
            self._finish(
                task_id, TaskStatus.CANCELED, result, SkipReason.RUN_CANCELED, attempt_end=end
            )
            return
        retry, why_not = policy.retry_verdict(task, result, self._tails(task_id), missing)
        if retry and self._execution_attempts[task_id] <= task.retries and not self._stop_new:
            self._schedule_retry(task, result, missing, end)
            return
        self._finish(
            task_id, TaskStatus.FAILED, result, note=why_not, missing=missing, attempt_end=end
        )
        if self._fail_fast and not self._stop_new and not task.allow_failure:
            self._begin_fail_fast()

    def _tails(self, task_id: str) -> Callable[[], Tuple[str, str]]:
        entry = self._state["tasks"][task_id]
        attempt = entry["history"][-1]

        def read() -> Tuple[str, str]:
            out = logs.tail_bytes(entry.get("stdout_path"), attempt.get("stdout_offset", 0))
            err = logs.tail_bytes(entry.get("stderr_path"), attempt.get("stderr_offset", 0))
            return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

        return read

    def _schedule_retry(
        self, task: Task, result: AttemptResult, missing: List[str], end: Dict[str, Any]
    ) -> None:
        next_attempt = self._execution_attempts[task.id] + 1
        delay = task.backoff_before(next_attempt, self._rand)
        self._store.update_task(task.id, {"status": TaskStatus.PENDING.value}, attempt_fields=end)
        self._unsynced.add(task.id)
        heapq.heappush(self._backoff, (self._clock() + delay, self._order[task.id], task.id))
        self._progress.task_retrying(
            task.id,
            self._state["tasks"][task.id]["attempts"] + 1,
            delay,
            policy.describe(result, task, missing),
            self._last_attempt[task.id],
        )

    def _finish(
        self,
        task_id: str,
        status: TaskStatus,
        result: AttemptResult,
        skip_reason: Optional[SkipReason] = None,
        *,
        note: Optional[str] = None,
        missing: Optional[List[str]] = None,
        attempt_end: Optional[Dict[str, Any]] = None,
    ) -> None:
        """Record the task's final status of this execution (with its attempt's end, when it
        just ended) and tell Readiness, which may skip dependents."""
        task = self._tasks[task_id]
        entry = self._state["tasks"][task_id]
        error = _result_error(result, missing or ())
        if note:
            error = f"{error}; {note}" if error else note
        allowed = status is TaskStatus.FAILED and task.allow_failure
        ended = attempt_end["ended_at"] if attempt_end else iso_time(result.ended_at)
        fields: Dict[str, Any] = {
            "status": status.value,
            "ended_at": ended,
            "exit_code": result.exit_code,
            "signal": result.signal,
            "timed_out": result.timed_out,
            "timed_out_by": result.timed_out_by,
            "canceled": status is TaskStatus.CANCELED,
            "error": error,
            "skip_reason": skip_reason.value if skip_reason else None,
        }
        if allowed or entry.get("allowed_failure"):
            fields["allowed_failure"] = allowed
        # The execution is over: its bookkeeping goes (10,000 tasks would keep 30,000 entries).
        self._execution_attempts.pop(task_id, None)
        self._last_attempt.pop(task_id, None)
        began = self._execution_started.pop(task_id, None)
        if began is not None:
            fields["duration_sec"] = round(result.ended_at - began, 6)
        self._store.update_task(task_id, fields, attempt_fields=attempt_end)
        self._unsynced.add(task_id)
        self._done += 1
        shown = "" if status is TaskStatus.SUCCESS else policy.describe(result, task, missing or ())
        if note:
            shown = f"{shown}; {note}"
        self._progress.task_finished(
            task_id, status.value, entry["attempts"], fields.get("duration_sec") or 0.0, shown
        )
        outcome = Outcome(status.value, fields["skip_reason"], allowed)
        for skipped, reason in self._readiness.task_ended(task_id, outcome):
            self._mark_skipped(skipped, SkipReason(reason))

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
        self._unsynced.add(task_id)
        self._done += 1
        self._progress.task_finished(task_id, status.value, 0, 0.0, reason.value)

    # ------------------------------------------------------------------ stopping

    def _begin_fail_fast(self) -> None:
        self._stop_new = True
        self._abandon_waiting(SkipReason.FAIL_FAST, TaskStatus.SKIPPED)

    def _record_metrics(self, task: Task) -> None:
        """Fold what the attempt reported (ORCH_METRICS lines, stdout JSON) into the task and
        the run; past the budget, nothing new starts."""
        entry = self._state["tasks"][task.id]
        attempt = entry["history"][-1]
        found, errors = _metrics_file_part(self._layout.metrics(task.id), attempt)
        if task.metrics == "stdout-json":
            tail = logs.tail_bytes(entry.get("stdout_path"), attempt.get("stdout_offset", 0))
            printed = metrics.from_stdout_json(tail)
            if printed:
                found = metrics.add(found, printed)
        if not found and not errors:
            return
        fields: Dict[str, Any] = {"metrics": metrics.add(entry.get("metrics") or {}, found)}
        if errors:
            fields["metrics_errors"] = entry.get("metrics_errors", 0) + errors
        self._store.update_task(
            task.id, fields, attempt_fields={"metrics": found} if found else None
        )
        total = metrics.add(self._state.get("metrics") or {}, found)
        self._store.update_run({"metrics": total})
        limit = self._plan.max_cost_usd
        if limit is not None and total.get(metrics.COST, 0.0) >= limit and not self._stop_new:
            self._stop_new = True
            self._progress.budget_exceeded(total.get(metrics.COST, 0.0), limit)
            self._abandon_waiting(SkipReason.BUDGET_EXCEEDED, TaskStatus.SKIPPED)

    def _begin_cancel(self) -> None:
        self._canceling = True
        self._stop_new = True
        for task_id in list(self._running):
            self._runner.cancel(task_id)
        self._abandon_waiting(SkipReason.RUN_CANCELED, TaskStatus.CANCELED)
        self._progress.run_stopping(len(self._running), self._grace_sec)

    def _abandon_waiting(self, reason: SkipReason, status: TaskStatus) -> None:
        """Ready, waiting and backing-off tasks will not start."""
        backing_off = [task_id for _, _, task_id in sorted(self._backoff)]
        self._backoff.clear()
        for task_id in backing_off:
            if status is TaskStatus.SKIPPED:
                # It has failed once already: its last attempt stands.
                why = "budget exceeded" if reason is SkipReason.BUDGET_EXCEEDED else "fail-fast"
                self._finish_from_last_attempt(task_id, f"not retried: {why}")
            else:
                self._mark_skipped(task_id, reason, status)
        for task_id in self._readiness.abandon():
            if self._state["tasks"][task_id]["status"] == TaskStatus.PENDING.value:
                self._mark_skipped(task_id, reason, status)

    def _finish_from_last_attempt(self, task_id: str, note: str) -> None:
        last = self._state["tasks"][task_id]["history"][-1]
        result = AttemptResult(
            exit_code=last.get("exit_code"),
            signal=last.get("signal"),
            timed_out=bool(last.get("timed_out")),
            canceled=False,
            error=last.get("error"),
            started_at=time.time(),
            ended_at=time.time(),
            pid=last.get("pid"),
            stdout_offset=last.get("stdout_offset", 0),
            stderr_offset=last.get("stderr_offset", 0),
            timed_out_by=last.get("timed_out_by"),
        )
        ended = last.get("ended_at")
        self._finish(task_id, TaskStatus.FAILED, result, note=note)
        if ended:
            self._store.update_task(task_id, {"ended_at": ended})


def _context_paths(plan: Plan, layout: RunLayout) -> Dict[str, str]:
    """Each task with dependencies -> its ORCH_CONTEXT file: its own, or the one it shares
    with the other tasks of the same dependencies (a dense layered plan: one per layer)."""
    by_deps: Dict[Tuple[str, ...], List[str]] = {}
    for task in plan.tasks:
        if task.depends_on:
            by_deps.setdefault(task.depends_on, []).append(task.id)
    paths = {}
    for members in by_deps.values():
        if len(members) == 1:
            paths[members[0]] = layout.context(members[0])
        else:
            shared = layout.shared_context(members[0])
            paths.update((member, shared) for member in members)
    return paths


def _dir_id(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _collection(future: Future[_AfterAttempt]) -> _AfterAttempt:
    error = future.exception()
    if error is None:
        return future.result()
    # A bug in the collector must not take the run down: the problem is recorded, visibly.
    message = f"orch internal error after the attempt: {error!r}"
    return artifacts.Collected([], [], [], [message]), {"workspace_error": message}


def _pending_fields() -> Dict[str, Any]:
    return {
        "status": TaskStatus.PENDING.value,
        "started_at": None,
        "skip_reason": None,
        **no_result(),
    }


def _attempt_end(result: AttemptResult, missing: List[str]) -> Dict[str, Any]:
    """The fields an attempt's history entry gets when it ends."""
    return {
        "ended_at": iso_time(result.ended_at),
        "duration_sec": round(result.ended_at - result.started_at, 6),
        "exit_code": result.exit_code,
        "signal": result.signal,
        "timed_out": result.timed_out,
        "timed_out_by": result.timed_out_by,
        "canceled": result.canceled,
        "error": _result_error(result, missing),
    }


def _result_error(result: AttemptResult, missing: Sequence[str]) -> Optional[str]:
    """The error an attempt's end records: a missing required output, else the runner's."""
    return f"required output missing: {missing[0]}" if missing else result.error


def _attempt_entry(number: int, started: Any, started_iso: str) -> AttemptState:
    """The history entry of an attempt as it starts (or fails to start)."""
    got = started if isinstance(started, Started) else None
    entry: Dict[str, Any] = {
        "attempt": number,
        "started_at": started_iso,
        **no_result(),
        "pid": got.pid if got else None,
        "identity": got.identity if got else None,
        "stdout_offset": started.stdout_offset,
        "stderr_offset": started.stderr_offset,
    }
    if got is not None and got.job_id is not None:
        entry["job_id"] = got.job_id
    return entry  # type: ignore[return-value]


def _epoch(iso: Optional[str]) -> float:
    """A recorded timestamp as epoch seconds (now, if there is none or it cannot be read)."""
    if iso:
        try:
            return datetime.fromisoformat(iso).timestamp()
        except ValueError:
            pass
    return time.time()


def _metrics_file_part(path: str, attempt: AttemptState) -> Tuple[Dict[str, float], int]:
    """What the attempt appended to its ORCH_METRICS file (bounded read; absent: nothing)."""
    start = attempt.get("metrics_offset", 0)
    try:
        if os.stat(path).st_size <= start:
            return {}, 0  # the common case: the task wrote no metrics (a stat, not an open)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(metrics.MAX_METRICS_BYTES)
    except OSError:
        return {}, 0
    return metrics.from_metrics_lines(data)
