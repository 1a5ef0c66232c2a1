"""Security promises, end to end: private run directories, outputs confined to the task's cwd,
ids that never become paths, and env values that orch never writes anywhere.

The task runs as the same user as orch, so these promises guard against accidents (a careless
pattern, a stray symlink, a secret in a log line or an error message), not against a task
bent on reading what its user can read anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import select
import shutil
import stat
import struct
import subprocess
import termios
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import PYTHON, Orch, orch_env, run_id_of

from orch.cli import main

# ------------------------------------------------------------------------------------ modes


BUILD = (
    "mkdir -p out/deep && echo a > out/a.txt && echo b > out/deep/b.txt && "
    "printf '#!/bin/sh\\n' > out/run.sh && chmod 755 out/run.sh && echo log-line"
)
MODES_PLAN = f"""
goal: "modes"
artifacts_dir: "shipped"
tasks:
  - id: build
    cmd: ["sh", "-c", {json.dumps(BUILD)}]
    outputs: ["out/**"]
  - id: flaky
    cmd: ["sh", "-c", "echo try >&2; [ -e flaky.ok ] || {{ touch flaky.ok; exit 1; }}"]
    retries: 1
    depends_on: [build]
  - id: broken
    cmd: ["no-such-program-here"]
"""


def _walk(root: Path) -> List[Tuple[Path, int]]:
    found = [(root, stat.S_IMODE(root.lstat().st_mode))]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found.append((path, stat.S_IMODE(path.lstat().st_mode)))
    return found


def test_every_directory_is_0700_and_every_file_0600_even_with_umask_0(orch: Orch) -> None:
    plan = orch.plan(MODES_PLAN)
    proc = subprocess.run(
        [PYTHON, "-m", "orch", "run", plan, "--home", str(orch.home)],
        cwd=str(orch.workdir),
        env=orch_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0),  # a careless umask must not open the run up
    )
    assert proc.returncode == 3, proc.stderr
    run_dir = orch.run_dir(run_id_of(proc.stdout))
    assert (run_dir / "artifacts" / "build" / "out" / "deep" / "b.txt").is_file()
    assert (run_dir / "logs" / "flaky.err.log").is_file()
    entries = _walk(orch.home)
    assert len(entries) > 20
    wrong = [
        (str(path.relative_to(orch.home)), oct(mode))
        for path, mode in entries
        if not path.is_symlink() and mode != (0o700 if path.is_dir() else 0o600)
    ]
    assert not wrong, wrong


# ---------------------------------------------------------------------- outputs, symlinks

SYMLINK_TASK = (
    "mkdir -p sub real && echo inside-content > real/in.txt && "
    "ln -s ../outside/secret.txt leak_file && ln -s /etc/passwd leak_abs && "
    "ln -s ../outside leak_dir && ln -s ../../outside sub/deeper && "
    "ln -s real/in.txt inside_link && ln -s real inside_dir"
)


def test_outputs_and_symlinks_never_reach_outside_the_tasks_cwd(orch: Orch) -> None:
    outside = orch.workdir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET-CONTENT\n")
    (orch.workdir / "task").mkdir()
    before = sorted(p.name for p in orch.workdir.parent.iterdir())
    patterns = [
        "**",
        "leak_*",
        "leak_dir/*",
        "leak_dir/secret.txt",
        "sub/deeper/secret.txt",
        "sub/**",
        "inside_link",
        "inside_dir/*",
    ]
    plan = orch.plan(
        f"""
        artifacts_dir: "collected"
        tasks:
          - id: linker
            cmd: ["sh", "-c", {json.dumps(SYMLINK_TASK)}]
            cwd: task
            outputs: {json.dumps(patterns)}
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    task = orch.state(run_id)["tasks"]["linker"]
    errors = "\n".join(task["artifact_errors"])
    assert "outside" in errors
    for root in (orch.run_dir(run_id) / "artifacts", orch.workdir / "collected"):
        contents = {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()
        }
        assert contents, root
        for name, data in contents.items():
            assert b"TOP-SECRET" not in data and b"root:" not in data, name
        assert contents["linker/inside_link"] == b"inside-content\n"
        assert not any(p.is_symlink() for p in root.rglob("*"))
    # Nothing was written beside the workdir, nor into the outside directory.
    assert sorted(p.name for p in orch.workdir.parent.iterdir()) == before
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


