"""Bugs and reliability holes found reviewing 0.1's architecture; each test failed before."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, Orch, alive, assert_gone, orch_env, run_id_of, wait_for

from orch import cli, store

LINUX = sys.platform.startswith("linux")


def test_plan_env_cannot_override_orchs_own_variables(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: t
            cmd: ["sh", "-c", "echo $ORCH_RUN_ID $ORCH_RUN_DIR $ORCH_TASK_ID"]
            env: {ORCH_RUN_ID: fake, ORCH_RUN_DIR: /tmp/fake, ORCH_TASK_ID: other}
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    out = Path(orch.state(run_id)["tasks"]["t"]["stdout_path"]).read_text()
    assert out == f"{run_id} {orch.run_dir(run_id)} t\n"


def test_internal_error_is_one_line_and_orch_debug_adds_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: Any) -> int:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "_cmd_list", boom)
    monkeypatch.delenv("ORCH_DEBUG", raising=False)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "orch: internal error: RuntimeError: kaboom"
    assert "Traceback" not in err
    monkeypatch.setenv("ORCH_DEBUG", "1")
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "orch: internal error: RuntimeError: kaboom"
    assert "Traceback (most recent call last)" in err and "kaboom" in err.splitlines()[-1]


# ---------------------------------------------------------------------------- crash recovery


@pytest.mark.skipif(not LINUX, reason="the leftover group rule is Linux's pid semantics")
def test_resume_ends_an_env_less_grandchild_left_in_the_attempts_group(orch: Orch) -> None:
    # The grandchild drops the environment (env -i), so the ORCH_RUN_ID hunt cannot see it,
    # and its leader is gone: only the recorded group number still names it.
    script = (
        "test -f up && exit 0; "
        "env -i /bin/sh -c 'echo $$ > gc.pid; exec sleep 60' & sleep 0.3; touch up; sleep 60"
    )
    plan = orch.plan(
        f"""
        tasks:
          - id: t
            cmd: ["sh", "-c", {json.dumps(script)}]
        """
    )
    runner = orch.popen("run", plan)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    wait_for(lambda: (orch.workdir / "up").exists())
    leader = orch.state(run_id)["tasks"]["t"]["history"][-1]["pid"]
    runner.kill()
    runner.wait()
    gc = int((orch.workdir / "gc.pid").read_text())
    os.kill(leader, signal.SIGKILL)  # the leader goes; its grandchild stays in the group
    wait_for(lambda: not alive(leader))
    assert alive(gc) and os.getpgid(gc) == leader
    try:
        proc = orch.run("resume", run_id, "--failed-only", timeout=60, env={"ORCH_GRACE_SEC": "1"})
        assert proc.returncode == 0, proc.stderr
        assert_gone(gc)
    finally:
        if alive(gc):
            os.kill(gc, signal.SIGKILL)


# ---------------------------------------------------------------------------- damaged state


def _finished_run(orch: Orch) -> str:
    proc = orch.run("run", orch.plan("tasks:\n  - {id: ok, cmd: 'true'}\n"))
    assert proc.returncode == 0, proc.stderr
    return run_id_of(proc.stdout)


@pytest.mark.parametrize(
    "record",
    [
        {"t": "ok", "s": {"status": 7}},
        {"t": "ok", "s": {"status": "BOGUS"}},
        {"t": "ok", "s": {"attempts": "3"}},
        {"t": "ok", "h": "not an attempt"},
        {"t": "ok", "hs": {"exit_code": "zero"}},
        {"r": {"tasks": {}}},
        {"r": {"status": ["RUNNING"]}},
        {"r": "not fields"},
        {"t": ["ok"], "s": {}},
        {"x": 1},
        {"t": "ok"},
        # One record may carry a new attempt, its fields and the task's: each part is checked.
        {"t": "ok", "h": {"attempt": 2}, "s": {"status": "BOGUS"}},
        {"t": "ok", "h": {"attempt": "2"}, "s": {"status": "RUNNING"}},
        {"t": "ok", "hs": {"exit_code": "zero"}, "s": {"status": "SUCCESS"}},
    ],
)
def test_a_journal_record_of_the_wrong_shape_is_refused_and_never_written_back(
    orch: Orch, record: Any
) -> None:
    good = _finished_run(orch)
    bad = _finished_run(orch)
    run_dir = orch.run_dir(bad)
    seq = json.loads((run_dir / "state.json").read_bytes())["journal_seq"]
    (run_dir / "journal.jsonl").write_text(json.dumps({**record, "n": seq + 1}) + "\n")
    before = (run_dir / "state.json").read_bytes()
    for args in (["status", bad], ["status", bad, "--json"], ["resume", bad], ["logs", bad]):
        proc = orch.run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "damaged journal at line 1" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    listing = orch.run("list")
    assert listing.returncode == 0 and good in listing.stdout
    assert f"skipped run {bad}" in listing.stderr
    assert (run_dir / "state.json").read_bytes() == before


@pytest.mark.parametrize("which", ["state.json", "journal.jsonl"])
def test_a_fifo_in_place_of_a_state_file_is_refused_not_waited_on(orch: Orch, which: str) -> None:
    run_id = _finished_run(orch)
    path = orch.run_dir(run_id) / which
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    for args in (["status", run_id], ["list"]):
        t0 = time.monotonic()
        proc = orch.run(*args, timeout=20)
        assert time.monotonic() - t0 < 10
        assert "not a regular file" in proc.stdout + proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("which", ["state.json", "journal.jsonl"])
def test_a_symlink_in_place_of_a_state_file_is_refused(orch: Orch, which: str) -> None:
    run_id = _finished_run(orch)
    path = orch.run_dir(run_id) / which
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")
    proc = orch.run("status", run_id, timeout=20)
    assert proc.returncode == 2 and "symbolic link" in proc.stderr, proc.stderr


def test_an_oversized_state_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b" " * 2048)
    monkeypatch.setattr(store, "_MAX_STATE_BYTES", 1024)
    with pytest.raises(store.StateError, match="too large"):
        store._read_regular(str(path), 1024)


def test_run_directory_deleted_under_a_live_run_stops_it_with_one_line(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - {id: first, cmd: ["sh", "-c", "touch up; sleep 2"]}
          - {id: second, cmd: ["sleep", "1"], depends_on: [first]}
        """
    )
    runner = orch.popen("run", plan)
    assert runner.stdout is not None and runner.stderr is not None
    run_id = run_id_of(runner.stdout.readline())
    wait_for(lambda: (orch.workdir / "up").exists())
    import shutil

    shutil.rmtree(orch.run_dir(run_id))
    t0 = time.monotonic()
    code = runner.wait(timeout=30)
    err = runner.stderr.read()
    assert time.monotonic() - t0 < 5
    assert code == 2
    assert f"its directory {orch.run_dir(run_id)} was removed while the run was alive" in err
    assert "Traceback" not in err
    assert not orch.run_dir(run_id).exists()  # never recreated


