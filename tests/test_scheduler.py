"""The scheduler's rules, in-process against the fake runner on a virtual clock.

Real processes are tested in test_runner.py (the runner) and the end-to-end tests (the CLI);
here every rule of dispatch, retry, skip, fail-fast, cancel, pools and conditions is checked
exactly, in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from fake_runner import FakeRunner, Step, run_plan

from orch.model import RunStatus
from orch.scheduler import StopRequest

FLAT4 = """
tasks:
  - {id: a, cmd: "true"}
  - {id: b, cmd: "true"}
  - {id: c, cmd: "true"}
  - {id: d, cmd: "true"}
"""


def test_max_parallel_bounds_attempts_in_flight_and_plan_order_decides(tmp_path: Path) -> None:
    out = run_plan(tmp_path, FLAT4, max_parallel=2)
    assert out.status is RunStatus.SUCCESS
    assert [(t, at) for t, _, at in out.runner.starts] == [
        ("a", 0.0),
        ("b", 0.0),
        ("c", 1.0),
        ("d", 1.0),
    ]


def test_dependents_start_the_moment_their_dependency_ends(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: slow, cmd: "true"}
      - {id: quick, cmd: "true"}
      - {id: after_quick, cmd: "true", depends_on: [quick]}
    """
    out = run_plan(tmp_path, plan, {"slow": [Step(5)], "quick": [Step(1)]})
    assert out.runner.started_at("after_quick") == [1.0]


def test_retries_wait_out_the_backoff_list_and_the_last_value_repeats(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: flaky, cmd: "true", retries: 3, retry_backoff_sec: [1, 3]}
    """
    steps = [Step(1, 1), Step(1, 1), Step(1, 1), Step(1, 0)]
    out = run_plan(tmp_path, plan, {"flaky": steps})
    assert out.status is RunStatus.SUCCESS
    # ends at 1, +1 backoff; ends at 3, +3; ends at 7, +3 (the last value repeats)
    assert out.runner.started_at("flaky") == [0.0, 2.0, 6.0, 10.0]
    assert out.task("flaky")["attempts"] == 4
    retries = [e for e in out.progress.events if e[0] == "retry"]
    assert [(e[2], e[3], e[4]) for e in retries] == [
        (2, 1, "exit 1"),
        (3, 3, "exit 1"),
        (4, 3, "exit 1"),
    ]


def test_backoff_mapping_grows_by_factor_up_to_max(tmp_path: Path) -> None:
    plan = """
    tasks:
      - id: flaky
        cmd: "true"
        retries: 4
        retry_backoff_sec: {initial: 1, factor: 3, max: 5}
    """
    out = run_plan(tmp_path, plan, {"flaky": [Step(0, 1)] * 4 + [Step(0, 0)]})
    assert out.runner.started_at("flaky") == [0.0, 1.0, 4.0, 9.0, 14.0]


def test_a_retry_waiting_out_its_backoff_holds_no_slot(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: flaky, cmd: "true", retries: 1, retry_backoff_sec: 10}
      - {id: other, cmd: "true"}
    """
    out = run_plan(
        tmp_path, plan, {"flaky": [Step(1, 1), Step(1, 0)], "other": [Step(2)]}, max_parallel=1
    )
    # flaky fails at 1 and waits until 11; other takes the only slot from 1 to 3.
    assert out.runner.started_at("other") == [1.0]
    assert out.runner.started_at("flaky") == [0.0, 11.0]


def test_a_failure_skips_everything_downstream_and_independent_branches_go_on(
    tmp_path: Path,
) -> None:
    plan = """
    tasks:
      - {id: a, cmd: "true"}
      - {id: b, cmd: "true", depends_on: [a]}
      - {id: c, cmd: "true", depends_on: [b]}
      - {id: side, cmd: "true"}
    """
    out = run_plan(tmp_path, plan, {"a": [Step(1, 2)]})
    assert out.status is RunStatus.FAILED
    assert out.statuses() == {"a": "FAILED", "b": "SKIPPED", "c": "SKIPPED", "side": "SUCCESS"}
    assert out.task("c")["skip_reason"] == "dependency_not_success"
    assert out.task("a")["exit_code"] == 2


