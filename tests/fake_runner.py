"""An in-process runner on a virtual clock, for testing the scheduler's rules.

Attempts "run" for scripted virtual seconds; ``wait`` advances the clock to the next end (or
by its timeout), so a test of backoffs, pools or fail-fast takes milliseconds and is exactly
repeatable. Everything else the scheduler touches (store, journal, context files, artifacts)
is real.
"""

from __future__ import annotations

import signal
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from orch import store as store_mod
from orch.model import Plan, RunStatus
from orch.plan import parse_plan
from orch.progress import Progress
from orch.runner import AttemptResult, AttemptSpec, Started
from orch.scheduler import Scheduler, StopRequest
from orch.state import RunState, initial_run_state


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Step:
    """One scripted attempt: how long it runs and how it ends."""

    duration: float = 1.0
    exit_code: Optional[int] = 0
    signal: Optional[int] = None
    start_error: Optional[str] = None
    stdout: str = ""  # written to the stdout log as the attempt starts
    metrics: str = ""  # appended to $ORCH_METRICS as the attempt starts


class FakeRunner:
    def __init__(self, clock: FakeClock, script: Dict[str, Sequence[Step]]) -> None:
        self.clock = clock
        self.script = script
        self.starts: List[Tuple[str, int, float]] = []  # (task, attempt, virtual time)
        self._running: Dict[str, Tuple[AttemptSpec, Step, float, float]] = {}
        self._ended: List[Tuple[str, AttemptResult]] = []
        self.on_wait: Optional[Callable[[FakeRunner], None]] = None

    def _step(self, spec: AttemptSpec) -> Step:
        steps = self.script.get(spec.task_id, ())
        done = sum(1 for t, _, _ in self.starts if t == spec.task_id) - 1
        return steps[min(done, len(steps) - 1)] if steps else Step()

    def start(self, spec: AttemptSpec) -> Union[Started, AttemptResult]:
        now = self.clock()
        self.starts.append((spec.task_id, spec.attempt, now))
        step = self._step(spec)
        if step.start_error:
            return _result(spec, now, now, error=step.start_error)
        if step.stdout:
            with open(spec.stdout_path, "a", encoding="utf-8") as f:
                f.write(step.stdout)
        if step.metrics:
            with open(spec.env["ORCH_METRICS"], "a", encoding="utf-8") as f:
                f.write(step.metrics)
        end = now + step.duration
        if spec.timeout_sec is not None:
            end = min(end, now + spec.timeout_sec)
        self._running[spec.task_id] = (spec, step, now, end)
        return Started(None, None, now, 0, 0)

    def wait(self, timeout: float) -> List[Tuple[str, AttemptResult]]:
        if self.on_wait is not None:
            self.on_wait(self)
        if self._ended:
            ended, self._ended = self._ended, []
            return ended
        target = self.clock() + timeout
        if self._running:
            target = min(target, min(end for _, _, _, end in self._running.values()))
        self.clock.now = max(self.clock.now, target)
        ended = []
        for task_id, (spec, step, began, end) in list(self._running.items()):
            if end <= self.clock.now:
                del self._running[task_id]
                timed_out = spec.timeout_sec is not None and step.duration > spec.timeout_sec
                if timed_out:
                    ended.append((task_id, _result(spec, began, end, timed_out=True)))
                else:
                    ended.append(
                        (task_id, _result(spec, began, end, code=step.exit_code, sig=step.signal))
                    )
        return ended

    def cancel(self, task_id: str) -> None:
        spec, _, began, _ = self._running.pop(task_id)
        self._ended.append((task_id, _result(spec, began, self.clock(), canceled=True)))

    def kill_all(self) -> None:
        for task_id in list(self._running):
            self.cancel(task_id)

    def running(self) -> int:
        return len(self._running)

    def close(self) -> None:
        self._running.clear()

    def started_at(self, task_id: str) -> List[float]:
        return [t for tid, _, t in self.starts if tid == task_id]


def _result(
    spec: AttemptSpec,
    began: float,
    end: float,
    *,
    code: Optional[int] = None,
    sig: Optional[int] = None,
    timed_out: bool = False,
    canceled: bool = False,
    error: Optional[str] = None,
) -> AttemptResult:
    if timed_out or canceled:
        sig = signal.SIGTERM
    return AttemptResult(
        exit_code=None if (timed_out or canceled or error or sig) else code,
        signal=sig if not error else None,
        timed_out=timed_out,
        canceled=canceled,
        error=error,
        started_at=1e9 + began,
        ended_at=1e9 + end,
        pid=None if error else 1,
        stdout_offset=0,
        stderr_offset=0,
        timed_out_by="timeout_sec" if timed_out else None,
    )


class Recorder(Progress):
    """Progress events as tuples, for assertions."""

    def __init__(self) -> None:
        self.events: List[Tuple[object, ...]] = []

    def task_started(self, task_id: str, attempt: int, max_attempts: Optional[int] = None) -> None:
        self.events.append(("start", task_id, attempt))

    def task_retrying(
        self,
        task_id: str,
        attempt: int,
        delay: float,
        reason: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        self.events.append(("retry", task_id, attempt, delay, reason))

    def task_finished(
        self,
        task_id: str,
        status: str,
        attempt: int,
        duration: float,
        detail: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        self.events.append(("end", task_id, status, detail))


@dataclass
class Outcome:
    status: RunStatus
    state: RunState
    runner: FakeRunner
    progress: Recorder

    def task(self, task_id: str) -> Dict[str, object]:
        return dict(self.state["tasks"][task_id])

    def statuses(self) -> Dict[str, str]:
        return {t: e["status"] for t, e in self.state["tasks"].items()}


def make_plan(text: str) -> Plan:
    return parse_plan(textwrap.dedent(text), "plan.yaml")


def run_plan(
    tmp: Path,
    plan: Union[str, Plan],
    script: Optional[Dict[str, Sequence[Step]]] = None,
    *,
    max_parallel: int = 4,
    fail_fast: bool = False,
    selected: Optional[Set[str]] = None,
    stop: Optional[StopRequest] = None,
    on_wait: Optional[Callable[[FakeRunner], None]] = None,
    state: Optional[RunState] = None,
) -> Outcome:
    """Run ``plan`` in-process against the fake runner; a real run directory under ``tmp``."""
    if isinstance(plan, str):
        plan = make_plan(plan)
    clock = FakeClock()
    runner = FakeRunner(clock, script or {})
    runner.on_wait = on_wait
    workdir = tmp / "work"
    workdir.mkdir(parents=True, exist_ok=True)

    def make_state(run_id: str, run_dir: str) -> RunState:
        assert isinstance(plan, Plan)
        return initial_run_state(
            plan,
            run_id=run_id,
            run_dir=run_dir,
            home=str(tmp / "home"),
            workdir=str(workdir),
            plan_path="plan.yaml",
            artifacts_dir=None,
            max_parallel=max_parallel,
            fail_fast=fail_fast,
            now=store_mod.now_iso(),
        )

    run = store_mod.create_run(str(tmp / "home"), b"", make_state)
    if state is not None:
        for task_id, entry in state["tasks"].items():
            run.update_task(task_id, dict(entry))
    progress = Recorder()
    scheduler = Scheduler(
        plan,
        run,
        progress,
        runner,
        selected=selected if selected is not None else {t.id for t in plan.tasks},
        max_parallel=max_parallel,
        fail_fast=fail_fast,
        stop=stop or StopRequest(),
        grace_sec=1.0,
        clock=clock,
        rand=lambda: 1.0,
    )
    status = scheduler.run()
    run.close()
    return Outcome(status, run.state, runner, progress)
