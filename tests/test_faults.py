"""Injected faults: full disk, read-only home, rude tasks, crowds, concurrent readers and runs.

The invariants: orch ends with a clear message (never a traceback), the recorded state stays
readable by ``orch status`` and usable by ``orch resume``, no process of a task's group outlives
its timeout or cancel, and nothing one run does leaks into another.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from conftest import PYTHON, Orch, orch_env, run_id_of

from orch.store import read_state

GRACE = {"ORCH_GRACE_SEC": "1"}


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an init may be slow to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True  # no /proc (macOS): kill(0) is all there is
    return state not in ("Z", "X")


def _assert_all_gone(pids: List[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError(f"{len(left)} processes survived, e.g. {left[:5]}")


def _wait_for(predicate: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _pids(path: Path) -> List[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- small disks


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    """A small tmpfs at ``path``, or skip: mounting needs root and a kernel that allows it."""
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount_ro(path: Path) -> None:
    proc = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")


FILL_PLAN = """
tasks:
  - id: spam
    cmd: ["sh", "-c", "[ -e filled ] && exit 0; touch filled; sleep 0.5; head -c 5000000 /dev/zero"]
  - id: slow
    cmd: ["sh", "-c", "[ -e slowed ] && exit 0; touch slowed; echo $$ > slow.pid; sleep 20"]
  - id: after
    cmd: ["echo", "after"]
    depends_on: [spam]
