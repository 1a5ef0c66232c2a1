"""tools/fake_agent.py, run as the examples run it: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from conftest import peak_rss_kib

AGENT = str(Path(__file__).resolve().parent.parent / "tools" / "fake_agent.py")


def _agent(
    *args: str, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FAKE_AGENT_"))}
    return subprocess.run(
        [sys.executable, AGENT, *args],
        cwd=cwd,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("sub", ["inspect", "build", "test"])
def test_subcommands_succeed_and_say_what_they_do(sub: str) -> None:
    proc = _agent(sub, env={"ORCH_TASK_ID": "t1", "ORCH_ATTEMPT": "2"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"[fake-agent] {sub}: ") and "(task t1, attempt 2)" in lines[0]
    assert lines[-1] == f"[fake-agent] {sub}: done"
    assert proc.stderr == ""


def test_unknown_subcommand_is_a_usage_error() -> None:
    proc = _agent("deploy")
    assert proc.returncode == 2 and "invalid choice: 'deploy'" in proc.stderr


def test_message() -> None:
    proc = _agent("build", "--message", "hello agents")
    assert proc.returncode == 0
    assert "[fake-agent] hello agents" in proc.stdout.splitlines()


def test_sleep() -> None:
    t0 = time.monotonic()
    proc = _agent("build", "--sleep", "0.4")
    assert proc.returncode == 0
    assert time.monotonic() - t0 >= 0.4
    assert "[fake-agent] working for 0.4s" in proc.stdout


@pytest.mark.parametrize("bad", ["-1", "nan", "x"])
def test_sleep_rejects_bad_values(bad: str) -> None:
    proc = _agent("build", f"--sleep={bad}")
    assert proc.returncode == 2 and "--sleep" in proc.stderr


def test_fail_always() -> None:
    proc = _agent("test", "--fail-always")
    assert proc.returncode == 1
    assert proc.stderr == "fake_agent: error: test failed (--fail-always)\n"
    assert "done" not in proc.stdout


def test_fail_rate_bounds() -> None:
    assert _agent("test", "--fail-rate", "0").returncode == 0
    assert _agent("test", "--fail-rate", "1").returncode == 1
    proc = _agent("test", "--fail-rate", "1.5")
    assert proc.returncode == 2 and "must be between 0 and 1" in proc.stderr


def test_fail_rate_is_reproducible_with_a_seed() -> None:
    outcomes: List[int] = []
    for seed in range(8):
        env = {"FAKE_AGENT_SEED": str(seed), "ORCH_TASK_ID": "t", "ORCH_ATTEMPT": "1"}
        first = _agent("test", "--fail-rate", "0.5", env=env)
        again = _agent("test", "--fail-rate", "0.5", env=env)
        assert first.returncode == again.returncode
        assert first.stderr == again.stderr
        outcomes.append(first.returncode)
    # Eight fixed seeds at 50%: both outcomes occur (deterministic, not a coin toss).
    assert set(outcomes) == {0, 1}
    failed = outcomes.index(1)
    env = {"FAKE_AGENT_SEED": str(failed), "ORCH_TASK_ID": "t", "ORCH_ATTEMPT": "1"}
    assert "simulated: draw" in _agent("test", "--fail-rate", "0.5", env=env).stderr


def test_produce_creates_files_and_parents(tmp_path: Path) -> None:
    proc = _agent(
        "build", "--produce", "dist/pkg/app.bin", "--produce", "report.json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "dist" / "pkg" / "app.bin").read_text().startswith("produced by fake_agent")
    assert (tmp_path / "report.json").is_file()
    assert "[fake-agent] wrote dist/pkg/app.bin" in proc.stdout


def test_produce_failure_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = _agent("build", "--produce", "file/sub/x.txt", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("fake_agent: error: cannot write ")


@pytest.mark.parametrize("n", [0, 1, 100, 65536, 200_001])
def test_spam_bytes_writes_exactly_n_bytes(n: int) -> None:
    proc = _agent("build", "--spam-bytes", str(n))
    assert proc.returncode == 0
    spam = [ln for ln in proc.stdout.splitlines(keepends=True) if not ln.startswith("[fake")]
    assert sum(len(ln) for ln in spam) == n


def test_spam_bytes_does_not_hold_the_output_in_memory(tmp_path: Path) -> None:
    size = 200 * 1024 * 1024
    out = tmp_path / "out"
    code, peak_kib = peak_rss_kib(
        [sys.executable, AGENT, "build", "--spam-bytes", str(size)], tmp_path, dict(os.environ), out
    )
    assert code == 0
    assert out.stat().st_size > size
    peak_mib = peak_kib / (1024 * 1024) if sys.platform == "darwin" else peak_kib / 1024
    assert peak_mib < 100


def _context(tmp_path: Path) -> Path:
    data = {
        "schema_version": 1,
        "run_id": "20261125_090000_a1b2c3",
        "task_id": "summarize",
        "attempt": 1,
        "run_dir": str(tmp_path),
        "artifacts_dir": str(tmp_path / "artifacts"),
        "dependencies": {
            "analyze": {
                "status": "SUCCESS",
                "exit_code": 0,
                "stdout_path": "/x/analyze.out.log",
                "stderr_path": "/x/analyze.err.log",
                "artifacts_dir": "/x/artifacts/analyze",
                "artifact_paths": ["/x/artifacts/analyze/result.json"],
            },
            "lint": {"status": "FAILED", "exit_code": 1, "artifact_paths": []},
        },
    }
    path = tmp_path / "ctx.json"
    path.write_text(json.dumps(data))
    return path


def test_read_context_summarizes_dependencies(tmp_path: Path) -> None:
    proc = _agent("inspect", "--read-context", env={"ORCH_CONTEXT": str(_context(tmp_path))})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "[fake-agent] context: run 20261125_090000_a1b2c3, task summarize, attempt 1" in lines
    assert "[fake-agent] dependency analyze: SUCCESS, exit 0, 1 artifact(s)" in lines
    assert "[fake-agent]   artifact /x/artifacts/analyze/result.json" in lines
    assert "[fake-agent] dependency lint: FAILED, exit 1, 0 artifact(s)" in lines


def test_read_context_without_variable() -> None:
    proc = _agent("inspect", "--read-context")
    assert proc.returncode == 0
    assert "[fake-agent] no ORCH_CONTEXT in the environment" in proc.stdout


def test_read_context_errors(tmp_path: Path) -> None:
    proc = _agent("inspect", "--read-context", env={"ORCH_CONTEXT": str(tmp_path / "none")})
    assert proc.returncode == 1
    assert proc.stderr.startswith("fake_agent: error: cannot read ORCH_CONTEXT ")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = _agent("inspect", "--read-context", env={"ORCH_CONTEXT": str(bad)})
    assert proc.returncode == 1 and "is not valid JSON" in proc.stderr
