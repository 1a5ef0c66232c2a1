"""Hostile and edge input, field by field, through the real command line.

Every case ends in one of two ways: orch does the job, or it exits 2 with one clear line per
problem (file:line:col where the text gives one). Never a traceback, never exit 1, never a
RecursionError on deep graphs, and nothing created for a plan it refuses.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

import pytest
from conftest import Orch, orch_env, run_id_of

from orch.cli import main

ID_128 = "a" + "b" * 126 + "z"


def _tasks_yaml(lines: List[str]) -> str:
    return "tasks:\n" + "\n".join(lines) + "\n"


def _clean_refusal(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip()
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr[-2000:]


def _no_run_created(orch: Orch) -> None:
    runs = orch.home / "runs"
    assert not runs.exists() or not any(runs.iterdir())


# ------------------------------------------------------------------------------------ ids


def test_id_of_128_characters_runs_and_its_logs_are_found(orch: Orch) -> None:
    plan = orch.plan(_tasks_yaml([f"  - id: {ID_128}", '    cmd: ["echo", "long-id-ran"]']))
    assert orch.run("validate", plan).stdout.strip() == "plan OK: 1 tasks"
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    assert (orch.run_dir(run_id) / "logs" / f"{ID_128}.out.log").is_file()
    logs = orch.run("logs", run_id, "--task", ID_128, "--stream", "stdout")
    assert logs.returncode == 0 and "long-id-ran" in logs.stdout
    assert ID_128 in orch.run("status", run_id).stdout


def test_id_of_129_characters_is_refused_at_its_position(orch: Orch) -> None:
    plan = orch.plan(_tasks_yaml([f"  - id: {ID_128}x", '    cmd: ["true"]']))
    for command in ("validate", "run"):
        _clean_refusal(orch.run(command, plan), "plan.yaml:2:9:", "at most 128 characters")
    _no_run_created(orch)


def test_ids_equal_ignoring_case_are_refused(orch: Orch) -> None:
    plan = orch.plan(
        _tasks_yaml(
            ["  - id: Build", '    cmd: ["true"]', "  - id: build", '    cmd: ["true"]'],
        )
    )
    proc = orch.run("run", plan)
    _clean_refusal(proc, "plan.yaml:4:9:", "'build'", "'Build'", "ignoring case")
    _no_run_created(orch)


# ----------------------------------------------------------------------- big graphs


def _chain(n: int) -> str:
    lines = ["  - id: c0", '    cmd: ["true"]']
    for i in range(1, n):
        lines += [f"  - id: c{i}", '    cmd: ["true"]', f"    depends_on: [c{i - 1}]"]
    return _tasks_yaml(lines)


def test_10000_dependencies_on_one_task_validate_dry_run_and_graph(orch: Orch) -> None:
    n = 10_000
    lines = [f"  - {{id: d{i}, cmd: [echo]}}" for i in range(n)]
    lines += ["  - id: sink", '    cmd: ["true"]', "    depends_on:"]
    lines += [f"      - d{i}" for i in range(n)]
    plan = orch.plan(_tasks_yaml(lines))
    assert orch.run("validate", plan).stdout.strip() == f"plan OK: {n + 1} tasks"
    dry = orch.run("run", plan, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    waves = [line for line in dry.stdout.splitlines() if line.startswith("wave ")]
    assert len(waves) == 2 and waves[1] == "wave 2: sink"
    dot = orch.run("graph", plan, "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.count(' -> "sink";') == n
    _no_run_created(orch)


def test_10000_deep_chain_validates_dry_runs_and_graphs_without_recursion(orch: Orch) -> None:
    n = 10_000
    plan = orch.plan(_chain(n))
    assert orch.run("validate", plan).stdout.strip() == f"plan OK: {n} tasks"
    dry = orch.run("run", plan, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"wave {n}: c{n - 1}" in dry.stdout
    for fmt in ("mermaid", "dot"):
        graph = orch.run("graph", plan, "--format", fmt)
        assert graph.returncode == 0, graph.stderr
        assert "Recursion" not in graph.stderr
    # The same chain closed into a cycle: one error naming the cycle, not a crash.
    closed = _chain(n).replace(
        '  - id: c0\n    cmd: ["true"]',
        f'  - id: c0\n    cmd: ["true"]\n    depends_on: [c{n - 1}]',
        1,
    )
    _clean_refusal(
        orch.run("validate", orch.plan(closed, "cycle.yaml")), "dependency cycle: c0 -> "
    )


def test_2000_deep_chain_really_runs_and_reports(orch: Orch) -> None:
    # 10,000 would take ~60 s of process starts on 2 cores; 2,000 exercises the same paths.
    n = 2000
    plan = orch.plan(_chain(n))
    proc = orch.run("run", plan, "--max-parallel", "8", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = run_id_of(proc.stdout)
    state = orch.state(run_id)
    assert state["status"] == "SUCCESS"
    assert all(t["status"] == "SUCCESS" and t["attempts"] == 1 for t in state["tasks"].values())
    starts = [state["tasks"][f"c{i}"]["started_at"] for i in (0, n // 2, n - 1)]
    assert starts == sorted(starts)
    report = (orch.run_dir(run_id) / "report" / "final_report.md").read_text(encoding="utf-8")
    assert "SUCCESS" in report and f"c{n - 1}" in report
    status = orch.run("status", run_id)
    assert status.returncode == 0 and f"c{n - 1}" in status.stdout
    graph = orch.run("graph", run_id)
    assert graph.returncode == 0 and graph.stdout.count("-->") == n - 1


# -------------------------------------------------------------------------------- cmd


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        ('["echo", "a\\0b"]', "cmd[1] must not contain a NUL character"),
        ('"echo a\\0b"', "cmd must not contain a NUL character"),
        ('[""]', "cmd[0] (the program) must not be empty"),
        ('""', "cmd must not be empty"),
        ('"   "', "cmd must not be empty"),
        ("[]", "cmd must not be an empty list"),
        ("\"'' x\"", "cmd's first word (the program) must not be empty"),
    ],
)
def test_cmd_with_nul_or_nothing_to_run_is_refused(orch: Orch, cmd: str, message: str) -> None:
    plan = orch.plan(_tasks_yaml(["  - id: a", f"    cmd: {cmd}"]))
    _clean_refusal(orch.run("run", plan), "plan.yaml:3:", message)
    _no_run_created(orch)


def test_empty_arguments_reach_the_task_as_empty_arguments(orch: Orch) -> None:
    plan = orch.plan(
        _tasks_yaml(
            [
                "  - id: lst",
                '    cmd: ["printf", "[%s]", "", "x", ""]',
                "  - id: str",
                "    cmd: \"printf '[%s]' '' x ''\"",
            ]
        )
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    tasks = orch.state(run_id_of(proc.stdout))["tasks"]
    for name in ("lst", "str"):
        assert Path(tasks[name]["stdout_path"]).read_text().endswith("[][x][]")


# -------------------------------------------------------------------------------- env


def test_env_values_of_100_kb_reach_the_task_and_1_mb_fails_the_task_cleanly(
    orch: Orch,
) -> None:
    # Linux caps one environment string at 128 KiB (MAX_ARG_STRLEN): a 1 MB value is valid
    # YAML and a valid plan, so the task fails to start (exit 3) with the kernel's reason.
    mid, big = "M" * 100_000, "B" * (1 << 20)
    plan = orch.plan(
        _tasks_yaml(
            [
                "  - id: mid",
                '    cmd: ["sh", "-c", "printf %s \\"$MID\\" | wc -c"]',
                f'    env: {{MID: "{mid}"}}',
                "  - id: big",
                '    cmd: ["true"]',
                f'    env: {{BIG: "{big}"}}',
            ]
        )
    )
    assert orch.run("validate", plan).returncode == 0
    proc = orch.run("run", plan)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and big[:64] not in proc.stderr
    tasks = orch.state(run_id_of(proc.stdout))["tasks"]
    assert tasks["mid"]["status"] == "SUCCESS"
    assert Path(tasks["mid"]["stdout_path"]).read_text().split()[-1] == "100000"
    assert tasks["big"]["status"] == "FAILED"
    assert "Argument list too long" in tasks["big"]["error"]


# --------------------------------------------------------------------------- plan files


def test_non_utf8_plan_is_refused_at_the_bad_byte(orch: Orch) -> None:
    (orch.workdir / "latin1.yaml").write_bytes(b'goal: "caf\xe9"\ntasks:\n  - id: a\n    cmd: x\n')
    (orch.workdir / "utf16.yaml").write_bytes("tasks: []\n".encode("utf-16"))
    _clean_refusal(orch.run("run", "latin1.yaml"), "latin1.yaml:1:11:", "not valid UTF-8")
    _clean_refusal(orch.run("validate", "utf16.yaml"), "UTF-16")
    _no_run_created(orch)


@pytest.mark.parametrize("command", ["validate", "run", "graph"])
def test_plan_path_that_is_a_directory(orch: Orch, command: str) -> None:
    (orch.workdir / "adir").mkdir()
    _clean_refusal(orch.run(command, "adir"), "adir: cannot read plan: it is a directory")
    _no_run_created(orch)


@pytest.mark.parametrize(
    "content",
    [b"", b"\n\n   \n", b"# only a comment\n", b"\xef\xbb\xbf", b"---\n", b"~\n"],
    ids=["empty", "blank", "comment", "bom", "marker", "null"],
)
def test_empty_plan_is_refused(orch: Orch, content: bytes) -> None:
    (orch.workdir / "empty.yaml").write_bytes(content)
    proc = orch.run("run", "empty.yaml")
    _clean_refusal(proc, "empty.yaml: plan ", "expected a mapping with a 'tasks' list")
    _no_run_created(orch)


def _python_for_nobody() -> str:
    """A Python the unprivileged user can execute (ours may live under /root)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        probe = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", candidate, "-c", ""],
            capture_output=True,
        )
        if probe.returncode == 0:
            return candidate
    return ""


