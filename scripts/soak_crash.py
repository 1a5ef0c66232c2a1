#!/usr/bin/env python3
"""Crash-consistency soak: SIGKILL orch at random moments, resume until done, check the rest.

    python3 scripts/soak_crash.py [--iterations N] [--seed S] [--workdir DIR]

Each iteration starts `orch run` on a small DAG of short tasks that append START and END
lines (task id, attempt, pid) to a counter file, SIGKILLs orch at a random moment, then
resumes (SIGKILLing some resumes too) until the run succeeds. After every session it asserts:
the state is readable and unowned, a task recorded SUCCESS never ran again, no two instances
of a task ever ran at once (leftovers are ended before anything runs again); at the end:
every task is SUCCESS, its successful attempt wrote the last line, and no process of the run
is alive. The seed is printed so that a failure can be replayed (timing still varies).

tests/test_crash.py runs the same loop, shorter. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from orch.store import list_runs, owner_alive, read_state  # noqa: E402

__all__ = [
    "CrashLoopFailure",
    "alive",
    "crash_loop",
    "live_processes_of_run",
    "main",
    "orch_env",
    "yaml_quote",
]

# `$$` is the task's leader: the pid orch records for the attempt. Each instance holds flock
# on lock.<id> for as long as it (or its `sleep`) lives: finding it taken means an earlier
# instance of the same task is still running, which a resume must have prevented by ending
# the leftovers first. (Without flock(1), as on macOS, there is no such check.)
_TASK = (
    "exec 9>>lock.{id}; if command -v flock >/dev/null && ! flock -n 9; then "
    'echo "OVERLAP {id} $ORCH_ATTEMPT $$" >> counter.txt; fi; '
    'echo "START {id} $ORCH_ATTEMPT $$" >> counter.txt; sleep {sleep}; '
    '{extra}echo "END {id} $ORCH_ATTEMPT $$" >> counter.txt'
)
# Fails on its first attempt ever, then succeeds: crashes land in retry backoffs too.
_FLAKY = "if [ ! -f flaky.ok ]; then touch flaky.ok; exit 1; fi; "
_MAX_SESSIONS = 12


class CrashLoopFailure(AssertionError):
    pass


def _plan(rng: random.Random) -> str:
    """A six-task DAG: two roots, a diamond, a flaky task with a retry."""
    deps = {"a": [], "b": [], "c": ["a"], "d": ["a", "b"], "e": ["c", "d"], "f": ["b"]}
    # Some plans have one slower task: a crash then leaves it running, and the resume
    # has to end it (and its `sleep` child) before it runs it again.
    slow = rng.choice(sorted(deps)) if rng.random() < 0.4 else None
    lines = ["tasks:"]
    for task_id, depends_on in deps.items():
        sleep = f"{rng.uniform(0.2, 0.5) if task_id == slow else rng.uniform(0.0, 0.04):.3f}"
        extra = _FLAKY if task_id == "f" else ""
        cmd = _TASK.format(id=task_id, sleep=sleep, extra=extra)
        lines.append(f"  - id: {task_id}")
        lines.append(f"    cmd: [sh, -c, {yaml_quote(cmd)}]")
        if depends_on:
            lines.append(f"    depends_on: [{', '.join(depends_on)}]")
        if task_id == "f":
            lines.append("    retries: 1")
            lines.append("    retry_backoff_sec: 0.05")
    return "\n".join(lines) + "\n"


def yaml_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def orch_env(root: Path, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of the soaked orch processes (``base``: default this process's)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ORCH_HOME", None)
    env["NO_COLOR"] = "1"
    env["ORCH_GRACE_SEC"] = "1"
    # Hundreds of orch start-ups: compile orch once, into a cache outside the checkout.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return not os.path.isdir("/proc/self")
    return raw[raw.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def live_processes_of_run(run_id: str) -> List[int]:
    """Live processes whose environment names the run (Linux; elsewhere always [])."""
    wanted = b"ORCH_RUN_ID=" + run_id.encode()
    found = []
    for name in os.listdir("/proc") if os.path.isdir("/proc/self") else []:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if wanted in environ and alive(int(name)):
            found.append(int(name))
    return found


class _Iteration:
    """One run of the plan, through crashes and resumes, with its invariants."""

    def __init__(self, home: Path, workdir: Path, rng: random.Random) -> None:
        self.home = home
        self.workdir = workdir
        self.rng = rng
        self.run_id: Optional[str] = None
        self.success: Dict[str, Tuple[int, int, int]] = {}  # task -> attempts, pid, lines
        self.kills = 0

    def session(self, args: List[str], kill: bool) -> Optional[int]:
        """One orch process; SIGKILLed at a random moment if ``kill``. Its exit code or None.

        Most kills land within 0.3 s after `run_id:` appeared (while tasks start, run and
        finish); some during start-up, before or while the run directory is created.
        """
        early = kill and self.rng.random() < 0.15
        delay = self.rng.uniform(0.0, 0.4 if early else 0.3) if kill else 120.0
        with open(self.workdir / "orch.err", "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orch", *args, "--home", str(self.home)],
                cwd=str(self.workdir),
                env=orch_env(self.home.parent),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )
            assert proc.stdout is not None
            with proc.stdout:
                if not early:
                    proc.stdout.readline()  # `run_id: ...`, or EOF if orch failed
                try:
                    return proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if not kill:
                raise CrashLoopFailure(f"orch {' '.join(args)} hung")
            self.kills += 1
            return None

    def find_run(self, before: List[str]) -> Optional[str]:
        runs = self.home / "runs"
        new = [n for n in os.listdir(runs) if n not in before] if runs.is_dir() else []
        new = [n for n in new if (runs / n / "state.json").exists()]
        return new[0] if new else None

    def check(self, when: str) -> Dict[str, object]:
        assert self.run_id is not None
        run_dir = str(self.home / "runs" / self.run_id)
        try:
            state = read_state(run_dir)
        except Exception as err:
            raise CrashLoopFailure(f"{when}: state unreadable: {err}") from None
        if owner_alive(run_dir):
            raise CrashLoopFailure(f"{when}: the owner of {self.run_id} is still alive")
        counter = self._counter()
        tasks = state["tasks"]
        for task_id, (attempts, pid, lines) in self.success.items():
            task = tasks[task_id]
            if task["status"] != "SUCCESS" or task["attempts"] != attempts:
                raise CrashLoopFailure(
                    f"{when}: task {task_id} was SUCCESS after attempt {attempts} (pid {pid}) "
                    f"and is now {task['status']} after {task['attempts']} attempts"
                )
            if len(counter.get(task_id, [])) != lines:
                raise CrashLoopFailure(
                    f"{when}: task {task_id} ran again after its recorded SUCCESS: "
                    f"{counter[task_id][lines:]}"
                )
        for task_id, task in tasks.items():
            if task["status"] == "SUCCESS" and task_id not in self.success:
                last = task["history"][-1]
                mine = [ln for ln in counter.get(task_id, []) if ln.split()[3] == str(last["pid"])]
                if last["exit_code"] != 0 or not mine or not mine[-1].startswith("END "):
                    raise CrashLoopFailure(
                        f"{when}: task {task_id} is SUCCESS but its attempt {last} wrote {mine}"
                    )
                entry = (task["attempts"], last["pid"], len(counter[task_id]))
                self.success[task_id] = entry
        return state

    def _counter(self) -> Dict[str, List[str]]:
        path = self.workdir / "counter.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        per_task: Dict[str, List[str]] = {}
        for line in lines:
            if line.startswith("OVERLAP "):
                raise CrashLoopFailure(f"two instances of a task ran at once: {line}")
            per_task.setdefault(line.split()[1], []).append(line)
        return per_task

    def finish(self, state: Dict[str, object]) -> None:
        assert self.run_id is not None
        tasks = state["tasks"]
        assert isinstance(tasks, dict)
        bad = {t: e["status"] for t, e in tasks.items() if e["status"] != "SUCCESS"}
        if bad or state["status"] != "SUCCESS":
            raise CrashLoopFailure(f"run ended {state['status']} with {bad}")
        counter = self._counter()
        for task_id, task in tasks.items():
            last = task["history"][-1]
            if counter[task_id][-1] != f"END {task_id} {last['attempt']} {last['pid']}":
                raise CrashLoopFailure(
                    f"task {task_id}: something ran after its SUCCESS: {counter[task_id]}"
                )
        deadline = time.monotonic() + 5
        pids = [h["pid"] for e in tasks.values() for h in e["history"] if h.get("pid")]
        while True:
            left = live_processes_of_run(self.run_id) + [p for p in pids if alive(p)]
            if not left:
                return
            if time.monotonic() > deadline:
                raise CrashLoopFailure(f"processes of the run still alive: {sorted(set(left))}")
            time.sleep(0.05)


def _one_iteration(home: Path, workdir: Path, rng: random.Random) -> _Iteration:
    workdir.mkdir(parents=True)
    (workdir / "plan.yaml").write_text(_plan(rng))
    it = _Iteration(home, workdir, rng)
    runs = home / "runs"
    before = os.listdir(runs) if runs.is_dir() else []
    code = it.session(["run", "plan.yaml", "--max-parallel", str(rng.choice([2, 3]))], True)
    it.run_id = it.find_run(before)
    if it.run_id is None:
        list_runs(str(home))  # a run killed before it had a state must not break the listing
        return it
    if code is not None and code != 0:
        raise CrashLoopFailure(f"orch run exited {code}")
    state = it.check("after orch run")
    for number in range(_MAX_SESSIONS):
        if code == 0:
            it.finish(state)
            return it
        kill = number < 2 and rng.random() < 0.5
        args = ["resume", it.run_id]
        if rng.random() < 0.3:
            args.append("--failed-only")
        code = it.session(args, kill)
        if code is not None and code != 0:
            raise CrashLoopFailure(f"orch {' '.join(args)} exited {code}")
        state = it.check(f"after session {number + 2} ({' '.join(args)})")
    raise CrashLoopFailure(f"run not done after {_MAX_SESSIONS} resumes")


def crash_loop(
    root: Path, iterations: int, seed: int, say: Callable[[str], None] = print
) -> Tuple[int, int]:
    """Run the loop; returns (iterations with a run, SIGKILLs sent). Raises CrashLoopFailure."""
    say(f"crash loop: seed {seed}, {iterations} iterations, in {root}")
    rng = random.Random(seed)
    began = time.monotonic()
    home = root / "home"
    with_run = kills = 0
    for i in range(iterations):
        workdir = root / f"it{i:04d}"
        try:
            it = _one_iteration(home, workdir, rng)
        except CrashLoopFailure as err:
            raise CrashLoopFailure(f"seed {seed}, iteration {i} ({workdir}): {err}") from None
        with_run += it.run_id is not None
        kills += it.kills
    say(
        f"crash loop: {with_run} runs, {kills} SIGKILLs, all consistent "
        f"in {time.monotonic() - began:.1f}s (seed {seed})"
    )
    return with_run, kills


def soak_main(
    argv: Optional[List[str]],
    *,
    doc: str,
    iterations: int,
    prefix: str,
    soak: Callable[[Path, int, int], Any],
    failure: Type[Exception],
) -> int:
    """The command line of a soak: ``--iterations``, ``--seed`` (default: random) and
    ``--workdir`` (default: a fresh temporary directory, kept); exit 1 on ``failure``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--workdir", help="default: a fresh temporary directory, kept")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    root = Path(args.workdir or tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        soak(root, args.iterations, seed)
    except failure as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return soak_main(
        argv,
        doc=__doc__,
        iterations=500,
        prefix="orch-soak-",
        soak=crash_loop,
        failure=CrashLoopFailure,
    )


if __name__ == "__main__":
    sys.exit(main())
