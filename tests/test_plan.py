"""orch.plan: the plan corpus (invalid plans with their whole expected message, valid plans with
their expected Plan), file errors, and large plans."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, List

import pytest

from orch.errors import PlanError, Problem
from orch.model import Plan, Task
from orch.plan import load_plan, parse_plan

DATA = Path(__file__).resolve().parent / "data" / "plans"
INVALID = DATA / "invalid"
VALID = DATA / "valid"


def names(directory: Path) -> List[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def plan_error(text: str, source: str = "plan.yaml") -> PlanError:
    with pytest.raises(PlanError) as info:
        parse_plan(text, source)
    return info.value


# What Release 0.2 added to the model; a plan that uses none of its keys has exactly these.
V02_TASK_DEFAULTS = {
    "pool": None,
    "idle_timeout_sec": None,
    "retry_on": [],
    "backoff": None,
    "run_when": "success",
    "allow_failure": False,
    "require_outputs": False,
    "workspace": None,
    "worktree_from": None,
    "metrics": None,
    "slurm": None,
}
V02_PLAN_DEFAULTS = {"pools": {}, "max_cost_usd": None, "executor": "local"}


def as_json(plan: Plan) -> Any:
    """The plan as the 0.1 corpus JSON has it, after checking that every 0.2 field is at its
    default (the corpus plans use no 0.2 key)."""
    data = json.loads(json.dumps(dataclasses.asdict(plan)))
    del data["source"]
    for key, default in V02_PLAN_DEFAULTS.items():
        assert data.pop(key) == default, key
    for task in data["tasks"]:
        for key, default in V02_TASK_DEFAULTS.items():
            assert task.pop(key) == default, (task["id"], key)
    return data


# --- the corpus ---------------------------------------------------------------------------------


def test_corpus_files_come_in_pairs() -> None:
    assert len(names(INVALID)) >= 40
    for name in names(INVALID):
        assert (INVALID / f"{name}.txt").is_file(), name
    for name in names(VALID):
        assert (VALID / f"{name}.json").is_file(), name
    assert {p.stem for p in INVALID.glob("*.txt")} == set(names(INVALID))
    assert {p.stem for p in VALID.glob("*.json")} == set(names(VALID))


@pytest.mark.parametrize("name", names(INVALID))
def test_invalid_plan_gives_the_whole_expected_message(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(INVALID)
    with pytest.raises(PlanError) as info:
        load_plan(f"{name}.yaml")
    expected = (INVALID / f"{name}.txt").read_text(encoding="utf-8")
    assert f"{info.value}\n" == expected
    assert info.value.exit_code == 2
    rendered = [p.render() for p in info.value.problems]
    assert rendered == expected.splitlines()
    assert all(line.startswith(f"{name}.yaml:") for line in rendered)


@pytest.mark.parametrize("name", names(VALID))
def test_valid_plan_gives_the_expected_plan(name: str) -> None:
    path = VALID / f"{name}.yaml"
    plan, raw = load_plan(str(path))
    assert raw == path.read_bytes()
    assert plan.source == str(path)
    expected = json.loads((VALID / f"{name}.json").read_text(encoding="utf-8"))
    assert as_json(plan) == expected


def test_plan_object_types() -> None:
    plan, _ = load_plan(str(VALID / "full.yaml"))
    assert isinstance(plan.tasks, tuple)
    build = plan.tasks[1]
    assert build == Task(
        id="build",
        cmd=("python3", "tools/fake_agent.py", "build", "--out", "dist dir/app"),
        depends_on=("inspect",),
        cwd="sub/dir",
        env={"KEY": "VALUE", "MODE": "release", "EMPTY": "", "PORT": "8080"},
        timeout_sec=60.0,
        retries=2,
        retry_backoff_sec=(1.0, 3.0, 10.5),
        outputs=("dist/**", "report.json"),
    )
    assert plan.tasks[2].retry_backoff_sec == (2.0,)
    assert all(type(v) is float for v in plan.tasks[2].retry_backoff_sec)
    assert type(build.timeout_sec) is float
    assert plan.tasks[2].backoff_before(5) == 2.0


def test_multi_problem_plan_reports_everything_sorted_by_position() -> None:
    with pytest.raises(PlanError) as info:
        load_plan(str(INVALID / "multi.yaml"))
    problems = info.value.problems
    assert len(problems) >= 20
    positions = [(p.line or 0, p.col or 0) for p in problems]
    assert positions == sorted(positions)
    assert all(p.line is not None and p.col is not None for p in problems)
    assert {p.task_id for p in problems} == {None, "build", "Build", "c"}


# --- parse_plan ---------------------------------------------------------------------------------


def test_parse_plan_names_the_source_in_messages_and_plan() -> None:
    text = "tasks:\n  - id: a\n    cmd: x\n    retries: -1\n"
    err = plan_error(text, "some/where.yml")
    assert str(err) == (
        "some/where.yml:4:14: task 'a': retries must be an integer >= 0, got integer -1"
    )
    assert err.problems == [
        Problem("some/where.yml", 4, 14, "a", "retries must be an integer >= 0, got integer -1")
    ]
    plan = parse_plan("tasks:\n  - id: a\n    cmd: x\n", "other.yaml")
    assert plan.source == "other.yaml"
    assert plan.tasks == (Task(id="a", cmd=("x",)),)


def test_yaml_error_is_one_problem_at_its_position() -> None:
    err = plan_error('tasks:\n  - id: a\n    cmd: "x\n')
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert (problem.file, problem.task_id) == ("plan.yaml", None)
    assert problem.line is not None and problem.line >= 3
    assert str(err).startswith(f"plan.yaml:{problem.line}:{problem.col}: ")


def test_bom_does_not_shift_columns() -> None:
    with_bom = plan_error("\ufefftasks: 5\n")
    without = plan_error("tasks: 5\n")
    assert (
        str(with_bom)
        == str(without)
        == ("plan.yaml:1:8: tasks must be a non-empty list of tasks, got integer 5")
    )


def test_env_string_values_are_never_echoed() -> None:
    text = INVALID.joinpath("env_invalid.yaml").read_text(encoding="utf-8")
    assert 'SECRET: "hunter2"' in text
    message = str(plan_error(text))
    assert "hunter2" not in message
    assert "a\\x00b" not in message and "a\0b" not in message


def test_unknown_dependency_suggestions_are_bounded_but_all_reported() -> None:
    # 2,000 ids x 100 typos would be 200,000 difflib comparisons: only the first ones get a
    # suggestion, every one is reported, and a case-only difference is always suggested.
    lines = ["tasks:"]
    lines += [f"  - {{id: task{i}, cmd: x}}" for i in range(2000)]
    lines += ["  - id: hub", "    cmd: x", "    depends_on:"]
    lines += [f"      - tsak{i}" for i in range(100)]
    lines += ["      - TASK7"]
    problems = plan_error("\n".join(lines) + "\n").problems
    assert len(problems) == 101
    assert problems[0].message == "depends_on names unknown task 'tsak0' (did you mean 'task0'?)"
    assert problems[99].message == "depends_on names unknown task 'tsak99'"
    assert problems[100].message == "depends_on names unknown task 'TASK7' (did you mean 'task7'?)"


def test_cycle_through_ten_tasks_is_one_path() -> None:
    lines = ["tasks:"]
    for i in range(10):
        lines += [f"  - id: t{i}", "    cmd: x", f"    depends_on: [t{(i + 1) % 10}]"]
    [problem] = plan_error("\n".join(lines) + "\n").problems
    path = " -> ".join(f"t{i}" for i in [*range(10), 0])
    assert problem == Problem("plan.yaml", 4, 18, "t0", f"dependency cycle: {path}")


# --- large plans --------------------------------------------------------------------------------


def chain_text(n: int, close: bool = False) -> str:
    lines = ["tasks:"]
    for i in range(n):
        dep = f"t{i - 1}" if i else (f"t{n - 1}" if close else None)
        lines.append(f"  - id: t{i}")
        lines.append("    cmd: [echo, hi]")
        if dep is not None:
            lines.append(f"    depends_on: [{dep}]")
    return "\n".join(lines) + "\n"


def test_10000_task_chain_validates() -> None:
    plan = parse_plan(chain_text(10_000), "chain.yaml")
    assert len(plan.tasks) == 10_000
    assert plan.tasks[-1].depends_on == ("t9998",)


def test_10000_task_cycle_is_reported_once() -> None:
    [problem] = plan_error(chain_text(10_000, close=True)).problems
    assert problem.task_id == "t0"
    assert problem.message.startswith("dependency cycle: t0 -> t9999 -> t9998 -> ")
    assert problem.message.endswith(" -> t1 -> t0")
    assert problem.message.count(" -> ") == 10_000


def test_10000_dependencies_on_one_task_validate() -> None:
    n = 10_000
    lines = ["tasks:"]
    lines += [f'  - {{id: w{i}, cmd: [echo, "{i}"]}}' for i in range(n)]
    lines += ["  - id: hub", "    cmd: x", "    depends_on:"]
    lines += [f"      - w{i}" for i in range(n)]
    plan = parse_plan("\n".join(lines) + "\n", "hub.yaml")
    assert len(plan.tasks[-1].depends_on) == n


# --- load_plan file errors ----------------------------------------------------------------------


def load_error(path: str) -> str:
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    assert load_error(path) == f"{path}: cannot read plan: no such file"


def test_directory(tmp_path: Path) -> None:
    assert (
        load_error(str(tmp_path)) == f"{tmp_path}: cannot read plan: it is a directory, not a file"
    )


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = str(tmp_path / "file" / "plan.yaml")
    assert load_error(path) == f"{path}: cannot read plan: not a directory"


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 000 does not stop root from reading the file",
)
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("tasks: []\n")
    path.chmod(0)
    try:
        assert load_error(str(path)) == f"{path}: cannot read plan: permission denied"
    finally:
        path.chmod(0o600)


def test_whitespace_only_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.yaml"
    path.write_text("\n  \n\n")
    assert load_error(str(path)) == (
        f"{path}: plan file is empty: expected a mapping with a 'tasks' list"
    )


def test_invalid_utf8_after_multibyte_text_counts_characters(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes("goal: 日本語\r\n# é\rtasks: x".encode() + b"\xc3(\n")
    assert load_error(str(path)) == (f"{path}:3:9: not valid UTF-8: byte 0xc3 at byte offset 30")


def test_plan_bytes_are_returned_verbatim(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbf# keep me\r\ntasks:\r\n  - {id: a, cmd: x}  # trailing\r\n"
    path = tmp_path / "p.yaml"
    path.write_bytes(raw)
    plan, got = load_plan(str(path))
    assert got == raw
    assert plan.tasks[0].id == "a"


def test_endless_file_is_refused_not_read_forever() -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero on this system")
    assert load_error("/dev/zero") == "/dev/zero: cannot read plan: larger than 64 MiB"


def test_tangled_plan_lists_the_first_100_cycles() -> None:
    # Each task depends on the next and on t0: 3,000 cycles whose paths add up to 4.5 million
    # ids. The first 100 found (the longest here) are enough to start fixing.
    n = 3000
    lines = ["tasks:"]
    for i in range(n):
        deps = [f"t{i + 1}"] if i + 1 < n else []
        lines += [f"  - id: t{i}", "    cmd: x", f"    depends_on: [{', '.join([*deps, 't0'])}]"]
    problems = plan_error("\n".join(lines) + "\n").problems
    assert [p.message for p in problems if "cycle" not in p.message] == [
        "a task cannot depend on itself"
    ]
    cycles = {p.message for p in problems if p.message.startswith("dependency cycle: ")}
    assert len(cycles) == 100
    path = " -> ".join(f"t{i}" for i in [*range(n), 0])
    assert f"dependency cycle: {path}" in cycles
    last = " -> ".join(f"t{i}" for i in [*range(n - 99), 0])
    assert f"dependency cycle: {last} (only the first 100 cycles are listed)" in cycles
