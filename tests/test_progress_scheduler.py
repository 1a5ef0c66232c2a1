"""What the scheduler tells its Progress: waits (for a slot, a pool), stops, the live state.

In-process against the fake runner (tests/fake_runner.py) on a virtual clock, with a recorder
that also keeps the calls the plain Recorder ignores.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

import fake_runner
import pytest
from fake_runner import FakeRunner, Step, run_plan

from orch.model import RunStatus
from orch.progress import make_progress
from orch.scheduler import StopRequest


class WaitRecorder(fake_runner.Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.state: Optional[Mapping[str, Any]] = None

    def run_started(
        self,
        run_id: str,
        total: int,
        already_done: int,
        state: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.state = state

    def task_waiting(self, task_id: str, why: str, seconds: Optional[float] = None) -> None:
        self.events.append(("waiting", task_id, why))

    def run_stopping(self, running: int, grace_sec: float) -> None:
        self.events.append(("stopping", running, grace_sec))

    def run_killing(self, running: int) -> None:
        self.events.append(("killing", running))


@pytest.fixture(autouse=True)
def recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_runner, "Recorder", WaitRecorder)


def _events(out: fake_runner.Outcome, *kinds: str) -> List[Tuple[object, ...]]:
    return [e for e in out.progress.events if e[0] in kinds]


def test_a_retry_whose_backoff_is_over_but_has_no_slot_is_said_to_wait_for_one(
    tmp_path: Path,
) -> None:
    plan = """
    tasks:
      - {id: flaky, cmd: "true", retries: 1, retry_backoff_sec: 1}
      - {id: hog, cmd: "true"}
    """
    out = run_plan(
        tmp_path, plan, {"flaky": [Step(1, 1), Step(1, 0)], "hog": [Step(5)]}, max_parallel=1
    )
    assert out.status is RunStatus.SUCCESS
    # flaky fails at 1 and may retry at 2, but hog holds the only slot until 6.
    assert out.runner.started_at("flaky") == [0.0, 6.0]
    assert _events(out, "retry", "waiting", "start") == [
        ("start", "flaky", 1),
        ("retry", "flaky", 2, 1.0, "exit 1"),
        ("start", "hog", 1),
        ("waiting", "flaky", "a slot"),
        ("start", "flaky", 2),
    ]


def test_a_retry_that_starts_when_its_backoff_ends_is_not_said_to_wait(tmp_path: Path) -> None:
    plan = "tasks: [{id: flaky, cmd: 'true', retries: 2, retry_backoff_sec: 1}]"
    out = run_plan(tmp_path, plan, {"flaky": [Step(1, 1), Step(1, 1), Step(1, 0)]})
    assert _events(out, "waiting") == []


def test_tasks_held_back_by_a_full_pool_are_said_to_wait_for_it(tmp_path: Path) -> None:
    plan = """
    pools: {llm: 1}
    tasks:
      - {id: a, cmd: "true", pool: llm}
      - {id: b, cmd: "true", pool: llm}
      - {id: c, cmd: "true"}
    """
    out = run_plan(tmp_path, plan, {"a": [Step(3)], "b": [Step(1)], "c": [Step(1)]})
    waits = _events(out, "waiting")
    assert waits and set(waits) == {("waiting", "b", "pool llm")}
    assert out.runner.started_at("b") == [3.0]


def test_a_cancel_says_how_many_tasks_it_waits_for_and_a_second_one_kills(
    tmp_path: Path,
) -> None:
    stop = StopRequest()

    def stop_twice(runner: FakeRunner) -> None:
        # Ctrl-C twice at 2 s: the fake runner's attempts end at once on a cancel.
        if runner.clock() >= 2.0 and not stop.count:
            stop.request()
            stop.request()

    plan = """
    tasks:
      - {id: a, cmd: "true"}
      - {id: b, cmd: "true"}
      - {id: later, cmd: "true", depends_on: [a]}
    """
    out = run_plan(
        tmp_path, plan, {"a": [Step(10)], "b": [Step(10)]}, stop=stop, on_wait=stop_twice
    )
    assert out.status is RunStatus.CANCELED
    stops = _events(out, "stopping", "killing")
    assert stops == [("stopping", 2, 1.0), ("killing", 2)]  # run_plan's grace is 1 s
    # The canceled never-started task is reported before the stop line is printed.
    ends = [e for e in out.progress.events if e[0] == "end"]
    assert ends[0] == ("end", "later", "CANCELED", "run_canceled")


def test_progress_gets_the_live_state_for_logs_and_root_failures(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: a, cmd: "true"}
      - {id: b, cmd: "true", depends_on: [a]}
      - {id: c, cmd: "true", depends_on: [b]}
    """
    out = run_plan(tmp_path, plan, {"a": [Step(1, 2, stdout="ERROR: rate limit\n")]})
    progress = out.progress
    assert isinstance(progress, WaitRecorder) and progress.state is not None
    assert progress.state["tasks"]["c"]["status"] == "SKIPPED"  # the same dict, kept current


def test_plain_progress_from_a_scheduled_run_names_root_and_output(tmp_path: Path) -> None:
    """The real plain Progress fed by the scheduler: the failure's stdout line, the command,
    and the root failure of a skip two levels down."""
    stream = io.StringIO()

    class Plain(WaitRecorder):  # the recorder slot, filled with the real plain view
        def __new__(cls) -> Any:  # type: ignore[misc]
            return make_progress(stream, {})

    fake_runner.Recorder = Plain  # type: ignore[misc]  # undone by the autouse fixture
    plan = """
    tasks:
      - {id: a, cmd: "true"}
      - {id: b, cmd: "true", depends_on: [a]}
      - {id: c, cmd: "true", depends_on: [b]}
    """
    out = run_plan(tmp_path, plan, {"a": [Step(1, 2, stdout="ERROR: rate limit\n")]})
    assert out.status is RunStatus.FAILED
    lines = stream.getvalue().splitlines()
    run_id = lines[0].split()[1].rstrip(":")
    assert lines[2:] == [
        "[1/3] FAILED a (exit 2, 1.0s)",
        "  stdout| ERROR: rate limit",
        f"  all of it: orch logs {run_id} --task a --home {tmp_path / 'home'}",
        "[2/3] SKIPPED b (root failure: a)",
        "[3/3] SKIPPED c (root failure: a)",
    ]