@pytest.mark.parametrize("pattern", ["../outside/secret.txt", "/etc/passwd", "a/../../x"])
def test_patterns_leaving_the_cwd_are_refused_before_anything_runs(
    orch: Orch, pattern: str
) -> None:
    plan = orch.plan(
        f'tasks:\n  - id: a\n    cmd: ["touch", "ran"]\n    outputs: [{json.dumps(pattern)}]\n'
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 2 and "plan.yaml:4:" in proc.stderr, proc.stderr
    assert not (orch.workdir / "ran").exists()


# ------------------------------------------------------------------------- ids as paths


def test_crafted_task_ids_never_become_paths(orch: Orch) -> None:
    bad = ["../escape", "a/../../escape", "/abs", ".hidden", "-dash", "a\\b", "a b", "é"]
    lines = ["tasks:"]
    for task_id in bad:
        lines += [f"  - id: {json.dumps(task_id)}", '    cmd: ["touch", "ran"]']
    proc = orch.run("run", orch.plan("\n".join(lines) + "\n"))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == len(bad)
    assert not orch.home.exists() and not (orch.workdir / "ran").exists()
    assert not (orch.workdir.parent / "escape").exists()


def test_run_ids_never_reach_a_run_directory_outside_the_home(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["echo", "real-run-output"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    # A perfectly good run directory, but outside the home: no run id may lead to it.
    decoy = orch.workdir / "decoy"
    shutil.copytree(orch.run_dir(run_id), decoy / "runs" / run_id)
    snapshot = {p: p.read_bytes() for p in decoy.rglob("*") if p.is_file()}
    spellings = [
        f"../decoy/runs/{run_id}",
        f"../../decoy/runs/{run_id}",
        str(decoy / "runs" / run_id),
        f"{run_id}/../../../decoy/runs/{run_id}",
        f"./{run_id}",
        f"{run_id}/",
    ]
    for bad in spellings:
        for command in ("status", "logs", "cancel", "resume"):
            code, out = _in_process([command, bad, "--home", str(orch.home)])
            assert code == 2, (command, bad)
            assert "real-run-output" not in out
    assert {p: p.read_bytes() for p in decoy.rglob("*") if p.is_file()} == snapshot
    assert not (decoy / "runs" / run_id / "cancel").exists()


def _in_process(argv: List[str]) -> Tuple[int, str]:
    """``orch.cli.main(argv)``: (exit code, stdout); stderr must be a clean message."""
    err, out = io.StringIO(), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out.flush()
    assert "Traceback" not in err.getvalue() and err.getvalue().strip(), argv
    return code, out.buffer.getvalue().decode()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ env values

SECRETS = {
    "TOKEN_OK": "s3cret-ok-4f1d9a",
    "TOKEN_RETRY": "s3cret-retry-8b2c7e",
    "TOKEN_TIMEOUT": "s3cret-timeout-1a9f3d",
    "TOKEN_NOSTART": "s3cret-nostart-6e0b5c",
    "TOKEN_OUT": "s3cret-out-2d8e4f",
}

ENV_PLAN = f"""
goal: "keep secrets"
tasks:
  - id: ok
    cmd: ["sh", "-c", "printf %s \\"$TOKEN_OK\\" > got_ok.txt; echo done"]
    env: {{TOKEN_OK: "{SECRETS["TOKEN_OK"]}"}}
    outputs: ["got_*.txt"]
  - id: retry
    cmd: ["sh", "-c", "echo failing >&2; exit 3"]
    env: {{TOKEN_RETRY: "{SECRETS["TOKEN_RETRY"]}"}}
    retries: 1
    retry_backoff_sec: 0.1
  - id: slow
    cmd: ["sleep", "30"]
    env: {{TOKEN_TIMEOUT: "{SECRETS["TOKEN_TIMEOUT"]}"}}
    timeout_sec: 0.5
  - id: nostart
    cmd: ["no-such-program-xyz"]
    env: {{TOKEN_NOSTART: "{SECRETS["TOKEN_NOSTART"]}"}}
  - id: child
    cmd: ["true"]
    env: {{TOKEN_OUT: "{SECRETS["TOKEN_OUT"]}"}}
    depends_on: [retry]
"""


def _run_on_a_pty(orch: Orch, *args: str) -> Tuple[int, str, bytes]:
    """Run orch with stderr on a terminal (the live progress view); (exit, stdout, tty bytes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = orch_env({"TERM": "xterm-256color", "ORCH_GRACE_SEC": "1"})
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [PYTHON, "-m", "orch", *args, "--home", str(orch.home)],
        cwd=str(orch.workdir),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    screen = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read().decode()
    return proc.wait(timeout=60), out, bytes(screen)


def _assert_no_secret(where: str, data: bytes) -> None:
    for name, value in SECRETS.items():
        assert value.encode() not in data, f"{name}'s value appears in {where}"


def test_env_values_reach_the_task_and_nothing_that_orch_writes(orch: Orch) -> None:
    plan = orch.plan(ENV_PLAN)
    code, out, screen = _run_on_a_pty(orch, "run", plan)
    assert code == 3, screen.decode(errors="replace")
    assert b"\x1b[" in screen or b"\r" in screen, "expected the live view on a terminal"
    run_id = run_id_of(out)
    # The value did reach the task's environment.
    assert (orch.workdir / "got_ok.txt").read_text() == SECRETS["TOKEN_OK"]
    outputs: Dict[str, bytes] = {"run stdout": out.encode(), "live progress": screen}
    resume_code, resume_out, resume_screen = _run_on_a_pty(orch, "resume", run_id)
    assert resume_code == 3
    outputs["resume progress"] = resume_screen + resume_out.encode()
    for args in (
        ["status", run_id],
        ["status", run_id, "--json"],
        ["list"],
        ["list", "--json"],
        ["logs", run_id],
        ["logs", run_id, "--task", "retry", "--attempt", "2"],
        ["graph", run_id],
        ["graph", run_id, "--format", "dot"],
        ["run", plan, "--dry-run"],
        ["validate", plan],
    ):
        proc = orch.run(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        outputs[" ".join(args[:2])] = (proc.stdout + proc.stderr).encode()
    # Every file orch wrote in the run directory; the plan snapshot is the user's own file.
    for path in orch.run_dir(run_id).rglob("*"):
        if path.is_file() and path.name != "plan.yaml":
            outputs[str(path.relative_to(orch.home))] = path.read_bytes()
    assert (orch.run_dir(run_id) / "artifacts" / "ok" / "got_ok.txt").is_file()
    for where, data in outputs.items():
        if where.endswith("got_ok.txt"):
            continue  # the task's own output, collected as asked
        _assert_no_secret(where, data)


def test_validation_errors_about_env_never_echo_the_value(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: a
            cmd: ["true"]
            env:
              PIN: 98765432101
              FLAG: true
              RATIO: 31415.92653
              LISTED: [s3cret-in-a-list]
              MAPPED: {k: s3cret-in-a-map}
              "BAD=NAME": "s3cret-bad-name-value"
              NUL: "s3cret-nul\\0value"
              HUGE: "%s"
        """
        % ("H" * 200_000 + "\\0")
    )
    proc = orch.run("validate", plan)
    assert proc.returncode == 2
    problems = proc.stderr.strip().splitlines()
    assert len(problems) == 8, proc.stderr[:3000]
    for value in ("98765432101", "31415.92653", "s3cret", "HHHHHHHH"):
        assert value not in proc.stderr, value
    assert "'PIN'" in proc.stderr and "'BAD=NAME'" in proc.stderr  # names are fine to show
    assert len(proc.stderr) < 2000


def test_yaml_errors_inside_env_values_do_not_echo_them(orch: Orch) -> None:
    for number, value in enumerate(
        ['"s3cret-value\\q"', "s3cret-value: x", "'s3cret-value", "s3cret-value\tx", "9" * 5000]
    ):
        name = f"bad{number}.yaml"
        orch.plan(f'tasks:\n  - id: a\n    cmd: ["true"]\n    env:\n      K: {value}\n', name)
        proc = orch.run("validate", name)
        assert proc.returncode == 2 and f"{name}:5:" in proc.stderr, proc.stderr
        assert "s3cret-value" not in proc.stderr and "9" * 50 not in proc.stderr, proc.stderr
