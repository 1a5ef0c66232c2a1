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
