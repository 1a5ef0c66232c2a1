"""`orch validate`, `orch graph` and `orch run [--dry-run]` on the plan corpus, as real
subprocesses: invalid plans exit 2 with the corpus message and never create a run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest
from conftest import PYTHON, Orch, orch_env

from orch.graph import to_dot, to_mermaid
from orch.plan import load_plan

DATA = Path(__file__).resolve().parent / "data" / "plans"
INVALID = DATA / "invalid"
VALID = DATA / "valid"
# One of each kind: YAML syntax, file-level, schema, graph, many problems at once.
REPRESENTATIVE = ["yaml_syntax", "empty", "not_utf8", "env_invalid", "cycle_several", "multi"]


def invalid_names() -> List[str]:
    return sorted(p.stem for p in INVALID.glob("*.yaml"))


def copy_plan(orch: Orch, directory: Path, name: str) -> str:
    shutil.copyfile(directory / f"{name}.yaml", orch.workdir / f"{name}.yaml")
    return f"{name}.yaml"


def assert_no_run_created(orch: Orch) -> None:
    assert not (orch.home / "runs").exists()
    assert not (orch.workdir / ".orch").exists()


@pytest.mark.parametrize("name", invalid_names())
def test_validate_invalid_plan(orch: Orch, name: str) -> None:
    proc = orch.run("validate", copy_plan(orch, INVALID, name))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == (INVALID / f"{name}.txt").read_text(encoding="utf-8")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", REPRESENTATIVE)
@pytest.mark.parametrize(
    "command",
    [["run"], ["run", "--dry-run"], ["graph"], ["graph", "--format", "dot"]],
    ids=["run", "dry-run", "graph", "graph-dot"],
)
def test_invalid_plan_is_refused_before_anything_runs(
    orch: Orch, name: str, command: List[str]
) -> None:
    proc = orch.run(*command, copy_plan(orch, INVALID, name))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == (INVALID / f"{name}.txt").read_text(encoding="utf-8")
    assert "Traceback" not in proc.stderr
    assert_no_run_created(orch)


def test_run_without_home_creates_no_default_home(orch: Orch) -> None:
    plan = copy_plan(orch, INVALID, "multi")
    proc = subprocess.run(
        [PYTHON, "-m", "orch", "run", plan],
        cwd=str(orch.workdir),
        env=orch_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("multi.yaml:1:7: goal must be a string")
    assert_no_run_created(orch)


def test_messages_carry_line_and_column(orch: Orch) -> None:
    proc = orch.run("validate", copy_plan(orch, INVALID, "task_unknown_keys"))
    assert proc.returncode == 2
    assert "task_unknown_keys.yaml:4:5: task 'build': unknown key 'depend_on' (did you mean " in (
        proc.stderr
    )


def test_validate_missing_file_and_directory(orch: Orch) -> None:
    proc = orch.run("validate", "nope.yaml")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "nope.yaml: cannot read plan: no such file\n"
    proc = orch.run("validate", ".")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ".: cannot read plan: it is a directory, not a file\n"


def test_validate_valid_plan(orch: Orch) -> None:
    # The first line is `plan OK: N tasks` exactly; then each task's settings that differ
    # from a 0.1 task's defaults (env by key name only), nothing for a task with none.
    proc = orch.run("validate", copy_plan(orch, VALID, "full"))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        "plan OK: 3 tasks\n"
        "  build: cwd=sub/dir env=[KEY, MODE, EMPTY, PORT] timeout_sec=60 retries=2"
        " retry_backoff_sec=[1, 3, 10.5] outputs=[dist/**, report.json]\n"
        "  package: cwd=/tmp env=[A, B, C] timeout_sec=0.5 retry_backoff_sec=2\n"
    )
    minimal = orch.run("validate", copy_plan(orch, VALID, "minimal"))
    assert (minimal.returncode, minimal.stdout, minimal.stderr) == (0, "plan OK: 1 tasks\n", "")


def test_dry_run_prints_waves_and_creates_nothing(orch: Orch) -> None:
    plan = orch.plan(
        """\
        tasks:
          - {id: test, cmd: "true", depends_on: [build]}
          - {id: lint, cmd: "true"}
          - {id: build, cmd: "true"}
          - {id: ship, cmd: "true", depends_on: [test, lint]}
        """
    )
    proc = orch.run("run", "--dry-run", plan)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "wave 1: lint build\n"
        "wave 2: test\n"
        "wave 3: ship\n"
        "plan OK: 4 tasks, dry run: nothing executed\n"
    )
    assert_no_run_created(orch)


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_graph_of_a_plan_file(orch: Orch, fmt: str) -> None:
    plan_file = copy_plan(orch, VALID, "full")
    proc = orch.run("graph", plan_file, "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    plan, _ = load_plan(str(VALID / "full.yaml"))
    assert proc.stdout == (to_mermaid(plan) if fmt == "mermaid" else to_dot(plan))
    assert "inspect" in proc.stdout and "package" in proc.stdout
    assert_no_run_created(orch)


PLAN_02 = """\
    defaults: {timeout_sec: 600, retries: 2, env: {API_TOKEN: "tok-s3cr3t"}}
    pools: {llm: 2}
    budget: {max_cost_usd: 5}
    tasks:
      - {id: test, cmd: "true", env: {}, retries: 0, timeout_sec: 600}
      - id: fix
        cmd: "true"
        depends_on: [test]
        pool: llm
        idle_timeout_sec: 120
        retry_on: [timeout, idle_timeout, 75]
        run_when: failure
      - {id: lint, cmd: "true"}
    """


def test_validate_shows_the_effective_settings_after_defaults(orch: Orch) -> None:
    proc = orch.run("validate", orch.plan(PLAN_02))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        "plan OK: 3 tasks\n"
        "plan: pools={llm: 2} max_cost_usd=5\n"
        "  test: env=[API_TOKEN] timeout_sec=600\n"
        "  fix: env=[API_TOKEN] pool=llm timeout_sec=600 idle_timeout_sec=120 retries=2"
        " retry_on=[timeout, idle_timeout, 75] run_when=failure\n"
        "  lint: env=[API_TOKEN] timeout_sec=600 retries=2\n"
    )
    assert "s3cr3t" not in proc.stdout
    assert_no_run_created(orch)


def test_dry_run_shows_each_waves_task_settings(orch: Orch) -> None:
    proc = orch.run("run", "--dry-run", orch.plan(PLAN_02))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        "wave 1: test lint\n"
        "  test: env=[API_TOKEN] timeout_sec=600\n"
        "  lint: env=[API_TOKEN] timeout_sec=600 retries=2\n"
        "wave 2: fix\n"
        "  fix: env=[API_TOKEN] pool=llm timeout_sec=600 idle_timeout_sec=120 retries=2"
        " retry_on=[timeout, idle_timeout, 75] run_when=failure\n"
        "plan: pools={llm: 2} max_cost_usd=5\n"
        "plan OK: 3 tasks, dry run: nothing executed\n"
    )
    assert "s3cr3t" not in proc.stdout
    assert_no_run_created(orch)
