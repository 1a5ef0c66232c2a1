"""The zipapp: reproducible bytes, and a working orch from one file outside the checkout."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "scripts" / "build_zipapp.py"


def _build(output: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--output", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _clean_env() -> Dict[str, str]:
    # No PYTHONPATH and no ORCH_HOME: nothing may lead the zipapp back to the checkout.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ORCH_"))}
    env.pop("SOURCE_DATE_EPOCH", None)
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapp") / "orch.pyz"
    _build(out, _clean_env())
    return out


def test_same_sources_give_the_same_bytes(tmp_path: Path, pyz: Path) -> None:
    again = tmp_path / "again" / "orch.pyz"
    proc = _build(again, _clean_env())
    data = again.read_bytes()
    assert data == pyz.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert proc.stdout.splitlines() == [f"built {again} ({len(data)} bytes)", f"sha256 {digest}"]
    assert sorted(os.listdir(again.parent)) == ["orch.pyz"]  # no temp file left behind


def test_archive_holds_only_the_package_sources_with_fixed_metadata(pyz: Path) -> None:
    data = pyz.read_bytes()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert stat.S_IMODE(pyz.stat().st_mode) == 0o755
    sources = sorted(p.name for p in (REPO / "orch").glob("*.py"))
    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
        main_py = zf.read("__main__.py").decode()
    assert [i.filename for i in infos] == ["__main__.py"] + [f"orch/{n}" for n in sources]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert "from orch.cli import main" in main_py


def test_source_date_epoch_sets_the_entry_times(tmp_path: Path, pyz: Path) -> None:
    env = _clean_env()
    env["SOURCE_DATE_EPOCH"] = "1700000000"  # 2023-11-14T22:13:20Z
    out = tmp_path / "epoch.pyz"
    _build(out, env)
    with zipfile.ZipFile(out) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}
    assert out.read_bytes() != pyz.read_bytes()


def _pyz_run(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        cwd=str(cwd),
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def outside(tmp_path: Path, pyz: Path) -> Path:
    """A directory far from the checkout holding a copy of the zipapp (permissions kept)."""
    assert REPO not in tmp_path.parents
    shutil.copy2(str(pyz), str(tmp_path / "orch.pyz"))
    return tmp_path


def test_runs_with_python_and_as_an_executable(outside: Path) -> None:
    help_ = _pyz_run(outside, sys.executable, "orch.pyz", "--help")
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("usage: orch")
    version = _pyz_run(outside, "./orch.pyz", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, "orch 0.1.0"), version.stderr
    plan = str(REPO / "examples" / "plan_basic.yaml")
    valid = _pyz_run(outside, sys.executable, "orch.pyz", "validate", plan)
    first_line = valid.stdout.splitlines()[0] if valid.stdout else ""
    assert (valid.returncode, first_line) == (0, "plan OK: 3 tasks"), valid.stderr


def test_modules_come_from_the_archive(outside: Path) -> None:
    code = "import sys; sys.path.insert(0, 'orch.pyz'); import orch.cli; print(orch.cli.__file__)"
    proc = _pyz_run(outside, sys.executable, "-I", "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == os.path.join("orch.pyz", "orch", "cli.py")


def _tiny_plan(python: str) -> str:
    py = json.dumps(python)
    make = json.dumps("open('out.txt', 'w').write('made\\n')")
    check = json.dumps(
        "import os; p = os.path.join(os.environ['ORCH_ARTIFACTS_DIR'], 'make', 'out.txt');"
        " print(open(p).read().strip())"
    )
    return textwrap.dedent(
        f"""\
        goal: "zipapp smoke"
        tasks:
          - id: make
            cmd: [{py}, "-c", {make}]
            outputs: ["out.txt"]
          - id: check
            cmd: [{py}, "-c", {check}]
            depends_on: [make]
        """
    )


def test_a_real_run_from_the_archive(outside: Path) -> None:
    (outside / "tiny.yaml").write_text(_tiny_plan(sys.executable), encoding="utf-8")
    base: List[str] = [sys.executable, "orch.pyz"]
    run = _pyz_run(outside, *base, "run", "tiny.yaml", "--home", "h")
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = run.stdout.splitlines()[0][len("run_id: ") :]
    status = _pyz_run(outside, *base, "status", run_id, "--json", "--home", "h")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["status"] == "SUCCESS"
    assert [t["status"] for t in state["tasks"].values()] == ["SUCCESS", "SUCCESS"]
    logs = _pyz_run(outside, *base, "logs", run_id, "--task", "check", "--tail", "1", "--home", "h")
    assert logs.returncode == 0, logs.stderr
    assert "made" in logs.stdout.splitlines(), logs.stdout
