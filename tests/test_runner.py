"""The CommandRunner against real processes, real files and real signals."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from orch import procs
from orch.runner import AttemptResult, AttemptSpec, LocalRunner, Started

PY = sys.executable
LINUX = sys.platform.startswith("linux")


def _spec(
    tmp: Path,
    argv: Tuple[str, ...],
    *,
    attempt: int = 1,
    timeout: Optional[float] = 30.0,
    grace: float = 5.0,
    cwd: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
) -> AttemptSpec:
    return AttemptSpec(
        task_id="t1",
        attempt=attempt,
        argv=argv,
        cwd=str(tmp) if cwd is None else cwd,
        env=dict(os.environ) if env is None else env,
        stdout_path=str(tmp / "t1.out.log"),
        stderr_path=str(tmp / "t1.err.log"),
        timeout_sec=timeout,
        grace_sec=grace,
    )


def _py(code: str) -> Tuple[str, ...]:
    return (PY, "-c", textwrap.dedent(code))


def _run(spec: AttemptSpec) -> AttemptResult:
    runner = LocalRunner()
    try:
        started = runner.start(spec)
        if isinstance(started, AttemptResult):
            return started
        return _result(runner, spec.task_id)
    finally:
        runner.close()


def _result(runner: LocalRunner, task_id: str, within: float = 60.0) -> AttemptResult:
    end = time.monotonic() + within
    while time.monotonic() < end:
        for ended, result in runner.wait(0.1):
            assert ended == task_id
            return result
    raise AssertionError(f"{task_id} never ended")


def _started(runner: LocalRunner, spec: AttemptSpec) -> Started:
    started = runner.start(spec)
    assert isinstance(started, Started), started
    return started


def _gone(pid: int, within: float = 3.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie nobody reaps)."""
    end = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if LINUX and _proc_state(pid) in ("Z", "X", None):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.01)


def _proc_state(pid: int) -> Optional[str]:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def _wait_file(path: Path, within: float = 10.0) -> str:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if path.exists():
            text = path.read_text()
            if text.endswith("\n"):
                return text.strip()
        time.sleep(0.01)
    raise AssertionError(f"{path} never written")


# A leader that starts a grandchild in its own group, records the grandchild's pid, then
# does ``tail`` (Python code). The grandchild optionally ignores SIGTERM.
def _family(pid_file: Path, tail: str, grandchild_ignores_term: bool = False) -> Tuple[str, ...]:
    grandchild = "import signal, time\n"
    if grandchild_ignores_term:
        grandchild += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    grandchild += f"open({str(pid_file) + '.ready'!r}, 'w').write('ok\\n')\ntime.sleep(60)\n"
    return _py(
        f"""
        import os, subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", {grandchild!r}])
        while not os.path.exists({str(pid_file) + ".ready"!r}):
            time.sleep(0.01)
        with open({str(pid_file)!r}, "w") as f:
            f.write(str(p.pid) + "\\n")
        {tail}
        """
    )


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_is_reported(tmp_path: Path, code: int) -> None:
    result = _run(_spec(tmp_path, _py(f"import sys; sys.exit({code})")))
    assert result.exit_code == code
    assert result.signal is None
    assert not result.timed_out and not result.canceled and result.error is None
    assert result.pid is not None and result.pid > 0
    assert result.started_at <= result.ended_at


def test_stdin_is_at_eof(tmp_path: Path) -> None:
    # orch's own stdin is an open pipe here: a child inheriting it would block, not see EOF.
    spec = _spec(tmp_path, _py("import sys; print('read', len(sys.stdin.read()))"), timeout=10)
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        result = _run(spec)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert result.exit_code == 0 and not result.timed_out
    assert "read 0\n" in (tmp_path / "t1.out.log").read_text()


