"""`last` as a RUN_ID: the newest run of the home, in every command; never a path."""

from __future__ import annotations

import argparse
import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import List, Tuple

import pytest
from conftest import Orch, run_id_of

from orch import cli, store
from orch.errors import UsageError

COMMANDS = [
    ["status", "last"],
    ["status", "last", "--json"],
    ["logs", "last"],
    ["logs", "last", "--task", "a"],
    ["logs", "last", "--follow"],
    ["resume", "last"],
    ["cancel", "last"],
    ["graph", "last"],
    ["clean", "last", "--dry-run"],
]


def _has_command(name: str) -> bool:
    parser = cli.build_parser()
    return any(
        isinstance(a, argparse._SubParsersAction) and name in a.choices for a in parser._actions
    )


def _ok_plan(orch: Orch, marker: str) -> str:
    return orch.plan(
        f'tasks:\n  - id: a\n    cmd: ["sh", "-c", "echo {marker}"]\n', name=f"{marker}.yaml"
    )


def _two_runs(orch: Orch) -> Tuple[str, str]:
    first = run_id_of(orch.run("run", _ok_plan(orch, "first")).stdout)
    second = run_id_of(orch.run("run", _ok_plan(orch, "second")).stdout)
    return first, second


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a))
def test_last_with_no_runs_is_a_clear_exit_2(orch: Orch, argv: List[str]) -> None:
    if not _has_command(argv[0]):
        pytest.skip(f"no {argv[0]} command")
    proc = orch.run(*argv)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == (
        f"no runs in {orch.home}: 'last' names the newest run, and there is none yet\n"
    )
    assert not (orch.home / "runs").exists() or not any((orch.home / "runs").iterdir())


def test_status_logs_graph_use_the_newest_run(orch: Orch) -> None:
    first, second = _two_runs(orch)
    assert first != second
    shown = json.loads(orch.run("status", "last", "--json").stdout)
    assert shown["run_id"] == second
    assert second in orch.run("status", "last").stdout
    logs = orch.run("logs", "last", "--task", "a", "--stream", "stdout")
    assert logs.returncode == 0 and logs.stdout == "second\n"
    graph = orch.run("graph", "last")
    assert graph.returncode == 0 and "SUCCESS" in graph.stdout
    follow = orch.run("logs", "last", "--follow")
    assert follow.returncode == 0 and follow.stdout.startswith("a | second\n")


def test_resume_and_cancel_print_the_real_run_id(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["sh", "-c", "test -f fixed"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    (orch.workdir / "fixed").touch()
    resumed = orch.run("resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == f"run_id: {run_id}"
    canceled = orch.run("cancel", "last")
    assert canceled.returncode == 0
    assert canceled.stdout == f"run {run_id} already finished (SUCCESS); nothing to cancel\n"


def test_last_is_never_a_path(orch: Orch) -> None:
    run_id = run_id_of(orch.run("run", _ok_plan(orch, "only")).stdout)
    # A plan file named "last" in the current directory does not make `graph last` a plan.
    (orch.workdir / "last").write_text('tasks:\n  - id: other\n    cmd: ["true"]\n')
    graph = orch.run("graph", "last")
    assert graph.returncode == 0
    assert "other" not in graph.stdout and "a" in graph.stdout
    # Nor does a directory named "last" under runs/ count as a run.
    (orch.home / "runs" / "last").mkdir()
    assert json.loads(orch.run("status", "last", "--json").stdout)["run_id"] == run_id
    assert orch.run("status", "LAST").returncode == 2  # only the exact word


def test_resolve_run_id_picks_the_greatest_id_with_a_state(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("20260101_000000_aaaaaa", "20260102_000000_000000", "20260103_000000_ffffff"):
        (runs / name).mkdir(parents=True)
    (runs / "20260101_000000_aaaaaa" / "state.json").write_text("{}")
    (runs / "20260102_000000_000000" / "state.json").write_text("{}")
    # The newest directory has no state yet (a run being created): it is not a run.
    assert store.resolve_run_id(str(tmp_path), "last") == "20260102_000000_000000"
    assert store.resolve_run_id(str(tmp_path), "20260101_000000_aaaaaa") == (
        "20260101_000000_aaaaaa"
    )
    assert store.run_dir_for(str(tmp_path), "last") == str(runs / "20260102_000000_000000")
    with pytest.raises(UsageError, match="no runs in"):
        store.resolve_run_id(str(tmp_path / "empty"), "last")


def test_runs_created_in_the_same_second_are_ordered_by_created_at(orch: Orch) -> None:
    # Ids made within one second differ only by their random part: created_at decides.
    first, second = _two_runs(orch)
    runs = orch.home / "runs"
    early, late = "20260101_120000_ffffff", "20260101_120000_000000"
    os.rename(runs / first, runs / early)
    os.rename(runs / second, runs / late)
    assert store.resolve_run_id(str(orch.home), "last") == late


def test_last_in_process_resolves_before_the_command_runs(orch: Orch) -> None:
    _, second = _two_runs(orch)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["status", "--home", str(orch.home), "--json", "last"])
    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue())["run_id"] == second