def test_a_full_disk_at_creation_leaves_no_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    real = store.write_file_atomic

    def full(path: str, data: Any) -> None:
        if path.endswith("state.json"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(path, data)

    monkeypatch.setattr(store, "write_file_atomic", full)
    with pytest.raises(store.StateError, match="No space left on device"):
        store.create_run(str(home), b"tasks: []\n", lambda run_id, run_dir: {"tasks": {}})  # type: ignore[arg-type,return-value]
    assert os.listdir(home / "runs") == []
    assert store.list_runs(str(home)) == ([], [])


def test_stale_temp_files_are_removed_on_the_next_open(orch: Orch) -> None:
    run_id = _finished_run(orch)
    stale = orch.run_dir(run_id) / "state.json.tmp99999"
    stale.write_bytes(b"half a state")
    proc = orch.run("resume", run_id, "--failed-only")
    assert proc.returncode == 0
    # A finished run with nothing to do still takes the run, so the leftover goes.
    assert not stale.exists()


# ---------------------------------------------------------------------------- descriptors


@pytest.mark.skipif(not LINUX, reason="ulimit semantics checked on Linux")
def test_max_parallel_is_lowered_to_what_the_descriptor_limit_allows(orch: Orch) -> None:
    tasks = "\n".join(f"  - {{id: t{i}, cmd: ['sleep', '0.2']}}" for i in range(100))
    plan = orch.plan(f"tasks:\n{tasks}\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.run(
        [PYTHON, "-m", "orch", "run", plan, "--max-parallel", "100", "--home", str(orch.home)],
        cwd=str(orch.workdir),
        env=orch_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [line for line in proc.stderr.splitlines() if "open-file limit" in line]
    assert len(notes) == 1 and "--max-parallel 100" in notes[0], notes


def test_a_record_of_an_attempt_and_its_task_replays_in_order(orch: Orch) -> None:
    """A start (new attempt + RUNNING) and an end (attempt result + status) are one record
    each; replay applies the attempt parts before the task's fields."""
    run_id = _finished_run(orch)
    run_dir = orch.run_dir(run_id)
    seq = json.loads((run_dir / "state.json").read_bytes())["journal_seq"]
    records = [
        {"t": "ok", "h": {"attempt": 2, "pid": None}, "s": {"status": "RUNNING", "attempts": 2}},
        {"t": "ok", "hs": {"exit_code": 3, "ended_at": "2026-01-01T00:00:00+00:00"}},
        {"t": "ok", "hs": {"error": "boom"}, "s": {"status": "FAILED", "exit_code": 3}},
    ]
    lines = [json.dumps({**r, "n": seq + i}) for i, r in enumerate(records, 1)]
    (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")
    proc = orch.run("status", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    task = json.loads(proc.stdout)["tasks"]["ok"]
    assert (task["status"], task["attempts"], task["exit_code"]) == ("FAILED", 2, 3)
    assert [h["attempt"] for h in task["history"]] == [1, 2]
    assert task["history"][1]["exit_code"] == 3 and task["history"][1]["error"] == "boom"


def test_updated_at_is_the_time_of_the_last_change(orch: Orch) -> None:
    """updated_at is recorded at most once a second, and fresh with every snapshot: a
    finished run's is never older than its last task's end."""
    plan = "tasks:\n" + "".join(f"  - {{id: t{i}, cmd: 'true'}}\n" for i in range(20))
    proc = orch.run("run", orch.plan(plan))
    assert proc.returncode == 0, proc.stderr
    state = json.loads((orch.run_dir(run_id_of(proc.stdout)) / "state.json").read_bytes())
    last_end = max(t["ended_at"] for t in state["tasks"].values())
    assert state["updated_at"] >= last_end >= state["started_at"]