def test_unreadable_plan_is_refused(orch: Orch) -> None:
    # chmod 000 does not stop root: as root, read it as user nobody through setpriv.
    shared = Path(tempfile.mkdtemp(prefix="orch-unreadable-"))
    try:
        shared.chmod(0o755)
        plan = shared / "plan.yaml"
        plan.write_text('tasks:\n  - id: a\n    cmd: ["true"]\n')
        plan.chmod(0)
        argv = ["-m", "orch", "validate", str(plan)]
        if os.geteuid() != 0:
            command = [sys.executable, *argv]
        else:
            python = _python_for_nobody() if shutil.which("setpriv") else ""
            if not python:
                pytest.skip("running as root without setpriv or a Python user nobody can run")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python]
            command += argv
        proc = subprocess.run(
            command, cwd=str(shared), env=orch_env(), capture_output=True, text=True, timeout=60
        )
        _clean_refusal(proc, f"{plan}: cannot read plan: permission denied")
    finally:
        shutil.rmtree(shared)


# ------------------------------------------------------------------------ run ids, paths


def _exit_code(argv: List[str]) -> int:
    err, out = io.StringIO(), io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse refusals
            code = int(exit_.code or 0)
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue()
    assert err.getvalue().strip(), argv
    return code


BAD_RUN_IDS = ["a/b", "../x", "..", "/etc", "20260101_000000_abcdef/..", "x\0y", "\0", "x" * 10_000]


@pytest.mark.parametrize("bad", BAD_RUN_IDS, ids=lambda s: repr(s[:12]))
def test_bad_run_ids_exit_2_in_process(orch: Orch, bad: str) -> None:
    # argv cannot carry NUL, so these go through orch.cli.main directly.
    home = str(orch.home)
    for command in (["status"], ["status", "--json"], ["logs"], ["cancel"], ["resume"]):
        assert _exit_code([command[0], bad, *command[1:], "--home", home]) == 2, command
    assert not orch.home.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "plan\0.yaml"],
        ["run", "plan\0.yaml"],
        ["graph", "x\0"],
        ["graph", "20260101_000000_abcdef\0"],
        ["list", "--home", "ho\0me"],
        ["run", "plan.yaml", "--workdir", "w\0"],
        ["run", "plan.yaml", "--home", "h\0"],
    ],
)
def test_nul_in_a_path_argument_exits_2(orch: Orch, argv: List[str]) -> None:
    orch.plan(_tasks_yaml(["  - id: a", '    cmd: ["true"]']))
    cwd = os.getcwd()
    os.chdir(orch.workdir)
    try:
        assert _exit_code(argv) == 2
    finally:
        os.chdir(cwd)
    assert not (orch.workdir / ".orch").exists()
