"""`orch cancel` and the signals that take the same path: timing, statuses, no survivors."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from conftest import PYTHON, Orch, alive, assert_gone, orch_env, run_id_of, wait_for

GRACE = 1.0  # ORCH_GRACE_SEC as set by conftest's orch_env
# Generous: the 2 cores are shared; the contract says 1 s plus the grace period.
SLACK = 2.5

# `stubborn` ignores SIGTERM (and so does the grandchild it leaves); `polite` does not. Both
# write their grandchild's pid. `queued` cannot start (one slot each for the two), `after`
# waits for `polite`.
STOP_PLAN = """
tasks:
  - id: stubborn
    cmd: ["sh", "-c", "trap '' TERM; sleep 60 & echo $! > stubborn.pid; touch stubborn.up; wait"]
  - id: polite
    cmd: ["sh", "-c", "sleep 60 & echo $! > polite.pid; touch polite.up; wait"]
  - id: after
    cmd: ["sh", "-c", "touch after.ran"]
    depends_on: [polite]
  - id: queued
    cmd: ["sh", "-c", "touch queued.ran"]
"""


def _pids(workdir: Path, *names: str) -> List[int]:
    return [int((workdir / f"{name}.pid").read_text()) for name in names]


def _start_stop_plan(orch: Orch, env: Optional[Dict[str, str]] = None) -> Any:
    plan = orch.plan(STOP_PLAN)
    runner = orch.popen("run", plan, "--max-parallel", "2", env=env)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    wait_for(lambda: all((orch.workdir / f"{n}.up").exists() for n in ("stubborn", "polite")))
    return runner, run_id


def _assert_stopped(orch: Orch, run_id: str, pids: List[int]) -> None:
    state = orch.state(run_id)
    assert state["status"] == "CANCELED"
    tasks = state["tasks"]
    for name in ("stubborn", "polite", "after", "queued"):
        assert tasks[name]["status"] == "CANCELED", name
        assert tasks[name]["skip_reason"] == "run_canceled", name
        assert tasks[name]["canceled"] is True, name
    assert tasks["stubborn"]["attempts"] == tasks["polite"]["attempts"] == 1
    assert tasks["after"]["attempts"] == tasks["queued"]["attempts"] == 0
    assert not (orch.workdir / "after.ran").exists()
    assert not (orch.workdir / "queued.ran").exists()
    for pid in pids + [h["pid"] for t in tasks.values() for h in t["history"]]:
        assert_gone(pid)
    assert (orch.run_dir(run_id) / "report" / "final_report.md").exists()


def test_cancel_from_another_directory_stops_the_run_within_the_grace(orch: Orch) -> None:
    runner, run_id = _start_stop_plan(orch)
    pids = _pids(orch.workdir, "stubborn", "polite")
    elsewhere = orch.workdir / "elsewhere"
    elsewhere.mkdir()
    launched = time.monotonic()
    cancel = subprocess.run(
        [PYTHON, "-m", "orch", "cancel", run_id, "--home", str(orch.home)],
        cwd=str(elsewhere),
        env=orch_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    asked = time.monotonic()
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout == f"cancel requested: {run_id}\n"
    code = runner.wait(timeout=60)
    ended = time.monotonic()
    assert code == 4, runner.stderr.read() if runner.stderr else ""
    # `stubborn` ignores SIGTERM: orch waits out the grace period, then SIGKILLs it.
    assert ended - launched >= GRACE
    assert ended - asked < 1.0 + GRACE + SLACK, ended - asked
    _assert_stopped(orch, run_id, pids)
    tasks = orch.state(run_id)["tasks"]
    assert tasks["stubborn"]["signal"] == signal.SIGKILL
    assert tasks["polite"]["signal"] == signal.SIGTERM
    again = orch.run("cancel", run_id)
    assert again.returncode == 0
    assert "already finished" in again.stdout and "CANCELED" in again.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_signals_to_orch_run_take_the_cancel_path(orch: Orch, signum: int) -> None:
    runner, run_id = _start_stop_plan(orch)
    pids = _pids(orch.workdir, "stubborn", "polite")
    sent = time.monotonic()
    runner.send_signal(signum)
    assert runner.wait(timeout=60) == 4
    assert time.monotonic() - sent < 1.0 + GRACE + SLACK
    _assert_stopped(orch, run_id, pids)


def test_second_sigint_kills_every_group_at_once(orch: Orch) -> None:
    runner, run_id = _start_stop_plan(orch, env={"ORCH_GRACE_SEC": "60"})
    pids = _pids(orch.workdir, "stubborn", "polite")
    runner.send_signal(signal.SIGINT)
    time.sleep(1.0)
    # The grace period is running: `stubborn` ignored SIGTERM and is still there.
    assert runner.poll() is None
    assert alive(pids[0])
    sent = time.monotonic()
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=60) == 4
    assert time.monotonic() - sent < 1.0 + SLACK
    _assert_stopped(orch, run_id, pids)


def test_signal_right_after_run_id_is_still_a_clean_cancel(orch: Orch) -> None:
    # The run_id line is the first thing a caller sees: a signal sent the moment it appears
    # must already take the cancel path (not kill orch or end in KeyboardInterrupt).
    plan = orch.plan(
        """
        tasks:
          - id: a
            cmd: ["sh", "-c", "sleep 60"]
          - id: b
            cmd: ["sh", "-c", "sleep 60"]
            depends_on: [a]
        """
    )
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        runner = orch.popen("run", plan)
        assert runner.stdout is not None
        run_id = run_id_of(runner.stdout.readline())
        runner.send_signal(signum)
        assert runner.wait(timeout=60) == 4, signum
        state = orch.state(run_id)
        assert state["status"] == "CANCELED"
        assert {t["status"] for t in state["tasks"].values()} == {"CANCELED"}
        assert state["tasks"]["b"]["attempts"] == 0


def test_signal_to_orch_resume_takes_the_cancel_path(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: wait
            cmd: ["sh", "-c", "test -f go || exit 1; sleep 60 & echo $! > child.pid; wait"]
        """
    )
    run_id = run_id_of(orch.run("run", plan).stdout)
    (orch.workdir / "go").touch()
    resumer = orch.popen("resume", run_id)
    assert resumer.stdout is not None
    assert run_id_of(resumer.stdout.readline()) == run_id
    wait_for(lambda: (orch.workdir / "child.pid").exists())
    (pid,) = _pids(orch.workdir, "child")
    resumer.send_signal(signal.SIGTERM)
    assert resumer.wait(timeout=60) == 4
    assert_gone(pid)
    task = orch.state(run_id)["tasks"]["wait"]
    assert task["status"] == "CANCELED" and task["attempts"] == 2


