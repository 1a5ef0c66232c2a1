"""resume --rerun / --downstream / --plan, `last`-free: every re-run is asked for, and a
counter file per task proves that nothing else ran again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from conftest import Orch, run_id_of

PLAN = """
tasks:
  - {id: a, cmd: ["sh", "-c", "echo a >> runs.txt"]}
  - {id: b, cmd: ["sh", "-c", "echo b >> runs.txt"], depends_on: [a]}
  - {id: c, cmd: ["sh", "-c", "echo c >> runs.txt"], depends_on: [b]}
  - {id: side, cmd: ["sh", "-c", "echo side >> runs.txt"]}
"""


def _runs(orch: Orch) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for line in (orch.workdir / "runs.txt").read_text().split():
        counts[line] = counts.get(line, 0) + 1
    return counts


def _green(orch: Orch, text: str = PLAN) -> str:
    proc = orch.run("run", orch.plan(text))
    assert proc.returncode == 0, proc.stderr
    return run_id_of(proc.stdout)


def test_rerun_runs_only_the_named_task_of_a_successful_run(orch: Orch) -> None:
    run_id = _green(orch)
    proc = orch.run("resume", run_id, "--rerun", "b")
    assert proc.returncode == 0, proc.stderr
    assert _runs(orch) == {"a": 1, "b": 2, "c": 1, "side": 1}
    b = orch.state(run_id)["tasks"]["b"]
    assert b["attempts"] == 2 and [h["attempt"] for h in b["history"]] == [1, 2]
    out = Path(b["stdout_path"]).read_bytes()
    assert out == b""  # the task writes to runs.txt; both attempts' (empty) output kept


def test_rerun_with_downstream_adds_everything_below(orch: Orch) -> None:
    run_id = _green(orch)
    proc = orch.run("resume", run_id, "--rerun", "a", "--downstream")
    assert proc.returncode == 0, proc.stderr
    assert _runs(orch) == {"a": 2, "b": 2, "c": 2, "side": 1}


def test_rerun_of_an_unknown_task_is_exit_2_with_a_suggestion(orch: Orch) -> None:
    run_id = _green(orch)
    proc = orch.run("resume", run_id, "--rerun", "sid")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "--rerun: unknown task 'sid' (did you mean 'side'?)"
    assert _runs(orch) == {"a": 1, "b": 1, "c": 1, "side": 1}


def test_downstream_without_rerun_is_an_argument_error(orch: Orch) -> None:
    run_id = _green(orch)
    proc = orch.run("resume", run_id, "--downstream")
    assert proc.returncode == 2 and "--downstream needs --rerun" in proc.stderr


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(orch: Orch) -> None:
    run_id = _green(orch)
    before = (orch.run_dir(run_id) / "state.json").read_bytes()
    proc = orch.run("resume", run_id)
    assert proc.returncode == 0
    assert proc.stdout == f"run_id: {run_id}\n"
    assert proc.stderr == (
        f"orch: run {run_id} already finished (SUCCESS): nothing to do "
        "(--rerun TASK runs a task again)\n"
    )
    assert (orch.run_dir(run_id) / "state.json").read_bytes() == before


def test_resume_with_an_edited_plan_reruns_changed_tasks_and_their_downstream(
    orch: Orch,
) -> None:
    run_id = _green(orch)
    edited = PLAN.replace("echo b >>", "echo b  >>") + (
        '  - {id: extra, cmd: ["sh", "-c", "echo extra >> runs.txt"], depends_on: [side]}\n'
    )
    orch.plan(edited, "edited.yaml")
    proc = orch.run("resume", run_id, "--plan", "edited.yaml")
    assert proc.returncode == 0, proc.stderr
    # b changed: b and c run again; extra is new; a and side are left alone.
    assert _runs(orch) == {"a": 1, "b": 2, "c": 2, "side": 1, "extra": 1}
    run_dir = orch.run_dir(run_id)
    assert (run_dir / "plan.yaml").read_text() == (orch.workdir / "edited.yaml").read_text()
    assert (run_dir / "plan.1.yaml").read_text() == (orch.workdir / "plan.yaml").read_text()
    state = orch.state(run_id)
    assert state["plan_version"] == 2
    assert list(state["tasks"]) == ["a", "b", "c", "side", "extra"]
    assert state["tasks"]["b"]["cmd"] == ["sh", "-c", "echo b  >> runs.txt"]
    assert [h.get("plan_version") for h in state["tasks"]["b"]["history"]] == [None, 2]
    # And once more: resume reads the new snapshot.
    again = orch.run("resume", run_id, "--rerun", "extra")
    assert again.returncode == 0, again.stderr
    assert _runs(orch)["extra"] == 2


def test_an_edited_plan_that_removes_a_task_is_refused_and_changes_nothing(orch: Orch) -> None:
    run_id = _green(orch)
    before = {p.name: p.read_bytes() for p in orch.run_dir(run_id).iterdir() if p.is_file()}
    orch.plan(
        PLAN.replace('  - {id: side, cmd: ["sh", "-c", "echo side >> runs.txt"]}\n', ""), "cut.yaml"
    )
    proc = orch.run("resume", run_id, "--plan", "cut.yaml")
    assert proc.returncode == 2
    assert "removes task(s) 'side'" in proc.stderr
    after = {p.name: p.read_bytes() for p in orch.run_dir(run_id).iterdir() if p.is_file()}
    assert after == before


def test_an_invalid_edited_plan_is_exit_2_before_anything_changes(orch: Orch) -> None:
    run_id = _green(orch)
    orch.plan("tasks:\n  - {id: a, cmd: []}\n", "bad.yaml")
    proc = orch.run("resume", run_id, "--plan", "bad.yaml")
    assert proc.returncode == 2 and "bad.yaml:2" in proc.stderr
    assert proc.stdout == ""


def test_sessions_keep_the_first_start_and_each_span(orch: Orch) -> None:
    run_id = _green(orch)
    first = orch.state(run_id)
    assert len(first["sessions"]) == 1 and first["sessions"][0]["ended_at"]
    assert orch.run("resume", run_id, "--rerun", "side").returncode == 0
    state = orch.state(run_id)
    assert state["created_at"] == first["created_at"]
    assert len(state["sessions"]) == 2
    assert state["sessions"][0] == first["sessions"][0]
    assert all(s["started_at"] and s["ended_at"] for s in state["sessions"])
    json.dumps(state)