def test_fail_fast_stops_new_starts_and_running_tasks_finish(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: bad, cmd: "true"}
      - {id: long, cmd: "true"}
      - {id: later, cmd: "true"}
    """
    out = run_plan(
        tmp_path, plan, {"bad": [Step(1, 1)], "long": [Step(5)]}, max_parallel=2, fail_fast=True
    )
    assert out.statuses() == {"bad": "FAILED", "long": "SUCCESS", "later": "SKIPPED"}
    assert out.task("later")["skip_reason"] == "fail_fast"
    assert out.status is RunStatus.FAILED


def test_fail_fast_ends_a_task_waiting_out_its_backoff_visibly(tmp_path: Path) -> None:
    # Bug: such a task became FAILED with no progress line.
    plan = """
    tasks:
      - {id: flaky, cmd: "true", retries: 2, retry_backoff_sec: 10}
      - {id: bad, cmd: "true"}
    """
    out = run_plan(
        tmp_path, plan, {"flaky": [Step(1, 1)], "bad": [Step(2, 1)]}, max_parallel=2, fail_fast=True
    )
    assert out.statuses() == {"flaky": "FAILED", "bad": "FAILED"}
    ends = [e for e in out.progress.events if e[0] == "end" and e[1] == "flaky"]
    assert ends == [("end", "flaky", "FAILED", "exit 1; not retried: fail-fast")]
    assert out.runner.started_at("flaky") == [0.0]


def test_cancel_ends_running_and_never_starts_the_rest(tmp_path: Path) -> None:
    stop = StopRequest()

    def cancel_at_two(runner: FakeRunner) -> None:
        if runner.clock() >= 2.0 and not stop.count:
            stop.request()

    plan = """
    tasks:
      - {id: a, cmd: "true"}
      - {id: b, cmd: "true", depends_on: [a]}
      - {id: long, cmd: "true"}
    """
    out = run_plan(
        tmp_path,
        plan,
        {"a": [Step(1)], "b": [Step(10)], "long": [Step(10)]},
        stop=stop,
        on_wait=cancel_at_two,
    )
    assert out.status is RunStatus.CANCELED
    assert out.statuses() == {"a": "SUCCESS", "b": "CANCELED", "long": "CANCELED"}
    assert out.task("b")["canceled"] is True


def test_cancel_is_never_retried(tmp_path: Path) -> None:
    stop = StopRequest()
    plan = "tasks: [{id: a, cmd: 'true', retries: 5}]"
    out = run_plan(
        tmp_path,
        plan,
        {"a": [Step(10)]},
        stop=stop,
        on_wait=lambda r: r.clock() > 1 and stop.request(),
    )
    assert out.statuses() == {"a": "CANCELED"} and out.task("a")["attempts"] == 1


def test_timeout_is_retried_and_recorded(tmp_path: Path) -> None:
    plan = "tasks: [{id: a, cmd: 'true', timeout_sec: 2, retries: 1}]"
    out = run_plan(tmp_path, plan, {"a": [Step(10), Step(1)]})
    assert out.status is RunStatus.SUCCESS
    first = out.task("a")["history"][0]  # type: ignore[index]
    assert first["timed_out"] is True and first["timed_out_by"] == "timeout_sec"


def test_start_error_fails_the_task_not_the_run(tmp_path: Path) -> None:
    plan = "tasks: [{id: a, cmd: 'nope'}, {id: b, cmd: 'true'}]"
    out = run_plan(tmp_path, plan, {"a": [Step(start_error="cannot start 'nope': No such file")]})
    assert out.statuses() == {"a": "FAILED", "b": "SUCCESS"}
    assert out.task("a")["error"] == "cannot start 'nope': No such file"


def test_resume_selection_keeps_the_rest_as_recorded(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: done, cmd: "true"}
      - {id: again, cmd: "true", depends_on: [done]}
    """
    first = run_plan(tmp_path / "one", plan)
    state = first.state
    out = run_plan(tmp_path / "two", plan, selected={"again"}, state=state)
    assert [t for t, _, _ in out.runner.starts] == ["again"]
    assert out.statuses() == {"done": "SUCCESS", "again": "SUCCESS"}


# ---------------------------------------------------------------------------- pools


