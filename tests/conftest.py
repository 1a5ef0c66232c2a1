"""Shared helpers: run orch as a real subprocess, read its run state, write plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
PYTHON = sys.executable


def orch_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ORCH_HOME", None)
    env["NO_COLOR"] = "1"
    env.setdefault("ORCH_GRACE_SEC", "1")
    if extra:
        env.update(extra)
    return env


class Orch:
    """Runs ``python -m orch`` in a scratch workdir with a private home."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home = workdir / "home"
        self._started: List[subprocess.Popen[str]] = []

    def close(self) -> None:
        """End what ``popen`` started and close its pipes (warnings are errors here)."""
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def run(
        self, *args: str, timeout: float = 120, env: Optional[Dict[str, str]] = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "orch", *args, *self._home_args(args)],
            cwd=str(self.workdir),
            env=orch_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [PYTHON, "-m", "orch", *args, *self._home_args(args)],
            cwd=str(self.workdir),
            env=orch_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._started.append(proc)
        return proc

    def _home_args(self, args: Any) -> List[str]:
        if not args or args[0] in ("validate",) or "--home" in args:
            return []
        return ["--home", str(self.home)]

    def plan(self, text: str, name: str = "plan.yaml") -> str:
        path = self.workdir / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return name

    def state(self, run_id: str) -> Dict[str, Any]:
        from orch.store import read_state

        return read_state(str(self.home / "runs" / run_id))

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id


def run_id_of(proc_stdout: str) -> str:
    first = proc_stdout.splitlines()[0]
    assert first.startswith("run_id: "), proc_stdout
    return first[len("run_id: ") :]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[Orch]:
    runner = Orch(tmp_path)
    yield runner
    runner.close()


_PEAK_RSS_WRAPPER = """
import os, subprocess, sys
with open(sys.argv[1], "wb") as out:
    proc = subprocess.Popen(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
print(code, usage.ru_maxrss)
"""


def peak_rss_kib(
    argv: List[str], cwd: Path, env: Dict[str, str], stdout_path: Path
) -> Tuple[int, int]:
    """Exit code and peak RSS (KiB) of ``argv``, measured from a small fresh parent.

    Linux keeps ru_maxrss across exec, and a child forked straight from pytest starts from
    pytest's own (large) resident size; a small intermediate process makes the figure orch's.
    """
    done = subprocess.run(
        [PYTHON, "-c", _PEAK_RSS_WRAPPER, str(stdout_path), *argv],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    code, rss = done.stdout.split()
    return int(code), int(rss)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False
    return True


def assert_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} survived"
        time.sleep(0.02)


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