def test_cancel_during_a_retry_backoff_ends_at_once(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: flaky
            cmd: ["sh", "-c", "exit 1"]
            retries: 3
            retry_backoff_sec: 120
        """
    )
    runner = orch.popen("run", plan)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())

    def backing_off() -> bool:
        task = orch.state(run_id)["tasks"]["flaky"]
        return bool(task["attempts"] == 1 and task["history"][0]["ended_at"])

    wait_for(backing_off)
    cancel = orch.run("cancel", run_id)
    asked = time.monotonic()
    assert cancel.returncode == 0 and cancel.stdout == f"cancel requested: {run_id}\n"
    assert runner.wait(timeout=60) == 4
    assert time.monotonic() - asked < 1.0 + SLACK
    task = orch.state(run_id)["tasks"]["flaky"]
    assert task["status"] == "CANCELED"
    assert task["skip_reason"] == "run_canceled"
    assert task["attempts"] == 1


def test_cancel_of_a_finished_run_says_so(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    state_bytes = (orch.run_dir(run_id) / "state.json").read_bytes()
    proc = orch.run("cancel", run_id)
    assert proc.returncode == 0, proc.stderr
    assert "already finished" in proc.stdout and "SUCCESS" in proc.stdout
    assert (orch.run_dir(run_id) / "state.json").read_bytes() == state_bytes
    assert not (orch.run_dir(run_id) / "cancel").exists()


def test_cancel_of_an_unknown_run_exits_2(orch: Orch) -> None:
    (orch.home / "runs").mkdir(parents=True)
    proc = orch.run("cancel", "20200101_000000_abcdef")
    assert proc.returncode == 2
    assert "unknown run" in proc.stderr and "Traceback" not in proc.stderr


def test_a_leftover_cancel_request_does_not_cancel_a_resume(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["sh", "-c", "sleep 0.5; test -f go"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    # What an `orch cancel` that arrived as the run was ending leaves behind.
    (orch.run_dir(run_id) / "cancel").touch()
    (orch.workdir / "go").touch()
    proc = orch.run("resume", run_id)
    assert proc.returncode == 0, proc.stderr
    assert orch.state(run_id)["tasks"]["a"]["status"] == "SUCCESS"


def test_canceling_a_resumed_run_exits_4_and_keeps_success(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: done
            cmd: ["sh", "-c", "echo done >> runs.txt"]
          - id: slow
            cmd: ["sh", "-c", "test -f go || exit 1; touch slow.up; sleep 60"]
        """
    )
    run_id = run_id_of(orch.run("run", plan).stdout)
    (orch.workdir / "go").touch()
    resumer = orch.popen("resume", run_id)
    wait_for(lambda: (orch.workdir / "slow.up").exists())
    assert orch.run("cancel", run_id).stdout == f"cancel requested: {run_id}\n"
    assert resumer.wait(timeout=60) == 4
    tasks = orch.state(run_id)["tasks"]
    assert tasks["done"]["status"] == "SUCCESS" and tasks["done"]["attempts"] == 1
    assert tasks["slow"]["status"] == "CANCELED" and tasks["slow"]["attempts"] == 2
    assert (orch.workdir / "runs.txt").read_text() == "done\n"