def test_pool_caps_its_tasks_and_never_blocks_other_tasks(tmp_path: Path) -> None:
    plan = """
    pools: {llm: 1}
    tasks:
      - {id: m1, cmd: "true", pool: llm}
      - {id: m2, cmd: "true", pool: llm}
      - {id: m3, cmd: "true", pool: llm}
      - {id: free, cmd: "true"}
    """
    out = run_plan(tmp_path, plan, max_parallel=2)
    assert out.runner.started_at("m1") == [0.0]
    assert out.runner.started_at("free") == [0.0]  # not held up behind m2 (head-of-line)
    assert out.runner.started_at("m2") == [1.0]
    assert out.runner.started_at("m3") == [2.0]


def test_pool_slots_are_released_when_an_attempt_ends_and_during_backoff(tmp_path: Path) -> None:
    plan = """
    pools: {api: 2}
    tasks:
      - {id: a, cmd: "true", pool: api, retries: 1, retry_backoff_sec: 5}
      - {id: b, cmd: "true", pool: api}
      - {id: c, cmd: "true", pool: api}
    """
    out = run_plan(tmp_path, plan, {"a": [Step(1, 1), Step(1, 0)], "b": [Step(4)]}, max_parallel=4)
    # a fails at 1: its pool slot goes to c at once, while a waits out its backoff.
    assert out.runner.started_at("c") == [1.0]
    assert out.runner.started_at("a") == [0.0, 6.0]


# ---------------------------------------------------------------------------- policies


def test_retry_on_exit_code_retries_only_that_code(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: a, cmd: "true", retries: 3, retry_on: [75]}
    """
    out = run_plan(tmp_path, plan, {"a": [Step(1, 75), Step(1, 2)]})
    assert out.task("a")["attempts"] == 2
    assert out.task("a")["error"] == "not retried: exit 2 is not in retry_on"
    ends = [e for e in out.progress.events if e[0] == "end"]
    assert ends == [("end", "a", "FAILED", "exit 2; not retried: exit 2 is not in retry_on")]


def test_retry_on_timeout_does_not_retry_an_exit(tmp_path: Path) -> None:
    plan = "tasks: [{id: a, cmd: 'true', retries: 2, timeout_sec: 5, retry_on: [timeout]}]"
    out = run_plan(tmp_path, plan, {"a": [Step(9), Step(1, 1)]})
    assert out.task("a")["attempts"] == 2
    assert out.task("a")["error"] == "not retried: exit 1 is not in retry_on"


def test_retry_on_signal_and_start_error(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: sig, cmd: "true", retries: 1, retry_on: [signal]}
      - {id: nostart, cmd: "true", retries: 1, retry_on: [signal]}
    """
    out = run_plan(
        tmp_path,
        plan,
        {"sig": [Step(1, None, signal=9), Step(1, 0)], "nostart": [Step(start_error="gone")]},
    )
    assert out.statuses() == {"sig": "SUCCESS", "nostart": "FAILED"}
    assert out.task("nostart")["error"] == "gone; not retried: gone is not in retry_on"


def test_require_outputs_turns_an_exit_0_into_a_failure(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: a, cmd: "true", outputs: ["report.json"], require_outputs: true}
      - {id: b, cmd: "true", outputs: ["report.json"]}
    """
    out = run_plan(tmp_path, plan)
    assert out.statuses() == {"a": "FAILED", "b": "SUCCESS"}
    assert out.task("a")["error"] == "required output missing: report.json"


def test_require_outputs_is_retryable_through_missing_outputs(tmp_path: Path) -> None:
    plan = """
    tasks:
      - id: a
        cmd: "true"
        outputs: ["report.json"]
        require_outputs: true
        retries: 1
        retry_on: [missing_outputs]
    """
    out = run_plan(tmp_path, plan)
    assert out.task("a")["attempts"] == 2


# ---------------------------------------------------------------------------- conditions


def test_fix_loop_runs_the_fixer_only_after_a_failure(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: test, cmd: "true", allow_failure: true}
      - {id: fix, cmd: "true", depends_on: [test], run_when: failure}
      - {id: retest, cmd: "true", depends_on: [fix]}
      - {id: report, cmd: "true", depends_on: [retest], run_when: done}
    """
    red = run_plan(tmp_path / "red", plan, {"test": [Step(1, 1)]})
    assert red.statuses() == {
        "test": "FAILED",
        "fix": "SUCCESS",
        "retest": "SUCCESS",
        "report": "SUCCESS",
    }
    assert red.task("test")["allowed_failure"] is True
    assert red.status is RunStatus.SUCCESS
    green = run_plan(tmp_path / "green", plan)
    assert green.statuses() == {
        "test": "SUCCESS",
        "fix": "SKIPPED",
        "retest": "SKIPPED",
        "report": "SUCCESS",
    }
    assert green.task("fix")["skip_reason"] == "condition_not_met"
    assert green.task("retest")["skip_reason"] == "condition_not_met"
    assert green.status is RunStatus.SUCCESS


