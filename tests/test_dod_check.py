"""tools/dod_check.py: the runtime DoD passes on this checkout and reports what it did."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from orch.store import read_state

REPO = Path(__file__).resolve().parent.parent
DOD = str(REPO / "tools" / "dod_check.py")
STEPS = ["basic", "parallel", "fail_retry", "resume", "status", "logs", "cancel"]


def _dod(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, DOD, "--skip-quality-gates", *args],
        cwd=str(REPO),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _steps(summary: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {step["name"]: step for step in summary["steps"]}


def test_runtime_dod_passes_and_writes_its_summary(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "x.json"
    proc = _dod("--home", str(home), "--json-out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert json.loads(proc.stdout) == summary  # --json: stdout is exactly the summary
    assert "DoD PASSED: 7 steps ok" in proc.stderr
    assert (summary["result"], summary["failed_steps"]) == ("PASS", [])
    assert (summary["home"], summary["quality_gates"]) == (str(home), "skipped")
    steps = _steps(summary)
    assert list(steps) == STEPS
    exits = {name: (step["ok"], step["exit"]) for name, step in steps.items()}
    assert exits == {
        name: (True, 3 if name == "fail_retry" else 4 if name == "cancel" else 0) for name in STEPS
    }
    assert all(f"--home {shlex.quote(str(home))}" in s["command"] for s in steps.values())
    assert " resume " in steps["resume"]["command"]
    assert "--task inspect --tail 50" in steps["logs"]["command"]
    _check_runs(home, summary["run_ids"])


def _check_runs(home: Path, run_ids: Dict[str, str]) -> None:
    """What the summary claims, read back from the runs themselves."""
    assert sorted(run_ids) == ["basic", "cancel", "fail_retry", "parallel"]
    states = {name: read_state(str(home / "runs" / rid)) for name, rid in run_ids.items()}
    assert states["basic"]["status"] == "SUCCESS"
    assert [t["attempts"] for t in states["basic"]["tasks"].values()] == [1, 1, 1]
    assert states["parallel"]["max_parallel"] == 2
    retry = states["fail_retry"]["tasks"]
    assert (retry["flaky"]["status"], retry["flaky"]["attempts"]) == ("FAILED", 3)
    assert retry["downstream"]["skip_reason"] == "dependency_not_success"
    assert states["cancel"]["status"] == "CANCELED"


def test_a_broken_orch_fails_naming_every_step(tmp_path: Path) -> None:
    broken: List[str] = [sys.executable, "-c", "import sys; sys.exit(5)"]
    out = tmp_path / "x.json"
    proc = _dod(
        "--home", str(tmp_path / "home"), "--orch", shlex.join(broken), "--json-out", str(out)
    )
    assert proc.returncode == 1
    assert f"DoD FAILED: failing step(s): {', '.join(STEPS)}" in proc.stdout
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert (summary["result"], summary["failed_steps"], summary["run_ids"]) == ("FAIL", STEPS, {})
    steps = _steps(summary)
    assert steps["basic"]["exit"] == 5
    assert "expected exit 0, got 5" in steps["basic"]["detail"]
    assert "needs the run of step 'basic'" in steps["resume"]["detail"]
    assert "before printing its run id" in steps["cancel"]["detail"]
