"""Every example plan, run for real from a scratch copy of the repository's examples and tools."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, Orch, run_id_of


@pytest.fixture
def checkout(orch: Orch) -> Orch:
    for name in ("examples", "tools", "orch"):
        shutil.copytree(REPO / name, orch.workdir / name)
    (orch.workdir / "tests").mkdir()
    (orch.workdir / "tests" / "test_x.py").write_text("def test_x() -> None:\n    pass\n")
    return orch


def test_plan_basic_collects_the_build_artifact(checkout: Orch) -> None:
    proc = checkout.run("run", "examples/plan_basic.yaml")
    assert proc.returncode == 0, proc.stderr
    build = checkout.state(run_id_of(proc.stdout))["tasks"]["build"]
    assert [a["path"] for a in build["artifacts"]] == [".orch/work/dist/app.txt"]
    assert all(Path(p).is_file() for p in build["artifact_paths"])
    assert (checkout.workdir / ".orch/artifacts/build/.orch/work/dist/app.txt").is_file()


def test_plan_handoff_passes_results_through_orch_context(checkout: Orch) -> None:
    proc = checkout.run("run", "examples/plan_handoff.yaml")
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    tasks = checkout.state(run_id)["tasks"]
    assert {t["status"] for t in tasks.values()} == {"SUCCESS"}
    context = json.loads((checkout.run_dir(run_id) / "context" / "summarize.json").read_text())
    for dep in ("measure_code", "measure_tests"):
        paths = context["dependencies"][dep]["artifact_paths"]
        assert len(paths) == 1 and Path(paths[0]).is_file()
    assert (checkout.workdir / ".orch/work/handoff/summary.md").is_file()


def test_plan_parallel_and_fail_retry_exit_codes(checkout: Orch) -> None:
    assert checkout.run("run", "examples/plan_parallel.yaml", "--max-parallel", "2").returncode == 0
    failing = checkout.run("run", "examples/plan_fail_retry.yaml")
    assert failing.returncode == 3
    tasks = checkout.state(run_id_of(failing.stdout))["tasks"]
    assert tasks["flaky"]["attempts"] == 3
    assert tasks["downstream"]["skip_reason"] == "dependency_not_success"


def test_every_example_validates(checkout: Orch) -> None:
    for plan in sorted((checkout.workdir / "examples").glob("*.yaml")):
        proc = checkout.run("validate", f"examples/{plan.name}")
        assert proc.returncode == 0, (plan.name, proc.stderr)


def test_plan_fix_loop_is_green_when_the_fix_works_and_red_when_not(checkout: Orch) -> None:
    green = checkout.run("run", "examples/plan_fix_loop.yaml")
    assert green.returncode == 0, green.stderr
    tasks = checkout.state(run_id_of(green.stdout))["tasks"]
    assert tasks["test"]["status"] == "FAILED" and tasks["test"]["allowed_failure"] is True
    assert [tasks[t]["status"] for t in ("fix", "retest", "report")] == ["SUCCESS"] * 3
    # Fixed already: the fixer is not needed, which is not a failure either.
    again = checkout.run("run", "examples/plan_fix_loop.yaml")
    assert again.returncode == 0, again.stderr
    tasks = checkout.state(run_id_of(again.stdout))["tasks"]
    assert tasks["fix"]["skip_reason"] == "condition_not_met"
    assert tasks["report"]["status"] == "SUCCESS"
    (checkout.workdir / ".orch/work/fixed").unlink()
    red = checkout.run("run", "examples/plan_fix_loop.yaml", env={"FIX_BROKEN": "1"})
    assert red.returncode == 3, red.stderr
    tasks = checkout.state(run_id_of(red.stdout))["tasks"]
    assert tasks["retest"]["status"] == "FAILED" and tasks["report"]["status"] == "SUCCESS"


def test_plan_agents_shows_each_policy(checkout: Orch) -> None:
    proc = checkout.run("run", "examples/plan_agents.yaml")
    assert proc.returncode == 3, proc.stderr
    tasks = checkout.state(run_id_of(proc.stdout))["tasks"]
    assert tasks["thinker"]["status"] == "SUCCESS"  # 6 s of heartbeats, idle limit 5 s
    assert tasks["throttled"]["status"] == "SUCCESS" and tasks["throttled"]["attempts"] == 3
    assert tasks["stuck"]["timed_out_by"] == "idle_timeout_sec"
    assert tasks["stuck"]["attempts"] == 2
    assert tasks["fatal"]["error"] == "not retried: exit 2 is not in retry_on"
    assert tasks["lazy"]["status"] == "SUCCESS" and tasks["lazy"]["attempts"] == 2
    assert tasks["plan"]["metrics"]["cost_usd"] == 0.01
