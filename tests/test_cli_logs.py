"""`orch logs` end to end: exact bytes, headers and end lines, tails, --follow of every task."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

from conftest import PYTHON, Orch, orch_env, run_id_of, wait_for


def _logs(orch: Orch, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PYTHON, "-m", "orch", "logs", *args, "--home", str(orch.home)],
        cwd=str(orch.workdir),
        env=orch_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


def _reap(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc`` if it still runs, and close its pipes (ResourceWarning is an error)."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_one_stream_is_exactly_the_task_bytes_and_pipes_into_json_tool(orch: Orch) -> None:
    plan = orch.plan(
        r"""
        tasks:
          - id: emit
            cmd:
              - sh
              - -c
              - "echo progress >&2; printf '{\"ok\": true,\n \"n\": 2}\n';
                 exit $((ORCH_ATTEMPT == 1))"
            retries: 1
        """
    )
    run_id = run_id_of(orch.run("run", plan).stdout)
    log = Path(orch.state(run_id)["tasks"]["emit"]["stdout_path"]).read_bytes()
    assert log == b'{"ok": true,\n "n": 2}\n' * 2  # the task's bytes, no marker lines
    one = _logs(orch, run_id, "--task", "emit", "--stream", "stdout", "--attempt", "2")
    assert one.returncode == 0, one.stderr
    assert one.stdout == b'{"ok": true,\n "n": 2}\n'
    whole = _logs(orch, run_id, "--task", "emit", "--stream", "stdout")
    assert whole.stdout == log
    assert _logs(orch, run_id, "--task", "emit", "--stream", "stderr").stdout == b"progress\n" * 2
    # A real pipe, as a user types it.
    pipeline = (
        f"{PYTHON} -m orch logs {run_id} --task emit --stream stdout --attempt 2 "
        f"--home {orch.home} | {PYTHON} -m json.tool"
    )
    shown = subprocess.run(
        ["sh", "-c", pipeline], cwd=str(orch.workdir), env=orch_env(), capture_output=True
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"ok": True, "n": 2}


def test_headers_and_one_end_line_per_attempt(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: flaky
            cmd: ["sh", "-c", "echo try $ORCH_ATTEMPT; echo oops >&2; exit $((ORCH_ATTEMPT == 1))"]
            retries: 1
          - id: hang
            cmd: ["sh", "-c", "echo thinking...; exec sleep 30"]
            idle_timeout_sec: 0.5
          - id: gone
            cmd: ["no-such-program-for-orch"]
          - id: killed
            cmd: ["sh", "-c", "kill -9 $$"]
          - id: after
            depends_on: [gone]
            cmd: ["true"]
        """
    )
    run_id = run_id_of(orch.run("run", plan).stdout)
    proc = _logs(orch, run_id)
    assert proc.returncode == 0, proc.stderr
    text = re.sub(r"(exit \d|SIGKILL) after \d+\.\ds", r"\1 after Ns", proc.stdout.decode())
    assert text == (
        "==> task flaky attempt 1/2 stdout <==\n"
        "try 1\n"
        "==> task flaky attempt 1/2 stderr <==\n"
        "oops\n"
        "==> task flaky attempt 1/2: exit 1 after Ns <==\n"
        "\n"
        "==> task flaky attempt 2/2 stdout <==\n"
        "try 2\n"
        "==> task flaky attempt 2/2 stderr <==\n"
        "oops\n"
        "==> task flaky attempt 2/2: exit 0 after Ns <==\n"
        "\n"
        "==> task hang attempt 1/1 stdout <==\n"
        "thinking...\n"
        "==> task hang attempt 1/1: timed out after 0.5s (idle_timeout_sec) <==\n"
        "\n"
        "==> task gone attempt 1/1: not started: cannot start 'no-such-program-for-orch': "
        "No such file or directory <==\n"
        "\n"
        "==> task killed attempt 1/1: killed by SIGKILL after Ns <==\n"
        "\n"
        "==> task after: no attempts (SKIPPED: dependency_not_success) <==\n"
    )
    # --task with both streams gets headers too; --tail counts only the task's lines.
    tail = _logs(orch, run_id, "--task", "flaky", "--tail", "1")
    assert re.sub(r"(exit \d|SIGKILL) after \d+\.\ds", r"\1 after Ns", tail.stdout.decode()) == (
        "==> task flaky attempt 2/2 stdout <==\n"
        "try 2\n"
        "==> task flaky attempt 2/2 stderr <==\n"
        "oops\n"
        "==> task flaky attempt 2/2: exit 0 after Ns <==\n"
    )
    raw_tail = _logs(orch, run_id, "--task", "flaky", "--stream", "stdout", "--tail", "1")
    assert raw_tail.stdout == b"try 2\n"