def test_env_is_exactly_the_given_environment(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ORCH_X": "secret value"}
    code = "import os, json; print(json.dumps(sorted(k for k in os.environ if k != 'LC_CTYPE')))"
    result = _run(_spec(tmp_path, _py(code), env=env))
    assert result.exit_code == 0
    out = (tmp_path / "t1.out.log").read_text().splitlines()[-1]
    assert out == '["ORCH_X", "PATH"]'


def test_logs_hold_exactly_the_output_with_offsets_across_attempts(tmp_path: Path) -> None:
    code = "import sys; print('out {0}'); print('err {0}', file=sys.stderr); sys.exit({1})"
    first = _run(_spec(tmp_path, _py(code.format(1, 2)), attempt=1))
    second = _run(_spec(tmp_path, _py(code.format(2, 0)), attempt=2))
    assert (first.exit_code, second.exit_code) == (2, 0)
    for name, off1, off2 in (
        ("t1.out.log", first.stdout_offset, second.stdout_offset),
        ("t1.err.log", first.stderr_offset, second.stderr_offset),
    ):
        data = (tmp_path / name).read_bytes()
        stream = "out" if name.endswith("out.log") else "err"
        # Nothing of orch's own in the file: the attempts' bytes, split at the offsets.
        assert data == f"{stream} 1\n{stream} 2\n".encode()
        assert (off1, off2) == (0, len(f"{stream} 1\n"))
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600


def test_timeout_kills_the_grandchild(tmp_path: Path) -> None:
    pid_file = tmp_path / "gc.pid"
    spec = _spec(tmp_path, _family(pid_file, "time.sleep(60)"), timeout=1.5, grace=1.0)
    t0 = time.monotonic()
    result = _run(spec)
    assert result.timed_out and not result.canceled
    assert result.exit_code is None and result.signal == signal.SIGTERM
    assert time.monotonic() - t0 < 1.5 + 1.0 + 5.0
    assert _gone(int(_wait_file(pid_file)))


def test_child_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('ready', flush=True)
        time.sleep(60)
        """
    t0 = time.monotonic()
    result = _run(_spec(tmp_path, _py(code), timeout=1.0, grace=0.5))
    elapsed = time.monotonic() - t0
    assert result.timed_out and result.signal == signal.SIGKILL
    assert 1.0 + 0.5 - 0.05 <= elapsed < 1.0 + 0.5 + 5.0
    assert "ready" in (tmp_path / "t1.out.log").read_text()


def test_grandchild_ignoring_sigterm_gets_the_grace_then_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "gc.pid"
    argv = _family(pid_file, "time.sleep(60)", grandchild_ignores_term=True)
    spec = _spec(tmp_path, argv, grace=0.8)
    runner = LocalRunner()
    _started(runner, spec)
    grandchild = int(_wait_file(pid_file))
    runner.cancel("t1")
    t0 = time.monotonic()
    result = _result(runner, "t1")
    runner.close()
    # The leader dies of the SIGTERM at once; the grandchild survives it until the SIGKILL.
    assert result.canceled and result.signal == signal.SIGTERM
    assert time.monotonic() - t0 >= 0.8 - 0.05
    assert _gone(grandchild)


def test_cancel_stops_the_group_quickly(tmp_path: Path) -> None:
    pid_file = tmp_path / "gc.pid"
    spec = _spec(tmp_path, _family(pid_file, "time.sleep(60)"), timeout=None, grace=1.0)
    runner = LocalRunner()
    started = _started(runner, spec)
    grandchild = int(_wait_file(pid_file))
    assert runner.wait(0.2) == []
    t0 = time.monotonic()
    runner.cancel("t1")
    result = _result(runner, "t1")
    runner.close()
    assert time.monotonic() - t0 < 0.5 + 1.0
    assert result.canceled and not result.timed_out and result.exit_code is None
    assert _gone(started.pid) and _gone(grandchild)


def test_cancel_right_after_start(tmp_path: Path) -> None:
    t0 = time.monotonic()
    runner = LocalRunner()
    _started(runner, _spec(tmp_path, ("sleep", "30")))
    runner.cancel("t1")
    result = _result(runner, "t1")
    runner.close()
    assert result.canceled and result.signal == signal.SIGTERM
    assert time.monotonic() - t0 < 3.0


def test_leftover_background_process_of_a_successful_leader_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "gc.pid"
    result = _run(_spec(tmp_path, _family(pid_file, "sys.exit(0)")))
    assert result.exit_code == 0 and not result.timed_out
    assert _gone(int(_wait_file(pid_file)))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGUSR1, signal.SIGTERM])
def test_death_by_signal(tmp_path: Path, sig: int) -> None:
    result = _run(_spec(tmp_path, _py(f"import os; os.kill(os.getpid(), {int(sig)})")))
    assert result.exit_code is None and result.signal == sig
    assert not result.timed_out and not result.canceled and result.error is None


def test_missing_executable(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, ("no-such-program-orch-test", "x")))
    _assert_start_error(
        tmp_path, result, "cannot start 'no-such-program-orch-test': No such file or directory"
    )


def test_missing_cwd(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    result = _run(_spec(tmp_path, ("true",), cwd=missing))
    _assert_start_error(tmp_path, result, f"cwd does not exist: {missing}")


def test_cwd_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = _run(_spec(tmp_path, ("true",), cwd=str(tmp_path / "file")))
    _assert_start_error(tmp_path, result, f"cwd is not a directory: {tmp_path / 'file'}")


def test_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = _run(_spec(tmp_path, (str(script),)))
    _assert_start_error(tmp_path, result, f"cannot start {str(script)!r}: Permission denied")


def _assert_start_error(tmp: Path, result: AttemptResult, error: str) -> None:
    assert result.error == error
    assert result.exit_code is None and result.signal is None and result.pid is None
    assert not result.timed_out and not result.canceled
    # The error is in the result; the logs hold the task's bytes only (here: none).
    for name in ("t1.out.log", "t1.err.log"):
        assert not (tmp / name).exists() or (tmp / name).read_bytes() == b""


def test_unwritable_log_is_an_error_not_an_exception(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ("true",))
    spec = dataclasses.replace(spec, stdout_path=str(tmp_path / "no" / "dir.log"))
    result = LocalRunner().start(spec)
    assert isinstance(result, AttemptResult)
    assert result.error is not None and result.error.startswith("cannot open log "), result
    assert result.exit_code is None and result.pid is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_parent_keeps_no_descriptors(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for i in range(5):
        _run(_spec(tmp_path, ("true",), attempt=i + 1))
    _run(_spec(tmp_path, ("no-such-program-orch-test",)))
    _run(_spec(tmp_path, ("sleep", "10"), timeout=0.2, grace=0.2))
    assert len(os.listdir("/proc/self/fd")) == before


def test_attempt_is_its_own_session_and_group(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ("sleep", "30"))
    runner = LocalRunner()
    started = _started(runner, spec)
    assert started.pid is not None
    assert os.getpgid(started.pid) == started.pid and os.getsid(started.pid) == started.pid
    # Linux finds a live leader after a crash by its environment: no identity read per start.
    expected = None if procs.HAVE_PROC else procs.identity(started.pid)
    assert started.identity == expected
    assert runner.running() == 1 and runner.wait(0.05) == []
    procs.killpg(started.pid, signal.SIGTERM)  # not orch's signal: a death by signal
    result = _result(runner, "t1")
    assert result.signal == signal.SIGTERM and not result.canceled and not result.timed_out
    assert runner.running() == 0
    assert not procs.killpg(started.pid, signal.SIGTERM)  # the group is gone: tolerated
    runner.close()


def test_process_identity(tmp_path: Path) -> None:
    mine = procs.identity(os.getpid())
    assert mine is not None and mine == procs.identity(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:
        ident = procs.identity(child.pid)
        assert ident is not None and ident != mine
    finally:
        child.kill()
        child.wait()
    assert procs.identity(child.pid) is None


def _rss_kib() -> int:
    if LINUX:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def test_big_output_goes_to_disk_not_memory(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    code = f"""
        import sys
        chunk = b'x' * 65535 + b'\\n'
        for _ in range({size} // 65536):
            sys.stdout.buffer.write(chunk)
        """
    before = _rss_kib()
    result = _run(_spec(tmp_path, _py(code)))
    after = _rss_kib()
    assert result.exit_code == 0
    assert os.path.getsize(tmp_path / "t1.out.log") - result.stdout_offset == size
    assert after - before < 20 * 1024, f"RSS grew by {after - before} KiB"


@pytest.mark.parametrize(
    "hide",
    [("pidfd_open",), ("pidfd_open", "waitid"), ("posix_spawn",), ("posix_spawn", "pidfd_open")],
)
def test_fallback_exit_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hide: Tuple[str, ...]
) -> None:
    # What Python 3.8 on Linux (no os.pidfd_open), platforms without waitid and without
    # posix_spawn (Popen then starts the attempt) go through.
    for name in hide:
        monkeypatch.delattr(os, name, raising=False)
    assert _run(_spec(tmp_path, _py("import sys; sys.exit(3)"))).exit_code == 3
    pid_file = tmp_path / "gc.pid"
    result = _run(_spec(tmp_path, _family(pid_file, "sys.exit(0)")))
    assert result.exit_code == 0 and _gone(int(_wait_file(pid_file)))
    result = _run(_spec(tmp_path, ("sleep", "30"), timeout=0.3, grace=0.5))
    assert result.timed_out and result.signal == signal.SIGTERM


# ---------------------------------------------------------------------------- idle timeout


def test_idle_timeout_ends_the_whole_group_within_a_second_of_the_limit(tmp_path: Path) -> None:
    pid_file = tmp_path / "gc.pid"
    argv = _family(pid_file, "print('one line', flush=True); time.sleep(60)")
    spec = dataclasses.replace(_spec(tmp_path, argv, grace=0.5), idle_timeout_sec=1.0)
    runner = LocalRunner()
    _started(runner, spec)
    grandchild = int(_wait_file(pid_file))
    wait_for_line = time.monotonic() + 10
    while b"one line" not in (tmp_path / "t1.out.log").read_bytes():
        assert time.monotonic() < wait_for_line
        time.sleep(0.01)
    silent_since = time.monotonic()
    result = _result(runner, "t1")
    runner.close()
    ended = time.monotonic() - silent_since
    assert result.timed_out and result.timed_out_by == "idle_timeout_sec"
    assert result.signal == signal.SIGTERM
    assert 1.0 - 0.1 <= ended < 1.0 + 1.0, ended
    assert _gone(grandchild)


def test_a_task_that_keeps_writing_is_never_idle(tmp_path: Path) -> None:
    code = "import time\nfor i in range(15):\n    print(i, flush=True)\n    time.sleep(0.2)\n"
    spec = dataclasses.replace(_spec(tmp_path, _py(code)), idle_timeout_sec=1.0)
    result = _run(spec)
    assert result.exit_code == 0 and not result.timed_out
    assert (tmp_path / "t1.out.log").read_text().split() == [str(i) for i in range(15)]


def test_output_on_stderr_alone_counts_as_activity(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "for i in range(8):\n"
        "    print(i, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.3)\n"
    )
    spec = dataclasses.replace(_spec(tmp_path, _py(code)), idle_timeout_sec=1.0)
    assert not _run(spec).timed_out


def test_wall_timeout_is_recorded_as_such(tmp_path: Path) -> None:
    spec = dataclasses.replace(
        _spec(tmp_path, ("sleep", "30"), timeout=0.5, grace=0.5), idle_timeout_sec=20.0
    )
    result = _run(spec)
    assert result.timed_out and result.timed_out_by == "timeout_sec"
