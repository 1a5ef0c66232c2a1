#!/usr/bin/env python3
"""Worktree crash soak: SIGKILL orch while it creates worktrees and commits, resume until done.

    python3 scripts/soak_worktrees.py [--iterations N] [--seed S] [--workdir DIR]

Each iteration makes a git repository with a few hundred files (so that a checkout takes a
moment), runs a plan of four `workspace: worktree` tasks (two in parallel, one started from
another's branch with worktree_from, one that fails its first attempt and is retried), and
SIGKILLs orch at random moments (a third of the time with its whole process group: its git
commands die mid-write too): most kills land while worktrees are being added, agents are
writing and attempts' changes are being committed. It then resumes (SIGKILLing some resumes
too) until the run succeeds.

Every agent appends a token line to a file in its worktree, then the same line to a log
outside the repository. After every session: the state is readable and unowned, the session
exited 0 or was killed (an unresumable run fails the soak). At the end: every task is
SUCCESS; every token the log holds is in the task's branch ("never a lost change"); the
worktree_from task's branch holds its source's work; every worktree is clean, registered,
unlocked, on its branch, and nothing was moved aside; every commit message is orch's; the
user's checkout (HEAD, index, files) is exactly as before; no process of the run is alive.
The seed is printed so that a failure can be replayed (timing still varies).

tests/test_workspace.py runs the same loop, shorter. Standard library only; needs git.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from orch.store import owner_alive, read_state  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The crash soak's harness: the YAML quoting, orch's environment, the liveness checks.
from soak_crash import (  # noqa: E402
    alive,
    live_processes_of_run,
    orch_env,
    soak_main,
    yaml_quote,
)

__all__ = ["WorktreeSoakFailure", "git_env", "main", "worktree_soak"]

# In the worktree first, then in the log: a token in the log was written to the worktree.
_AGENT = (
    'tok="$ORCH_TASK_ID $ORCH_ATTEMPT $$"; mkdir -p notes; '
    'echo "$tok" >> notes/$ORCH_TASK_ID.txt; echo "$tok" >> "$TOKENS"; '
    'for i in 1 2 3; do echo "$tok $i" > notes/$ORCH_TASK_ID.$i.txt; done; '
    "sleep {sleep}; "
    'echo "$tok end" >> notes/$ORCH_TASK_ID.txt; echo "$tok end" >> "$TOKENS"; {extra}'
)
# Fails on its first attempt ever, then succeeds (the marker lives outside the repository).
_FLAKY = 'if [ ! -f "$TOKENS.flaky" ]; then touch "$TOKENS.flaky"; exit 1; fi'
_MAX_SESSIONS = 14
_MESSAGE = re.compile(r"orch: (\S+) attempt ([0-9]+) \(run (\S+)\)\Z")


class WorktreeSoakFailure(AssertionError):
    pass


def git_env(root: Path) -> Dict[str, str]:
    """An environment in which git reads no user or system configuration (no identity:
    orch's fallback author is used) and no hook from outside the repository."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("GIT_"):
            del env[key]
    env.update(
        HOME=str(root),
        XDG_CONFIG_HOME=str(root / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        # The checks' own `git status` must not rewrite the index they compare.
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
    )
    return env


def _git(repo: Path, *args: str, env: Dict[str, str]) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise WorktreeSoakFailure(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _make_repo(repo: Path, rng: random.Random, env: Dict[str, str]) -> None:
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", env=env)
    for d in range(rng.randint(3, 6)):
        (repo / f"dir{d}").mkdir()
        for f in range(rng.randint(40, 80)):
            (repo / f"dir{d}" / f"file{f}.txt").write_text(f"{d} {f}\n" * 20)
    (repo / "README").write_text("soak\n")
    _git(repo, "add", "-A", env=env)
    identity = ("-c", "user.name=soak", "-c", "user.email=soak@localhost")
    _git(repo, *identity, "commit", "-q", "-m", "base", env=env)


def _plan(rng: random.Random, tokens: Path) -> str:
    deps = {"a": [], "b": [], "c": ["a"], "d": ["b"]}
    lines = ["defaults:", "  workspace: worktree", f"  env: {{TOKENS: {yaml_quote(str(tokens))}}}"]
    lines.append("tasks:")
    for task_id, depends_on in deps.items():
        sleep = f"{rng.uniform(0.0, 0.15):.3f}"
        extra = _FLAKY if task_id == "d" else "true"
        lines.append(f"  - id: {task_id}")
        lines.append(f"    cmd: [sh, -c, {yaml_quote(_AGENT.format(sleep=sleep, extra=extra))}]")
        if depends_on:
            lines.append(f"    depends_on: [{', '.join(depends_on)}]")
        if task_id == "c":
            lines.append("    worktree_from: a")
        if task_id == "d":
            lines.append("    retries: 1")
    return "\n".join(lines) + "\n"


class _Iteration:
    def __init__(self, root: Path, workdir: Path, rng: random.Random) -> None:
        self.root = root
        self.home = root / "home"
        self.workdir = workdir
        self.repo = workdir / "repo"
        self.tokens = workdir / "tokens.txt"
        self.rng = rng
        self.env = git_env(root)
        self.run_id: Optional[str] = None
        self.kills = 0
        self.before: Tuple[str, str, str] = ("", "", "")
        # What the kills left for the next session to recover: worktrees not yet in the
        # state, changes not yet committed, adds git still marks as initializing.
        self.seen: Dict[str, int] = {
            "unrecorded": 0,
            "uncommitted": 0,
            "initializing": 0,
            "stale locks": 0,
        }

    def checkout(self) -> Tuple[str, str, str]:
        """The user's checkout: HEAD, index and working tree status."""
        return (
            _git(self.repo, "rev-parse", "HEAD", env=self.env),
            hashlib.sha256((self.repo / ".git" / "index").read_bytes()).hexdigest(),
            _git(self.repo, "status", "--porcelain", "--untracked-files=all", env=self.env),
        )

    def session(self, args: List[str], kill: bool) -> Optional[int]:
        """One orch process, SIGKILLed at a random moment if ``kill``: its exit code or None.

        Kills land from just after `run_id:` (worktrees being added) to well into the run
        (agents writing, commits); a few before `run_id:` even appears.
        """
        early = kill and self.rng.random() < 0.1
        delay = self.rng.uniform(0.0, 1.2) ** 2 if kill else 300.0
        # Some kills take orch's whole process group: its git commands die mid-write too
        # (tasks run in groups of their own and survive, as they do a kill of orch alone).
        whole_group = self.rng.random() < 0.35
        with open(self.workdir / "orch.err", "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orch", *args, "--home", str(self.home)],
                cwd=str(self.repo),
                env=orch_env(self.root, git_env(self.root)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
            assert proc.stdout is not None
            with proc.stdout:
                if not early:
                    proc.stdout.readline()
                try:
                    return proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    if whole_group:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        proc.kill()
                    proc.wait()
        if not kill:
            raise WorktreeSoakFailure(f"orch {' '.join(args)} hung")
        self.kills += 1
        return None

    def run_dir(self) -> Path:
        assert self.run_id is not None
        return self.home / "runs" / self.run_id

    def check(self, when: str) -> Dict[str, object]:
        run_dir = str(self.run_dir())
        try:
            state = read_state(run_dir)
        except Exception as err:
            raise WorktreeSoakFailure(f"{when}: state unreadable: {err}") from None
        if owner_alive(run_dir):
            raise WorktreeSoakFailure(f"{when}: the owner of {self.run_id} is still alive")
        self._count_leftovers(state)
        return dict(state)

    def _count_leftovers(self, state: Any) -> None:
        listing = _git(self.repo, "worktree", "list", "--porcelain", env=self.env)
        self.seen["initializing"] += listing.count("locked initializing")
        git_dir = self.repo / ".git"
        self.seen["stale locks"] += sum(1 for _ in git_dir.glob("worktrees/*/*.lock"))
        self.seen["stale locks"] += sum(1 for _ in git_dir.glob("refs/heads/orch/*/*.lock"))
        for task_id, entry in state["tasks"].items():
            worktree = self.run_dir() / "worktrees" / task_id
            if not (worktree / ".git").exists():
                continue
            if not entry.get("worktree"):
                self.seen["unrecorded"] += 1
            proc = subprocess.run(
                ["git", "-C", str(worktree), "status", "--porcelain"],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            self.seen["uncommitted"] += bool(proc.returncode == 0 and proc.stdout.strip())

    def finish(self, state: Dict[str, object]) -> None:
        assert self.run_id is not None
        tasks = state["tasks"]
        assert isinstance(tasks, dict)
        bad = {t: e["status"] for t, e in tasks.items() if e["status"] != "SUCCESS"}
        if bad or state["status"] != "SUCCESS":
            raise WorktreeSoakFailure(f"run ended {state['status']} with {bad}")
        written: Dict[str, List[str]] = {}
        for line in self.tokens.read_text().splitlines():
            written.setdefault(line.split()[0], []).append(line)
        for task_id, entry in tasks.items():
            self._check_task(task_id, entry, written.get(task_id, []))
        a_notes = self._show(f"orch/{self.run_id}/a", "notes/a.txt")
        if self._show(f"orch/{self.run_id}/c", "notes/a.txt") != a_notes:
            raise WorktreeSoakFailure("task c's branch does not hold a's work (worktree_from)")
        self._check_registrations(tasks)
        if self.checkout() != self.before:
            raise WorktreeSoakFailure("the user's checkout (HEAD, index or files) changed")
        self._check_no_processes(tasks)

    def _show(self, branch: str, path: str) -> str:
        return _git(self.repo, "show", f"{branch}:{path}", env=self.env)

    def _check_task(self, task_id: str, entry: Dict[str, object], written: List[str]) -> None:
        branch = f"orch/{self.run_id}/{task_id}"
        if entry.get("branch") != branch:
            raise WorktreeSoakFailure(f"task {task_id}: branch {entry.get('branch')!r}")
        if not written:
            raise WorktreeSoakFailure(f"task {task_id}: its agent never wrote a token")
        kept = self._show(branch, f"notes/{task_id}.txt").splitlines()
        lost = [line for line in written if line not in kept]
        if lost:
            raise WorktreeSoakFailure(f"task {task_id}: changes lost from {branch}: {lost}")
        head = _git(self.repo, "rev-parse", branch, env=self.env).strip()
        if entry.get("head_commit") != head:
            raise WorktreeSoakFailure(f"task {task_id}: head_commit is not {branch}'s head")
        worktree = self.run_dir() / "worktrees" / task_id
        dirty = _git(worktree, "status", "--porcelain", env=self.env)
        if dirty:
            raise WorktreeSoakFailure(f"task {task_id}: uncommitted changes left: {dirty}")
        base = str(entry.get("base_commit"))
        log = _git(self.repo, "log", "--format=%s", f"{base}..{branch}", env=self.env)
        for subject in log.splitlines():
            match = _MESSAGE.match(subject)
            if match is None or match.group(3) != self.run_id:
                raise WorktreeSoakFailure(f"task {task_id}: a commit not orch's: {subject!r}")
            if match.group(1) not in ("a", "b", "c", "d"):
                raise WorktreeSoakFailure(f"task {task_id}: a foreign commit: {subject!r}")
            if match.group(1) == task_id and int(match.group(2)) > int(str(entry["attempts"])):
                raise WorktreeSoakFailure(f"task {task_id}: a commit of a later attempt")

    def _check_registrations(self, tasks: Dict[str, object]) -> None:
        listing = _git(self.repo, "worktree", "list", "--porcelain", env=self.env)
        if "locked" in listing or "prunable" in listing:
            raise WorktreeSoakFailure(f"a worktree left locked or prunable:\n{listing}")
        mine = [ln for ln in listing.splitlines() if ln.startswith("worktree ") and "/runs/" in ln]
        if len(mine) != len(tasks):
            raise WorktreeSoakFailure(f"{len(mine)} worktrees registered for {len(tasks)} tasks")
        aside = [n for n in os.listdir(self.run_dir() / "worktrees") if ".orphan-" in n]
        if aside:
            raise WorktreeSoakFailure(f"something was moved aside: {aside}")

    def _check_no_processes(self, tasks: Dict[str, object]) -> None:
        assert self.run_id is not None
        pids = [
            h["pid"]
            for e in tasks.values()
            if isinstance(e, dict)
            for h in e["history"]
            if h.get("pid")
        ]
        deadline = time.monotonic() + 5
        while True:
            left = live_processes_of_run(self.run_id) + [p for p in pids if alive(p)]
            if not left:
                return
            if time.monotonic() > deadline:
                raise WorktreeSoakFailure(f"processes of the run alive: {sorted(set(left))}")
            time.sleep(0.05)


def _one_iteration(root: Path, workdir: Path, rng: random.Random) -> _Iteration:
    it = _Iteration(root, workdir, rng)
    _make_repo(it.repo, rng, it.env)
    it.before = it.checkout()
    (workdir / "plan.yaml").write_text(_plan(rng, it.tokens))
    runs = it.home / "runs"
    before = set(os.listdir(runs)) if runs.is_dir() else set()
    code = it.session(["run", str(workdir / "plan.yaml"), "--max-parallel", "3"], True)
    new = [n for n in (os.listdir(runs) if runs.is_dir() else []) if n not in before]
    new = [n for n in new if (runs / n / "state.json").exists()]
    if not new:
        return it
    it.run_id = new[0]
    if code not in (None, 0):
        raise WorktreeSoakFailure(f"orch run exited {code}")
    state = it.check("after orch run")
    for number in range(_MAX_SESSIONS):
        if code == 0:
            it.finish(state)
            return it
        kill = number < 3 and rng.random() < 0.6
        args = ["resume", it.run_id]
        code = it.session(args, kill)
        if code not in (None, 0):
            raise WorktreeSoakFailure(f"orch resume exited {code} (an unresumable run)")
        state = it.check(f"after session {number + 2}")
    raise WorktreeSoakFailure(f"run not done after {_MAX_SESSIONS} resumes")


def worktree_soak(
    root: Path, iterations: int, seed: int, say: Callable[[str], None] = print
) -> Tuple[int, int]:
    """Run the loop; returns (iterations with a run, SIGKILLs sent). Raises on a failure."""
    say(f"worktree soak: seed {seed}, {iterations} iterations, in {root}")
    rng = random.Random(seed)
    began = time.monotonic()
    with_run = kills = 0
    seen: Dict[str, int] = {}
    for i in range(iterations):
        workdir = root / f"it{i:04d}"
        try:
            it = _one_iteration(root, workdir, rng)
        except WorktreeSoakFailure as err:
            raise WorktreeSoakFailure(f"seed {seed}, iteration {i} ({workdir}): {err}") from None
        with_run += it.run_id is not None
        kills += it.kills
        for key, count in it.seen.items():
            seen[key] = seen.get(key, 0) + count
    left = ", ".join(f"{count} {key}" for key, count in seen.items())
    say(
        f"worktree soak: {with_run} runs, {kills} SIGKILLs (recovered: {left}), nothing lost "
        f"in {time.monotonic() - began:.1f}s (seed {seed})"
    )
    return with_run, kills


def main(argv: Optional[List[str]] = None) -> int:
    return soak_main(
        argv,
        doc=__doc__,
        iterations=100,
        prefix="orch-wt-soak-",
        soak=worktree_soak,
        failure=WorktreeSoakFailure,
    )


if __name__ == "__main__":
    sys.exit(main())
