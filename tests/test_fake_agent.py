"""tools/fake_agent.py, run as the examples run it: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

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


# --------------------------------------------------------------------- 0.2 modes


def test_fix_subcommand() -> None:
    proc = _agent("fix")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[fake-agent] fix: fixing the code\n[fake-agent] fix: done\n"


def test_hang_writes_nothing_for_the_time_given(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = _agent("build", "--hang", "--sleep", "1.2", cwd=tmp_path)
    assert time.monotonic() - t0 >= 1.2
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert list(tmp_path.iterdir()) == []


def test_hang_by_default_lasts_long_and_stays_silent() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FAKE_AGENT_"))}
    with subprocess.Popen(
        [sys.executable, AGENT, "test", "--hang"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            time.sleep(1.0)
            assert proc.poll() is None  # still hanging after 1 s
        finally:
            proc.kill()
        out, err = proc.communicate(timeout=10)
    assert (out, err) == (b"", b"")


def test_heartbeat_prints_a_line_every_interval_then_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FAKE_AGENT_"))}
    t0 = time.monotonic()
    stamps: List[float] = []
    lines: List[str] = []
    with subprocess.Popen(
        [sys.executable, AGENT, "build", "--sleep", "1", "--heartbeat", "0.25"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamps.append(time.monotonic())
            lines.append(line.rstrip("\n"))
        assert proc.wait(timeout=10) == 0
    assert lines == [
        "[fake-agent] build: building",
        "[fake-agent] working for 1s",
        "[fake-agent] thinking... 0.25s",
        "[fake-agent] thinking... 0.5s",
        "[fake-agent] thinking... 0.75s",
        "[fake-agent] build: done",
    ]
    assert stamps[-1] - t0 >= 1.0
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    assert max(gaps) < 0.6, gaps  # an idle timeout well above the beat never fires


@pytest.mark.parametrize("bad", ["0", "-1", "x"])
def test_heartbeat_must_be_positive(bad: str) -> None:
    proc = _agent("build", f"--heartbeat={bad}")
    assert proc.returncode == 2 and "--heartbeat" in proc.stderr


def test_rate_limit(tmp_path: Path) -> None:
    proc = _agent("build", "--rate-limit", "--produce", "x", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == "[fake-agent] build: building\nERROR: rate limit exceeded (429)\n"
    assert proc.stderr == ""
    assert list(tmp_path.iterdir()) == []  # stopped before any work


def test_rate_limit_on_the_first_attempts_only() -> None:
    codes = []
    for attempt in ("1", "2", "3"):
        proc = _agent(
            "build", "--rate-limit", "--fail-attempts", "2", env={"ORCH_ATTEMPT": attempt}
        )
        codes.append(proc.returncode)
        assert ("rate limit exceeded" in proc.stdout) == (attempt != "3")
    assert codes == [1, 1, 0]
    assert _agent("build", "--rate-limit", "--fail-attempts", "2").returncode == 1  # unset: 1


@pytest.mark.parametrize("attempt,code", [("1", 1), ("2", 0)])
def test_fail_attempts_applies_to_fail_always(attempt: str, code: int) -> None:
    proc = _agent("test", "--fail-always", "--fail-attempts", "1", env={"ORCH_ATTEMPT": attempt})
    assert proc.returncode == code


def test_fail_attempts_needs_an_integer_attempt() -> None:
    proc = _agent("test", "--fail-always", "--fail-attempts", "1", env={"ORCH_ATTEMPT": "x"})
    assert proc.returncode == 2
    assert proc.stderr == "fake_agent: error: ORCH_ATTEMPT is not an integer: 'x'\n"
    assert _agent("test", "--fail-attempts", "0").returncode == 2


def test_pretend_produce_exits_0_without_the_file(tmp_path: Path) -> None:
    proc = _agent("build", "--pretend-produce", "out/report.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[fake-agent] wrote out/report.json" in proc.stdout.splitlines()
    assert list(tmp_path.iterdir()) == []


def test_pretend_produce_writes_the_file_after_the_failing_attempts(tmp_path: Path) -> None:
    args = ("build", "--pretend-produce", "r.json", "--fail-attempts", "1")
    assert _agent(*args, cwd=tmp_path, env={"ORCH_ATTEMPT": "1"}).returncode == 0
    assert not (tmp_path / "r.json").exists()
    assert _agent(*args, cwd=tmp_path, env={"ORCH_ATTEMPT": "2"}).returncode == 0
    assert (tmp_path / "r.json").read_text().startswith("produced by fake_agent build")


def test_exit_code_with_exact_stdout_and_stderr() -> None:
    args = ("test", "--quiet", "--stdout", "3 tests failed", "--stderr", "E: boom")
    proc = _agent(*args, "--exit-code", "75")
    assert (proc.returncode, proc.stdout, proc.stderr) == (75, "3 tests failed\n", "E: boom\n")
    proc = _agent("test", "--stdout", "out", "--stderr", "err", "--exit-code", "3")
    assert proc.returncode == 3
    assert proc.stdout == "[fake-agent] test: running the tests\nout\n"  # no 'done' line
    assert proc.stderr == "err\n"
    proc = _agent("test", "--quiet", "--stdout", "a", "--stdout", "b")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "a\nb\n", "")


@pytest.mark.parametrize("bad", ["-1", "256", "x"])
def test_exit_code_bounds(bad: str) -> None:
    proc = _agent("test", f"--exit-code={bad}")
    assert proc.returncode == 2 and "--exit-code" in proc.stderr


def test_exit_code_only_on_the_failing_attempts() -> None:
    args = ("test", "--exit-code", "75", "--fail-attempts", "1")
    assert _agent(*args, env={"ORCH_ATTEMPT": "1"}).returncode == 75
    assert _agent(*args, env={"ORCH_ATTEMPT": "2"}).returncode == 0


def test_quiet_drops_only_the_agents_own_lines(tmp_path: Path) -> None:
    proc = _agent("build", "--quiet", "--produce", "a.txt", "--message", "hi", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "[fake-agent] hi\n", "")
    assert (tmp_path / "a.txt").is_file()
    proc = _agent("build", "--quiet", "--fail-always")
    assert proc.stdout == ""
    assert proc.stderr == "fake_agent: error: build failed (--fail-always)\n"


def _last_json(stdout: str) -> Dict[str, Any]:
    last = stdout.splitlines()[-1]
    value = json.loads(last)
    assert isinstance(value, dict)
    return value


def test_json_result_is_the_last_line_shaped_like_claude() -> None:
    proc = _agent("build", "--json-result", env={"ORCH_TASK_ID": "t", "ORCH_ATTEMPT": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2] == "[fake-agent] build: done"
    result = _last_json(proc.stdout)
    duration = result.pop("duration_ms")
    session = result.pop("session_id")
    assert type(duration) is int and duration >= 0
    assert isinstance(session, str) and session
    assert result == {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 1,
        "result": "build: done",
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 1200, "output_tokens": 345},
    }


def test_json_result_values_are_settable() -> None:
    proc = _agent(
        "fix",
        "--quiet",
        "--json-result",
        "--cost-usd",
        "0.5",
        "--input-tokens",
        "10",
        "--output-tokens",
        "5",
        "--result",
        "patched 2 files",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    result = _last_json(proc.stdout)
    assert result["total_cost_usd"] == 0.5 and result["result"] == "patched 2 files"
    assert result["usage"] == {"input_tokens": 10, "output_tokens": 5}


def test_json_result_of_a_failed_attempt_is_an_error_result() -> None:
    proc = _agent("test", "--json-result", "--exit-code", "4")
    assert proc.returncode == 4
    result = _last_json(proc.stdout)
    assert result["is_error"] is True and result["subtype"] == "error_during_execution"
    assert result["result"] == "test: failed (exit 4)"


def test_write_metrics_appends_one_line(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    env = {"ORCH_METRICS": str(metrics)}
    args = ("build", "--write-metrics", "--cost-usd", "0.01", "--input-tokens", "10")
    assert _agent(*args, "--output-tokens", "5", env=env).returncode == 0
    assert _agent("build", "--write-metrics", "--quiet", env=env).stdout == ""
    lines = metrics.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"cost_usd": 0.01, "input_tokens": 10, "output_tokens": 5},
        {"cost_usd": 0.0123, "input_tokens": 1200, "output_tokens": 345},
    ]
    assert lines[0] == '{"cost_usd": 0.01, "input_tokens": 10, "output_tokens": 5}'


def test_write_metrics_without_the_variable_or_a_writable_file(tmp_path: Path) -> None:
    proc = _agent("build", "--write-metrics")
    assert proc.returncode == 0
    assert "[fake-agent] no ORCH_METRICS in the environment" in proc.stdout.splitlines()
    env = {"ORCH_METRICS": str(tmp_path / "no-dir" / "m.jsonl")}
    proc = _agent("build", "--write-metrics", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("fake_agent: error: cannot write ORCH_METRICS ")


def test_fix_loop_with_a_marker_file(tmp_path: Path) -> None:
    marker = ".orch/work/fixed"
    proc = _agent("test", "--fail-unless-exists", marker, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == f"fake_agent: error: test failed: {marker} does not exist\n"
    assert _agent("fix", "--produce", marker, cwd=tmp_path).returncode == 0
    proc = _agent("test", "--fail-unless-exists", marker, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == [
        f"[fake-agent] found {marker}",
        "[fake-agent] test: done",
    ]


def test_help_documents_every_mode() -> None:
    proc = _agent("--help")
    assert proc.returncode == 0
    modes = proc.stdout.split("Modes, for plans and tests")[1].split("positional arguments")[0]
    for option in (
        "--hang",
        "--heartbeat",
        "--rate-limit",
        "--fail-attempts",
        "--pretend-produce",
        "--json-result",
        "--write-metrics",
        "--exit-code",
        "--stdout",
        "--stderr",
        "--quiet",
        "--fail-unless-exists",
    ):
        assert f" {option} " in modes, option