"""


def test_disk_full_ends_the_run_cleanly_and_it_resumes_once_space_is_back(orch: Orch) -> None:
    disk = orch.workdir / "disk"
    with tmpfs(disk, "2m"):
        home = str(disk / "home")
        plan = orch.plan(FILL_PLAN)
        began = time.monotonic()
        proc = orch.run("run", plan, "--home", home, env=GRACE, timeout=60)
        elapsed = time.monotonic() - began
        _no_traceback(proc)
        assert proc.returncode not in (0, 1), proc.stderr
        assert "No space left on device" in proc.stderr
        # The state can no longer be recorded: orch ends the running task instead of waiting
        # 20 s for it unrecorded.
        assert elapsed < 12, f"{elapsed:.1f}s"
        _assert_all_gone(_pids(orch.workdir / "slow.pid"))
        run_id = run_id_of(proc.stdout)
        run_dir = disk / "home" / "runs" / run_id
        assert not list(run_dir.glob("*.tmp*")), "a partial temp file is left taking space"
        status = orch.run("status", run_id, "--home", home)
        assert status.returncode == 0, status.stderr
        assert "spam" in status.stdout
        # Give the space back (the task's own log filled it): resume finishes the run.
        (run_dir / "logs" / "spam.out.log").write_bytes(b"")
        resumed = orch.run("resume", run_id, "--home", home, env=GRACE, timeout=60)
        assert resumed.returncode == 0, resumed.stderr
        state = read_state(str(run_dir))
        assert {t["status"] for t in state["tasks"].values()} == {"SUCCESS"}


def _limit_file_size(limit: int) -> None:
    # Ignoring SIGXFSZ turns the signal into EFBIG from write(), which orch must handle.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_file_size_limit_on_orchs_own_writes_ends_cleanly_and_state_stays_readable(
    orch: Orch,
) -> None:
    # The portable stand-in for a full disk (no mount needed): once state.json or the journal
    # would pass 10 kB, write() fails with EFBIG, possibly after a partial write.
    tasks = "".join(f'  - id: t{i}\n    cmd: ["sh", "-c", "sleep 0.05"]\n' for i in range(14))
    plan = orch.plan(f"tasks:\n{tasks}")
    proc = subprocess.run(
        [PYTHON, "-m", "orch", "run", plan, "--max-parallel", "1", "--home", str(orch.home)],
        cwd=str(orch.workdir),
        env=orch_env(GRACE),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: _limit_file_size(10_000),
    )
    _no_traceback(proc)
    assert proc.returncode not in (0, 1), proc.stderr
    assert "File too large" in proc.stderr
    run_id = run_id_of(proc.stdout)
    assert not list(orch.run_dir(run_id).glob("*.tmp*")), "a partial temp file is left"
    for args in (["status", run_id], ["status", run_id, "--json"], ["list"]):
        shown = orch.run(*args)
        assert shown.returncode == 0, shown.stderr
    assert json.loads(orch.run("status", run_id, "--json").stdout)["run_id"] == run_id
    resumed = orch.run("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert orch.state(run_id)["status"] == "SUCCESS"


def test_read_only_home_can_be_read_but_not_written(orch: Orch) -> None:
    disk = orch.workdir / "rohome"
    with tmpfs(disk, "8m"):
        home = str(disk / "home")
        plan = orch.plan('tasks:\n  - id: a\n    cmd: ["echo", "hello"]\n')
        first = orch.run("run", plan, "--home", home)
        assert first.returncode == 0, first.stderr
        run_id = run_id_of(first.stdout)
        _remount_ro(disk)
        for args in (
            ["status", run_id],
            ["status", run_id, "--json"],
            ["list"],
            ["logs", run_id],
            ["graph", run_id],
        ):
            proc = orch.run(*args, "--home", home)
            assert proc.returncode == 0, (args, proc.stderr)
        assert "hello" in orch.run("logs", run_id, "--home", home).stdout
        for args in (["run", plan], ["resume", run_id]):
            proc = orch.run(*args, "--home", home)
            _no_traceback(proc)
            assert proc.returncode == 2, (args, proc.stderr)
            assert "Read-only file system" in proc.stderr


# ------------------------------------------------------------------------------ rude tasks


def test_task_that_closes_stdout_and_stderr_early_still_succeeds(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: closer
            cmd: ["sh", "-c", "echo before; exec 1>&- 2>&-; sleep 0.3; echo later > closed.txt"]
          - id: next
            cmd: ["echo", "next"]
            depends_on: [closer]
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    tasks = orch.state(run_id_of(proc.stdout))["tasks"]
    assert (orch.workdir / "closed.txt").read_text() == "later\n"
    assert Path(tasks["closer"]["stdout_path"]).read_text().endswith("before\n")
    assert tasks["next"]["status"] == "SUCCESS"


IGNORE_TERM = (
    "import os, signal, subprocess, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "kid = subprocess.Popen(['sleep', '60'])\n"  # SIG_IGN is inherited: the kid ignores TERM too
    "open('stubborn.pid', 'w').write(f'{os.getpid()} {kid.pid}')\n"
    "time.sleep(60)\n"
)


def test_task_ignoring_sigterm_is_still_ended_by_its_timeout(orch: Orch) -> None:
    plan = orch.plan(
        f"""
        tasks:
          - id: stubborn
            cmd: ["python3", "-c", {json.dumps(IGNORE_TERM)}]
            timeout_sec: 1
        """
    )
    began = time.monotonic()
    proc = orch.run("run", plan, env=GRACE)
    elapsed = time.monotonic() - began
    assert proc.returncode == 3, proc.stderr
    task = orch.state(run_id_of(proc.stdout))["tasks"]["stubborn"]
    assert task["status"] == "FAILED" and task["timed_out"] is True
    assert task["signal"] == signal.SIGKILL  # TERM was ignored; KILL after the grace
    assert elapsed < 15, f"{elapsed:.1f}s"
    _assert_all_gone(_pids(orch.workdir / "stubborn.pid"))


HUNDRED = "for i in $(seq 100); do sleep 60 & echo $! >> kids.pid; done; echo ready > ready; wait"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_task_with_100_children_leaves_none_after_timeout_or_cancel(orch: Orch, how: str) -> None:
    timeout = "    timeout_sec: 4\n" if how == "timeout" else ""
    plan = orch.plan(
        f"tasks:\n  - id: crowd\n    cmd: {json.dumps(['sh', '-c', HUNDRED])}\n{timeout}"
    )
    runner = orch.popen("run", plan, env=GRACE)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    _wait_for((orch.workdir / "ready").exists, 20, "the 100 children")
    kids = _pids(orch.workdir / "kids.pid")
    assert len(kids) == 100 and all(_alive(pid) for pid in kids)
    if how == "cancel":
        assert orch.run("cancel", run_id).returncode == 0
    assert runner.wait(timeout=30) == (4 if how == "cancel" else 3)
    _assert_all_gone(kids)
    task = orch.state(run_id)["tasks"]["crowd"]
    assert task["status"] == ("CANCELED" if how == "cancel" else "FAILED")


ESCAPE = (
    "setsid sh -c 'echo $$ > escaped.pid; sleep 30' < /dev/null > /dev/null 2>&1 & "
    "sleep 0.3; echo leader-done"
)


def test_process_that_leaves_its_session_survives_and_orch_does_not_wait_for_it(
    orch: Orch,
) -> None:
    # Documented limit: `setsid` takes a process out of the task's process group, out of
    # orch's reach (only a cgroup or a container could follow it). What orch does promise: it
    # does not hang waiting for it, and the task's outcome is its leader's.
    if not shutil.which("setsid"):
        pytest.skip("no setsid command here")
    plan = orch.plan(f"tasks:\n  - id: escaper\n    cmd: {json.dumps(['sh', '-c', ESCAPE])}\n")
    escaped: Optional[int] = None
    try:
        began = time.monotonic()
        proc = orch.run("run", plan, env=GRACE, timeout=60)
        elapsed = time.monotonic() - began
        _wait_for(lambda: _pids(orch.workdir / "escaped.pid"), 5, "the escaped pid")
        escaped = _pids(orch.workdir / "escaped.pid")[0]
        assert proc.returncode == 0, proc.stderr
        assert elapsed < 10, f"{elapsed:.1f}s"
        assert orch.state(run_id_of(proc.stdout))["tasks"]["escaper"]["status"] == "SUCCESS"
        assert _alive(escaped), "the escaped process is out of orch's reach and still runs"
    finally:
        if escaped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(escaped, signal.SIGKILL)


# ----------------------------------------------------------------------------------- crowds


def test_200_tasks_ending_at_the_same_instant_are_all_recorded(orch: Orch) -> None:
    # 1,000 at once takes ~20 s to start on 2 cores; 200 exercise the same burst of exits.
    if not shutil.which("flock"):
        pytest.skip("no flock command here")
    n = 200
    gate = orch.workdir / "gate.lock"
    gate.write_bytes(b"")
    lines = ["tasks:"]
    for i in range(n):
        lines += [f"  - id: t{i}", f'    cmd: ["flock", "-s", "{gate}", "true"]']
    lines += ["  - id: sink", '    cmd: ["true"]', "    depends_on: ["]
    lines[-1] += ", ".join(f"t{i}" for i in range(n)) + "]"
    plan = orch.plan("\n".join(lines) + "\n")
    with open(gate, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # every task blocks on the gate until it opens
        runner = orch.popen("run", plan, "--max-parallel", str(n))
        assert runner.stdout is not None
        run_id = run_id_of(runner.stdout.readline())

        def all_running() -> bool:
            try:
                tasks = orch.state(run_id)["tasks"]
            except Exception:
                return False
            return sum(t["status"] == "RUNNING" for t in tasks.values()) == n

        _wait_for(all_running, 60, f"{n} running tasks")
        time.sleep(0.5)  # let the last ones reach flock
    # The gate is open: all n exit together.
    assert runner.wait(timeout=120) == 0
    state = orch.state(run_id)
    assert state["status"] == "SUCCESS"
    tasks = state["tasks"]
    assert all(t["status"] == "SUCCESS" and t["attempts"] == 1 for t in tasks.values())
    assert all(len(t["history"]) == 1 for t in tasks.values())
    last_end = max(tasks[f"t{i}"]["ended_at"] for i in range(n))
    assert tasks["sink"]["started_at"] >= last_end


def _timed_run(orch: Orch, plan: str, hammer: bool) -> Dict[str, object]:
    calls: List[int] = []
    bad: List[str] = []
    stop = threading.Event()
    began = time.monotonic()
    runner = orch.popen("run", plan, "--max-parallel", "4")
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())

    def loop() -> None:
        while not stop.is_set():
            for args in (["status", run_id], ["status", run_id, "--json"]):
                proc = orch.run(*args)
                calls.append(proc.returncode)
                if proc.returncode != 0 or "Traceback" in proc.stderr:
                    bad.append(proc.stderr)
                elif args[-1] == "--json":
                    json.loads(proc.stdout)

    thread = threading.Thread(target=loop)
    if hammer:
        thread.start()
    try:
        assert runner.wait(timeout=120) == 0
    finally:
        stop.set()
        if hammer:
            thread.join()
    return {"wall": time.monotonic() - began, "calls": len(calls), "bad": bad}


def test_status_hammered_during_a_run_never_fails_nor_slows_it_much(orch: Orch) -> None:
    tasks = "".join(f'  - id: t{i}\n    cmd: ["sh", "-c", "sleep 0.02"]\n' for i in range(150))
    plan = orch.plan(f"tasks:\n{tasks}")
    quiet = _timed_run(orch, plan, hammer=False)
    busy = _timed_run(orch, plan, hammer=True)
    assert not busy["bad"], busy["bad"][:2]  # type: ignore[index]
    assert busy["calls"] >= 4  # type: ignore[operator]
    # Readers take no lock: only CPU contention (2 shared cores) can slow the run.
    assert busy["wall"] < 3 * quiet["wall"] + 5, (quiet, busy)  # type: ignore[operator]


def test_two_runs_in_one_home_at_once_do_not_interfere(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: a
            cmd: ["sh", "-c", "sleep 0.3; echo run=$ORCH_RUN_ID"]
          - id: b
            cmd: ["sh", "-c", "echo run=$ORCH_RUN_ID"]
            depends_on: [a]
        """
    )
    runners = [orch.popen("run", plan) for _ in range(2)]
    outs = [r.communicate(timeout=60) for r in runners]
    assert [r.returncode for r in runners] == [0, 0], [o[1] for o in outs]
    ids = [run_id_of(out) for out, _ in outs]
    assert ids[0] != ids[1]
    for run_id in ids:
        state = orch.state(run_id)
        assert state["status"] == "SUCCESS"
        for task in state["tasks"].values():
            assert Path(task["stdout_path"]).parent == orch.run_dir(run_id) / "logs"
            text = Path(task["stdout_path"]).read_text()
            assert f"run={run_id}" in text and text.count("run=") == 1
    listed = json.loads(orch.run("list", "--json").stdout)
    assert len(listed) == 2