def test_run_when_done_runs_after_a_failure_but_the_run_still_fails(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: build, cmd: "true"}
      - {id: cleanup, cmd: "true", depends_on: [build], run_when: done}
    """
    out = run_plan(tmp_path, plan, {"build": [Step(1, 1)]})
    assert out.statuses() == {"build": "FAILED", "cleanup": "SUCCESS"}
    assert out.status is RunStatus.FAILED


def test_a_canceled_run_starts_nothing_new_conditions_aside(tmp_path: Path) -> None:
    stop = StopRequest()
    plan = """
    tasks:
      - {id: work, cmd: "true"}
      - {id: always, cmd: "true", depends_on: [work], run_when: done}
    """
    out = run_plan(
        tmp_path,
        plan,
        {"work": [Step(10)]},
        stop=stop,
        on_wait=lambda r: r.clock() > 1 and stop.request(),
    )
    assert out.statuses() == {"work": "CANCELED", "always": "CANCELED"}
    assert [t for t, _, _ in out.runner.starts] == ["work"]


# ---------------------------------------------------------------------------- metrics, budget


def test_metrics_lines_are_summed_over_lines_and_attempts_and_bad_ones_counted(
    tmp_path: Path,
) -> None:
    plan = "tasks: [{id: a, cmd: 'true', retries: 1}]"
    first = '{"cost_usd": 0.5, "input_tokens": 100}\nnot json\n{"cost_usd": 0.25, "x": true}\n'
    second = '{"cost_usd": 1, "output_tokens": 7, "custom": 2}\n'
    out = run_plan(tmp_path, plan, {"a": [Step(1, 1, metrics=first), Step(1, 0, metrics=second)]})
    task = out.task("a")
    assert task["metrics"] == {
        "cost_usd": 1.75,
        "input_tokens": 100,
        "output_tokens": 7,
        "custom": 2,
    }
    assert task["metrics_errors"] == 2  # the line that is not JSON, the bool value
    assert out.state["metrics"] == task["metrics"]
    history = task["history"]  # type: ignore[index]
    assert history[0]["metrics"] == {"cost_usd": 0.75, "input_tokens": 100}
    assert history[1]["metrics"] == {"cost_usd": 1, "output_tokens": 7, "custom": 2}


def test_stdout_json_reads_the_last_json_object_line(tmp_path: Path) -> None:
    plan = """
    tasks:
      - {id: agent, cmd: "true", metrics: stdout-json}
      - {id: plain, cmd: "true"}
    """
    printed = (
        'thinking...\n{"type":"progress"}\n'
        '{"type":"result","total_cost_usd":0.0123,"usage":{"input_tokens":1200,"output_tokens":345}}\n'
    )
    out = run_plan(
        tmp_path, plan, {"agent": [Step(stdout=printed)], "plain": [Step(stdout=printed)]}
    )
    assert out.task("agent")["metrics"] == {
        "cost_usd": 0.0123,
        "input_tokens": 1200,
        "output_tokens": 345,
    }
    assert "metrics" not in out.task("plain")  # stdout is read only with metrics: stdout-json


def test_budget_stops_new_starts_and_skips_the_rest(tmp_path: Path) -> None:
    plan = """
    budget: {max_cost_usd: 5}
    tasks:
      - {id: t1, cmd: "true"}
      - {id: t2, cmd: "true"}
      - {id: t3, cmd: "true"}
      - {id: t4, cmd: "true"}
    """
    spend = [Step(1, 0, metrics='{"cost_usd": 2}\n')]
    out = run_plan(tmp_path, plan, {t: spend for t in ("t1", "t2", "t3", "t4")}, max_parallel=1)
    assert out.statuses() == {"t1": "SUCCESS", "t2": "SUCCESS", "t3": "SUCCESS", "t4": "SKIPPED"}
    assert out.task("t4")["skip_reason"] == "budget_exceeded"
    assert out.status is RunStatus.FAILED
    assert out.state["metrics"]["cost_usd"] == 6
