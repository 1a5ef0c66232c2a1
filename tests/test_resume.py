"""`orch resume`: the plan snapshot, what runs again, counting, workdir, --max-parallel, owner."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from conftest import PYTHON, Orch, orch_env, run_id_of

# Records its own [start, end] and how many spans ran at once; fails unless `go` exists.
SPAN_SCRIPT = """\
import os, sys, time
name = sys.argv[1]
os.makedirs("running", exist_ok=True)
mark = os.path.join("running", name)
open(mark, "w").close()
start = time.time()
time.sleep(0.6)
peers = len(os.listdir("running"))
os.unlink(mark)
with open("spans.txt", "a") as f:
    f.write(f"{name} {start} {time.time()} {peers}\\n")
sys.exit(0 if os.path.exists("go") else 1)
"""


def _orch_in(cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run orch from an arbitrary directory (the fixture always runs in its workdir)."""
    return subprocess.run(
        [PYTHON, "-m", "orch", *args, "--home", str(home)],
        cwd=str(cwd),
        env=orch_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lines(path: Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


def _flaky_plan(orch: Orch) -> str:
    # `bad` fails until the file `fixed` exists; every task logs each run to runs.txt.
    return orch.plan(
        """
        goal: resume me
        tasks:
          - id: ok
            cmd: ["sh", "-c", "echo ok >> runs.txt; echo out-ok"]
          - id: bad
            cmd: ["sh", "-c", "echo bad >> runs.txt; echo attempt-$ORCH_ATTEMPT; test -f fixed"]
          - id: child
            cmd: ["sh", "-c", "echo child >> runs.txt"]
            depends_on: [bad]
        """
    )


def test_resume_uses_the_snapshot_keeps_workdir_and_never_reruns_success(orch: Orch) -> None:
    plan = _flaky_plan(orch)
    first = orch.run("run", plan)
    assert first.returncode == 3, first.stderr
    run_id = run_id_of(first.stdout)
    assert orch.state(run_id)["tasks"]["child"]["status"] == "SKIPPED"
    # The original plan is gone and a different file took its name: resume must not care.
    (orch.workdir / plan).write_text("tasks:\n  - id: other\n    cmd: [false]\n")
    (orch.workdir / plan).unlink()
    (orch.workdir / "fixed").touch()
    elsewhere = orch.workdir / "elsewhere"
    elsewhere.mkdir()

    second = _orch_in(elsewhere, orch.home, "resume", run_id)

    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[0] == f"run_id: {run_id}"
    # The tasks ran in the run's workdir, not in the directory resume was called from.
    lines = _lines(orch.workdir / "runs.txt")
    # ok and bad ran side by side in the first session (either may write first); the resume
    # ran bad and child again, never ok.
    assert sorted(lines[:2]) == ["bad", "ok"] and lines[2:] == ["bad", "child"]
    assert list(elsewhere.iterdir()) == []
    state = orch.state(run_id)
    assert state["status"] == "SUCCESS"
    assert state["workdir"] == str(orch.workdir)
    tasks = state["tasks"]
    assert {t: tasks[t]["status"] for t in tasks} == {
        "ok": "SUCCESS",
        "bad": "SUCCESS",
        "child": "SUCCESS",
    }
    assert [tasks[t]["attempts"] for t in ("ok", "bad", "child")] == [1, 2, 1]
    assert [h["attempt"] for h in tasks["bad"]["history"]] == [1, 2]
    assert [h["exit_code"] for h in tasks["bad"]["history"]] == [1, 0]
    assert (orch.run_dir(run_id) / "report" / "final_report.md").exists()
    assert [p.name for p in (orch.home / "runs").iterdir()] == [run_id]


def test_logs_keep_every_attempt_apart_across_resumes(orch: Orch) -> None:
    plan = _flaky_plan(orch)
    run_id = run_id_of(orch.run("run", plan).stdout)
    assert orch.run("resume", run_id).returncode == 3
    (orch.workdir / "fixed").touch()
    assert orch.run("resume", run_id).returncode == 0
    out = Path(orch.state(run_id)["tasks"]["bad"]["stdout_path"]).read_text()
    # The log holds the task's bytes only; attempts are told apart by the recorded offsets.
    assert out == "attempt-1\nattempt-2\nattempt-3\n"
    for n in (1, 2, 3):
        logs = orch.run("logs", run_id, "--task", "bad", "--attempt", str(n), "--stream", "stdout")
        assert logs.returncode == 0, logs.stderr
        shown = [line for line in logs.stdout.splitlines() if line.startswith("attempt-")]
        assert shown == [f"attempt-{n}"]


def test_failed_only_reruns_failed_and_their_skipped_and_leaves_the_rest(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: ok
            cmd: ["sh", "-c", "echo ok >> runs.txt"]
          - id: bad
            cmd: ["sh", "-c", "echo bad >> runs.txt; test -f fixed"]
          - id: child
            cmd: ["sh", "-c", "echo child >> runs.txt"]
            depends_on: [bad]
          - id: grandchild
            cmd: ["sh", "-c", "echo grandchild >> runs.txt"]
            depends_on: [child]
          - id: later
            cmd: ["sh", "-c", "echo later >> runs.txt"]
        """
    )
    first = orch.run("run", plan, "--max-parallel", "1", "--fail-fast")
    assert first.returncode == 3, first.stderr
    run_id = run_id_of(first.stdout)
    before = orch.state(run_id)["tasks"]
    assert before["later"]["status"] == "SKIPPED"
    assert before["later"]["skip_reason"] == "fail_fast"
    assert before["grandchild"]["skip_reason"] == "dependency_not_success"
    (orch.workdir / "fixed").touch()

    second = orch.run("resume", run_id, "--failed-only")

    # `later` was skipped by fail-fast, not because of a failed task: it stays SKIPPED, so
    # the run is still not a success.
    assert second.returncode == 3, second.stderr
    assert run_id_of(second.stdout) == run_id
    assert _lines(orch.workdir / "runs.txt") == ["ok", "bad", "bad", "child", "grandchild"]
    tasks = orch.state(run_id)["tasks"]
    assert tasks["later"] == before["later"]
    assert tasks["ok"] == before["ok"]
    for name in ("bad", "child", "grandchild"):
        assert tasks[name]["status"] == "SUCCESS", name
        assert tasks[name]["skip_reason"] is None
    # Without --failed-only the rest runs too, and SUCCESS tasks still do not.
    third = orch.run("resume", run_id)
    assert third.returncode == 0, third.stderr
    assert _lines(orch.workdir / "runs.txt")[-1:] == ["later"]
    assert len(_lines(orch.workdir / "runs.txt")) == 6


def test_resuming_a_successful_run_runs_nothing_and_changes_nothing(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: a
            cmd: ["sh", "-c", "echo a >> runs.txt"]
          - id: b
            cmd: ["sh", "-c", "echo b >> runs.txt"]
            depends_on: [a]
        """
    )
    first = orch.run("run", plan)
    assert first.returncode == 0, first.stderr
    run_id = run_id_of(first.stdout)
    before = orch.state(run_id)
    for args in (["resume", run_id], ["resume", run_id, "--failed-only"]):
        again = orch.run(*args)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[0] == f"run_id: {run_id}"
    after = orch.state(run_id)
    assert _lines(orch.workdir / "runs.txt") == ["a", "b"]
    assert after["status"] == "SUCCESS"
    assert after["started_at"] == before["started_at"]
    for task_id in ("a", "b"):
        assert after["tasks"][task_id]["attempts"] == 1
        assert after["tasks"][task_id]["started_at"] == before["tasks"][task_id]["started_at"]
        assert after["tasks"][task_id]["history"] == before["tasks"][task_id]["history"]


def test_each_resume_gets_the_full_retry_budget_and_attempts_keep_counting(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: never
            cmd: ["sh", "-c", "echo $ORCH_ATTEMPT >> attempts.txt; exit 5"]
            retries: 2
        """
    )
    first = orch.run("run", plan)
    assert first.returncode == 3
    run_id = run_id_of(first.stdout)
    second = orch.run("resume", run_id)
    assert second.returncode == 3, second.stderr
    assert _lines(orch.workdir / "attempts.txt") == ["1", "2", "3", "4", "5", "6"]
    task = orch.state(run_id)["tasks"]["never"]
    assert task["attempts"] == 6
    assert [h["attempt"] for h in task["history"]] == [1, 2, 3, 4, 5, 6]
    assert task["status"] == "FAILED" and task["exit_code"] == 5


def _spans(workdir: Path) -> List[Tuple[float, float, int]]:
    spans = []
    for line in _lines(workdir / "spans.txt"):
        _, start, end, peers = line.split()
        spans.append((float(start), float(end), int(peers)))
    (workdir / "spans.txt").unlink()
    return spans


def _overlap(spans: List[Tuple[float, float, int]]) -> int:
    events = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def test_resume_keeps_max_parallel_unless_given(orch: Orch) -> None:
    (orch.workdir / "span.py").write_text(SPAN_SCRIPT)
    tasks = "\n".join(f"  - id: t{i}\n    cmd: [{PYTHON!r}, span.py, t{i}]" for i in range(3))
    plan = orch.plan(f"tasks:\n{tasks}\n")
    first = orch.run("run", plan, "--max-parallel", "1")
    assert first.returncode == 3, first.stderr
    run_id = run_id_of(first.stdout)
    assert _overlap(_spans(orch.workdir)) == 1

    second = orch.run("resume", run_id)
    assert second.returncode == 3, second.stderr
    spans = _spans(orch.workdir)
    assert len(spans) == 3 and _overlap(spans) == 1
    assert max(peers for _, _, peers in spans) == 1
    assert orch.state(run_id)["max_parallel"] == 1

    (orch.workdir / "go").touch()
    third = orch.run("resume", run_id, "--max-parallel", "3")
    assert third.returncode == 0, third.stderr
    spans = _spans(orch.workdir)
    assert len(spans) == 3 and _overlap(spans) == 3
    assert orch.state(run_id)["max_parallel"] == 3


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_second_owner_is_refused_and_readers_work_during_a_run(orch: Orch) -> None:
    plan = orch.plan(
        """
        goal: busy
        tasks:
          - id: slow
            cmd: ["sh", "-c", "echo started; touch up; until [ -f go ]; do sleep 0.05; done"]
        """
    )
    runner = orch.popen("run", plan)
    try:
        assert runner.stdout is not None
        run_id = run_id_of(runner.stdout.readline())
        _wait_for(lambda: (orch.workdir / "up").exists())
        began = time.monotonic()
        second = orch.run("resume", run_id, timeout=30)
        assert time.monotonic() - began < 10  # fails at once: no waiting for the lock
        assert second.returncode == 2
        assert f"pid {runner.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert second.stdout == ""
        # Readers never take the lock.
        status = orch.run("status", run_id, "--json")
        assert status.returncode == 0, status.stderr
        shown: Dict[str, Any] = json.loads(status.stdout)
        assert shown["effective_status"] == "RUNNING"
        assert shown["tasks"]["slow"]["status"] == "RUNNING"
        logs = orch.run("logs", run_id, "--task", "slow", "--stream", "stdout")
        assert logs.returncode == 0 and "started" in logs.stdout
        listing = orch.run("list")
        assert listing.returncode == 0 and run_id in listing.stdout
        assert runner.poll() is None
    finally:
        (orch.workdir / "go").touch()
        assert runner.wait(timeout=60) == 0


def test_resume_refuses_bad_arguments_without_touching_the_run(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["false"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    state_bytes = (orch.run_dir(run_id) / "state.json").read_bytes()
    for args in (
        ["resume", run_id, "--max-parallel", "0"],
        ["resume", run_id, "--max-parallel", "x"],
        ["resume", "../" + run_id],
    ):
        proc = orch.run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert (orch.run_dir(run_id) / "state.json").read_bytes() == state_bytes


def test_resume_refuses_a_snapshot_that_does_not_match_the_state(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["false"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    run_dir = orch.run_dir(run_id)
    (run_dir / "plan.yaml").write_text('tasks:\n  - id: zzz\n    cmd: ["true"]\n')
    state_bytes = (run_dir / "state.json").read_bytes()
    proc = orch.run("resume", run_id)
    assert proc.returncode == 2, proc.stderr
    assert "plan.yaml" in proc.stderr and "Traceback" not in proc.stderr
    assert (run_dir / "state.json").read_bytes() == state_bytes
