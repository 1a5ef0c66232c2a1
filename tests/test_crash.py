"""orch killed by SIGKILL: INTERRUPTED, recovery of leftovers, resume, cancel, the crash loop."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Tuple

import pytest
from conftest import Orch, alive, assert_gone, run_id_of, wait_for

REPO = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux")


def _load_soak() -> Any:
    spec = importlib.util.spec_from_file_location("soak_crash", REPO / "scripts" / "soak_crash.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak = _load_soak()

# `long` leaves a grandchild and runs until the file `quick` exists (then exits at once);
# `done` finishes at once; `after` waits for `long`; `spare` cannot start (one slot).
LONG = (
    "echo long >> runs.txt; test -f quick && exit 0; "
    "sleep 60 & echo $! > child.pid; touch long.up; wait"
)
CRASH_PLAN = f"""
tasks:
  - id: done
    cmd: ["sh", "-c", "echo done >> runs.txt"]
  - id: long
    cmd: ["sh", "-c", {json.dumps(LONG)}]
  - id: after
    cmd: ["sh", "-c", "echo after >> runs.txt"]
    depends_on: [long]
  - id: spare
    cmd: ["sh", "-c", "echo spare >> runs.txt"]
"""


def _runs(orch: Orch) -> List[str]:
    path = orch.workdir / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def _crash(orch: Orch) -> Tuple[str, int, int]:
    """Start CRASH_PLAN, SIGKILL orch once `done` succeeded and `long` runs.

    Returns the run id, the leader pid of `long` and its grandchild's pid.
    """
    plan = orch.plan(CRASH_PLAN)
    runner = orch.popen("run", plan, "--max-parallel", "1")
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    wait_for(lambda: (orch.workdir / "long.up").exists())
    wait_for(lambda: orch.state(run_id)["tasks"]["done"]["status"] == "SUCCESS")
    wait_for(lambda: orch.state(run_id)["tasks"]["long"]["history"] != [])
    runner.kill()
    runner.wait()
    leader = orch.state(run_id)["tasks"]["long"]["history"][-1]["pid"]
    child = int((orch.workdir / "child.pid").read_text())
    assert alive(leader) and alive(child)
    return run_id, leader, child


def test_killed_run_is_interrupted_and_resume_ends_leftovers_first(orch: Orch) -> None:
    run_id, leader, child = _crash(orch)
    raw = json.loads((orch.run_dir(run_id) / "state.json").read_bytes())
    assert raw["status"] == "RUNNING"
    status = orch.run("status", run_id)
    assert status.returncode == 0 and "INTERRUPTED" in status.stdout
    shown = json.loads(orch.run("status", run_id, "--json").stdout)
    assert shown["effective_status"] == "INTERRUPTED" and shown["status"] == "RUNNING"
    listing = orch.run("list")
    assert "INTERRUPTED" in listing.stdout
    (orch.workdir / "quick").touch()

    proc = orch.run("resume", run_id)

    assert proc.returncode == 0, proc.stderr
    assert run_id_of(proc.stdout) == run_id
    assert_gone(leader)
    assert_gone(child)
    tasks = orch.state(run_id)["tasks"]
    assert all(t["status"] == "SUCCESS" for t in tasks.values())
    assert tasks["done"]["attempts"] == 1
    first, second = tasks["long"]["history"]
    assert first["error"] == "interrupted" and first["ended_at"] is not None
    assert second["exit_code"] == 0 and second["attempt"] == 2
    assert sorted(_runs(orch)) == ["after", "done", "long", "long", "spare"]


def test_state_json_says_running_as_soon_as_the_run_runs(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["sh", "-c", "touch up; sleep 60"]\n')
    runner = orch.popen("run", plan)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    wait_for(lambda: (orch.workdir / "up").exists())
    runner.kill()
    runner.wait()
    # Within the first second no compaction has happened: the file itself must say RUNNING.
    raw = json.loads((orch.run_dir(run_id) / "state.json").read_bytes())
    assert raw["status"] == "RUNNING"
    assert orch.run("cancel", run_id).returncode == 0


def test_unreaped_dead_owner_is_not_alive(orch: Orch) -> None:
    # A SIGKILLed orch stays a zombie until its parent reaps it: it owns nothing any more.
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["sh", "-c", "touch up; sleep 60"]\n')
    runner = orch.popen("run", plan)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    wait_for(lambda: (orch.workdir / "up").exists())
    os.kill(runner.pid, signal.SIGKILL)
    wait_for(lambda: not alive(runner.pid))
    try:
        shown = json.loads(orch.run("status", run_id, "--json").stdout)
        assert shown["effective_status"] == "INTERRUPTED"
        cancel = orch.run("cancel", run_id)
        assert cancel.returncode == 0, cancel.stderr
        assert orch.state(run_id)["status"] == "CANCELED"
    finally:
        runner.wait()


def test_resume_leaves_a_process_that_reuses_a_recorded_pid_alone(orch: Orch) -> None:
    run_id, leader, child = _crash(orch)
    # Stand-in for pid reuse: an unrelated process (own group, no ORCH_RUN_ID) now has the
    # number recorded for `long`, but not its identity.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    decoy = subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)
    try:
        run_dir = orch.run_dir(run_id)
        state = orch.state(run_id)
        state["tasks"]["long"]["history"][-1]["pid"] = decoy.pid
        (run_dir / "state.json").write_text(json.dumps(state))
        (run_dir / "journal.jsonl").write_bytes(b"")
        (orch.workdir / "quick").touch()
        proc = orch.run("resume", run_id)
        assert proc.returncode == 0, proc.stderr
        assert decoy.poll() is None, "resume killed a process that only shared a pid"
        # The real leftovers are still found and ended.
        if LINUX:
            assert_gone(leader)
            assert_gone(child)
    finally:
        decoy.kill()
        decoy.wait()
        for pid in (leader, child):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not LINUX, reason="finding unrecorded processes needs /proc")
def test_resume_ends_an_unrecorded_process_of_the_run(orch: Orch) -> None:
    # orch SIGKILLed between spawning a task and recording its pid leaves a process the state
    # does not know. It carries the run's ORCH_RUN_ID and a task's ORCH_TASK_ID (as do its
    # children): resume must end it before running anything.
    run_id, leader, child = _crash(orch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    task_env = {**env, "ORCH_RUN_ID": run_id, "ORCH_TASK_ID": "long"}
    orphan = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True, env=task_env)
    spared = [
        # another run's task
        subprocess.Popen(
            ["sleep", "60"],
            start_new_session=True,
            env={**task_env, "ORCH_RUN_ID": "20200101_000000_000000"},
        ),
        # not a task: say, a shell that exported the run id to resume it
        subprocess.Popen(
            ["sleep", "60"], start_new_session=True, env={**env, "ORCH_RUN_ID": run_id}
        ),
    ]
    try:
        (orch.workdir / "quick").touch()
        proc = orch.run("resume", run_id)
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: orphan.poll() is not None, timeout=5)
        for p in spared:
            assert p.poll() is None, "resume killed a process that is not one of the run's"
        assert soak.live_processes_of_run(run_id) == [spared[1].pid]
        assert_gone(leader)
        assert_gone(child)
    finally:
        for p in [orphan, *spared]:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_cancel_of_an_interrupted_run_ends_leftovers_and_marks_it_canceled(orch: Orch) -> None:
    run_id, leader, child = _crash(orch)
    proc = orch.run("cancel", run_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"cancel requested: {run_id}")
    assert_gone(leader)
    assert_gone(child)
    state = orch.state(run_id)
    assert state["status"] == "CANCELED"
    tasks = state["tasks"]
    assert tasks["done"]["status"] == "SUCCESS"
    for name in ("long", "after", "spare"):
        assert tasks[name]["status"] == "CANCELED", name
        assert tasks[name]["skip_reason"] == "run_canceled", name
    assert tasks["long"]["history"][-1]["ended_at"] is not None
    assert (orch.run_dir(run_id) / "report" / "final_report.md").exists()
    shown = json.loads(orch.run("status", run_id, "--json").stdout)
    assert shown["effective_status"] == "CANCELED"
    again = orch.run("cancel", run_id)
    assert again.returncode == 0 and "already finished" in again.stdout


def test_failed_only_after_a_crash_runs_the_interrupted_and_the_never_started(
    orch: Orch,
) -> None:
    # One slot: `spare` never started, `after` waits for `long`; both are PENDING.
    run_id, leader, child = _crash(orch)
    before = orch.state(run_id)["tasks"]
    assert before["spare"]["status"] == "PENDING" and before["after"]["status"] == "PENDING"
    (orch.workdir / "quick").touch()
    proc = orch.run("resume", run_id, "--failed-only")
    assert proc.returncode == 0, proc.stderr
    assert_gone(leader)
    assert_gone(child)
    tasks = orch.state(run_id)["tasks"]
    assert {t: e["status"] for t, e in tasks.items()} == dict.fromkeys(tasks, "SUCCESS")
    assert tasks["done"]["attempts"] == 1 and tasks["long"]["attempts"] == 2
    assert _runs(orch).count("done") == 1


def test_crash_loop(tmp_path: Path) -> None:
    # Seeded and reproducible by default; ORCH_CRASH_SEED=random draws a new seed (soaking).
    chosen = os.environ.get("ORCH_CRASH_SEED", "20261201")
    seed = random.SystemRandom().randrange(2**32) if chosen == "random" else int(chosen)
    iterations = int(os.environ.get("ORCH_CRASH_ITERATIONS", "50"))
    lines: List[str] = []
    print(f"crash loop seed: {seed} (replay: ORCH_CRASH_SEED={seed})")
    with_run, kills = soak.crash_loop(tmp_path, iterations, seed, say=lines.append)
    print("\n".join(lines))
    # Most iterations must have produced a run to crash, else the loop tests little.
    assert with_run >= iterations * 0.6, (with_run, seed)
    assert kills >= iterations // 2, (kills, seed)


def test_cancel_while_resume_ends_leftovers_is_not_lost(orch: Orch) -> None:
    # The leftover ignores SIGTERM, so resume spends its whole grace period ending it; a
    # cancel asked meanwhile is for this resume and must stop it before anything runs.
    plan = orch.plan(
        """
        tasks:
          - id: stubborn
            cmd: ["sh", "-c", "test -f quick && exit 0; trap '' TERM; touch up; sleep 60"]
        """
    )
    runner = orch.popen("run", plan)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    wait_for(lambda: (orch.workdir / "up").exists())
    wait_for(lambda: orch.state(run_id)["tasks"]["stubborn"]["history"] != [])
    runner.kill()
    runner.wait()
    leader = orch.state(run_id)["tasks"]["stubborn"]["history"][-1]["pid"]
    (orch.workdir / "quick").touch()
    resumer = orch.popen("resume", run_id, env={"ORCH_GRACE_SEC": "3"})
    assert resumer.stdout is not None
    assert run_id_of(resumer.stdout.readline()) == run_id
    cancel = orch.run("cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout == f"cancel requested: {run_id}\n"
    assert alive(leader), "the grace period should still be running"
    assert resumer.wait(timeout=60) == 4
    assert_gone(leader)
    task = orch.state(run_id)["tasks"]["stubborn"]
    assert task["status"] == "CANCELED"
    assert task["attempts"] == 1
    assert task["history"][0]["error"] == "interrupted"