def test_timestamps_need_follow(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    proc = _logs(orch, run_id, "--timestamps")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == "--timestamps needs --follow"


def test_follow_every_task_with_prefixes_until_the_run_ends(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: slow
            cmd:
              - sh
              - -c
              - "until [ -f go ]; do sleep 0.05; done;
                 for i in 1 2 3; do echo slow $i; sleep 0.2; done"
          - id: fast
            cmd:
              - sh
              - -c
              - "until [ -f go ]; do sleep 0.05; done;
                 for i in 1 2 3 4; do echo fast $i; echo err $i >&2; sleep 0.1; done;
                 printf partial"
          - id: last
            depends_on: [slow, fast]
            cmd: ["sh", "-c", "echo done"]
        """
    )
    runner = orch.popen("run", plan)
    follower = None
    try:
        assert runner.stdout is not None
        run_id = run_id_of(runner.stdout.readline())
        follower = subprocess.Popen(
            [PYTHON, "-m", "orch", "logs", run_id, "--follow", "--home", str(orch.home)],
            cwd=str(orch.workdir),
            env=orch_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.3)  # the follower is polling before any task prints
        (orch.workdir / "go").touch()
        out, err = follower.communicate(timeout=60)
        runner.communicate(timeout=60)
        assert runner.returncode == 0
    finally:
        for proc in (runner, follower):
            if proc is not None:
                _reap(proc)
    assert follower.returncode == 0, err
    lines = out.decode().splitlines()
    assert all(re.match(r"(slow|fast|last) \| ", line) for line in lines), lines

    def of(task: str) -> List[str]:
        return [line.split(" | ", 1)[1] for line in lines if line.startswith(task + " | ")]

    assert [x for x in of("slow") if not x.startswith("==>")] == ["slow 1", "slow 2", "slow 3"]
    fast = of("fast")
    assert [x for x in fast if x.startswith("fast")] == [f"fast {i}" for i in (1, 2, 3, 4)]
    assert [x for x in fast if x.startswith("err")] == [f"err {i}" for i in (1, 2, 3, 4)]
    assert "partial" in fast  # a last line without a newline is not lost
    assert re.fullmatch(r"==> task fast attempt 1/1: exit 0 after \d+\.\ds <==", fast[-1])
    assert of("last")[0] == "done"
    assert lines[-1].startswith("last | ==> task last attempt 1/1: exit 0 after")
    # The two tasks ran at once, and the follower showed them interleaved as they came.
    first_fast = lines.index("fast | fast 1")
    assert any(line.startswith("slow | slow") for line in lines[: first_fast + 8])
    assert lines.index("slow | slow 3") > first_fast


def test_follow_all_with_timestamps_and_a_finished_run(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["sh", "-c", "echo one; echo two"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    proc = _logs(orch, run_id, "--follow", "--timestamps")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
    assert re.fullmatch(rf"a \| {stamp} one", lines[0]), lines
    assert re.fullmatch(rf"a \| {stamp} two", lines[1]), lines
    assert lines[2].startswith("a | ==> task a attempt 1/1: exit 0 after ")


def test_follow_one_task_still_works_and_ends_with_it(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: a
            cmd: ["sh", "-c", "echo a1; until [ -f go ]; do sleep 0.05; done; echo a2"]
          - id: b
            cmd: ["sh", "-c", "until [ -f go2 ]; do sleep 0.05; done"]
        """
    )
    runner = orch.popen("run", plan)
    try:
        assert runner.stdout is not None
        run_id = run_id_of(runner.stdout.readline())
        log = orch.run_dir(run_id) / "logs" / "a.out.log"
        wait_for(lambda: log.exists() and log.read_bytes() == b"a1\n")
        follower = subprocess.Popen(
            [PYTHON, "-m", "orch", "logs", run_id, "--follow", "--task", "a", "--stream",
             "stdout", "--home", str(orch.home)],
            cwd=str(orch.workdir), env=orch_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        (orch.workdir / "go").touch()
        out, err = follower.communicate(timeout=60)  # returns while b still runs
        assert follower.returncode == 0, err
        assert out == b"a1\na2\n"
        assert runner.poll() is None
        (orch.workdir / "go2").touch()
        runner.communicate(timeout=60)
        assert runner.returncode == 0
    finally:
        _reap(runner)


def test_logs_of_an_unknown_task_in_the_last_run(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: build\n    cmd: ["true"]\n')
    orch.run("run", plan)
    proc = _logs(orch, "last", "--task", "biuld")
    assert proc.returncode == 2
    assert b"unknown task 'biuld'" in proc.stderr and b"did you mean 'build'?" in proc.stderr
    assert sys.executable  # the suite's interpreter runs orch
