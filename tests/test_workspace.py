"""workspace: worktree, against real git repositories in temporary directories.

Every sentence of CONTRACT.md "Workspaces": the plan error outside a repository, the base
commit, branch and worktree names, worktree_from, the relative cwd, reuse by retries and
resumes, the commit after every attempt (success, failure, timeout, cancel) with orch's
message and the right author and no hook, the state / ORCH_CONTEXT / report keys, the
recovery of what a crash left (in-process, one case at a time, then the SIGKILL soak), and
that the user's own checkout and index are never touched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from conftest import REPO, Orch, run_id_of, wait_for

from orch import workspace

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None,
    reason="git is not installed: the workspace tests need a real git (a test-only dependency)",
)

RUN_ID = "20260101_120000_abcdef"


def _load_soak() -> Any:
    path = REPO / "scripts" / "soak_worktrees.py"
    spec = importlib.util.spec_from_file_location("soak_worktrees", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


class Repo:
    """A git repository in a temporary directory, with git isolated from the user's config."""

    def __init__(self, path: Path, env: Dict[str, str]) -> None:
        self.path = path
        self.env = env

    def git(self, *args: str, where: Optional[Path] = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["git", "-C", str(where or self.path), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if check:
            assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    def commit(self, message: str = "change") -> str:
        identity = ("-c", "user.name=Test", "-c", "user.email=test@localhost")
        self.git("add", "-A")
        self.git(*identity, "commit", "-q", "-m", message)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref).strip()

    def show(self, ref: str, path: str) -> str:
        return self.git("show", f"{ref}:{path}")

    def subjects(self, ref: str, since: str) -> List[str]:
        return self.git("log", "--format=%s", f"{since}..{ref}").splitlines()

    def author(self, ref: str) -> str:
        return self.git("log", "-1", "--format=%an <%ae>", ref).strip()

    def checkout_state(self) -> Any:
        """What orch must never change: HEAD, the index file's bytes, the files' status."""
        index = (self.path / ".git" / "index").read_bytes()
        return (
            self.head(),
            hashlib.sha256(index).hexdigest(),
            self.git("status", "--porcelain", "--untracked-files=all"),
            self.git("branch", "--show-current").strip(),
        )


def _git_env(root: Path) -> Dict[str, str]:
    env: Dict[str, str] = soak.git_env(root)
    return env


def _orch_extra(root: Path) -> Dict[str, str]:
    """For Orch.run(env=...): git without the user's configuration (no identity)."""
    keys = ("HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_NOSYSTEM", "GIT_OPTIONAL_LOCKS")
    env = _git_env(root)
    return {k: env[k] for k in keys}


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


def make_repo(tmp_path: Path) -> Repo:
    """``tmp_path/repo``: a story file, a subdirectory, one commit on ``main``."""
    path = tmp_path / "repo"
    path.mkdir()
    r = Repo(path, _git_env(tmp_path))
    r.git("init", "-q", "-b", "main")
    (path / "story.txt").write_text("one\ntwo\nthree\nfour\nfive\nsix\nseven\n")
    (path / "sub" / "dir").mkdir(parents=True)
    (path / "sub" / "dir" / "keep.txt").write_text("kept\n")
    r.commit("base")
    return r


def _run(orch: Orch, plan: str, repo: Repo, *args: str, **kw: Any) -> Any:
    orch.plan(plan)
    return orch.run(
        "run", "plan.yaml", "--workdir", str(repo.path), *args, env=_orch_extra(orch.workdir), **kw
    )


def _wt(orch: Orch, run_id: str, task_id: str) -> Path:
    return orch.run_dir(run_id) / "worktrees" / task_id


# ----------------------------------------------------------------------------- the happy path


def _edit(old: str, new: str) -> str:
    return json.dumps(
        f"pwd -P > where.txt; sed -i.bak 's/^{old}$/{new}/' ../../story.txt; rm ../../story.txt.bak"
    )


TWO_AGENTS = f"""
tasks:
  - id: edit_top
    workspace: worktree
    cwd: sub/dir
    cmd: ["sh", "-c", {_edit("one", "ONE")}]
  - id: edit_bottom
    workspace: worktree
    cwd: sub/dir
    cmd: ["sh", "-c", {_edit("seven", "SEVEN")}]
  - id: review
    depends_on: [edit_top, edit_bottom]
    cmd: ["true"]
"""


def test_each_task_works_in_its_own_worktree_and_branch_from_the_base(
    orch: Orch, repo: Repo
) -> None:
    repo.git("config", "user.name", "Repo User")
    repo.git("config", "user.email", "repo@example.com")
    (repo.path / "story.txt").write_text("the user's own uncommitted edit\n")
    (repo.path / "staged.txt").write_text("staged\n")
    repo.git("add", "staged.txt")
    before = repo.checkout_state()
    base = repo.head()

    proc = _run(orch, TWO_AGENTS, repo)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    state = orch.state(run_id)
    assert state["base_commit"] == base
    assert state["repository"] == os.path.realpath(repo.path)
    for task_id, line in (("edit_top", "ONE"), ("edit_bottom", "SEVEN")):
        entry = state["tasks"][task_id]
        branch = f"orch/{run_id}/{task_id}"
        worktree = _wt(orch, run_id, task_id)
        assert entry["branch"] == branch
        assert entry["worktree"] == str(worktree)
        assert entry["base_commit"] == base
        assert entry["head_commit"] == repo.head(branch)
        assert repo.head(f"{branch}~1") == base
        assert repo.subjects(branch, base) == [f"orch: {task_id} attempt 1 (run {run_id})"]
        assert repo.author(branch) == "Repo User <repo@example.com>"
        # The same relative cwd, inside the worktree.
        where = repo.show(branch, "sub/dir/where.txt").strip()
        assert where == os.path.realpath(worktree / "sub" / "dir")
        assert line in repo.show(branch, "story.txt").splitlines()
        assert "story.txt" in entry["diffstat"] and "where.txt" in entry["diffstat"]
        assert entry["workspace_error"] is None
        assert not repo.git("status", "--porcelain", where=worktree)
    # Neither the user's checkout, nor its index, nor its branch moved.
    assert repo.checkout_state() == before
    assert (repo.path / "story.txt").read_text() == "the user's own uncommitted edit\n"
    # ORCH_CONTEXT names each dependency's worktree, branch and head; so does status --json.
    context = json.loads((orch.run_dir(run_id) / "context" / "review.json").read_text())
    for task_id in ("edit_top", "edit_bottom"):
        dep = context["dependencies"][task_id]
        entry = state["tasks"][task_id]
        assert (dep["worktree"], dep["branch"], dep["head_commit"]) == (
            entry["worktree"],
            entry["branch"],
            entry["head_commit"],
        )
    assert "worktree" not in state["tasks"]["review"]
    shown = json.loads(orch.run("status", run_id, "--json").stdout)
    assert shown["tasks"]["edit_top"]["branch"] == f"orch/{run_id}/edit_top"
    assert shown["base_commit"] == base
    # The report: branch and diffstat against the base.
    report = (orch.run_dir(run_id) / "report" / "final_report.md").read_text()
    assert "## Workspaces" in report
    assert f"`orch/{run_id}/edit_bottom`" in report
    assert state["tasks"]["edit_bottom"]["diffstat"].splitlines()[0] in report
    assert base in report


def test_defaults_workspace_and_the_fallback_author(orch: Orch, repo: Repo) -> None:
    plan = """
    defaults:
      workspace: worktree
    tasks:
      - id: write
        cmd: ["sh", "-c", "echo new > new.txt"]
    """
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    branch = f"orch/{run_id_of(proc.stdout)}/write"
    assert repo.author(branch) == "orch <orch@localhost>"
    assert repo.show(branch, "new.txt") == "new\n"
    assert not (repo.path / "new.txt").exists()


def test_nothing_to_commit_makes_no_commit(orch: Orch, repo: Repo) -> None:
    plan = """
    tasks:
      - id: idle
        workspace: worktree
        cmd: ["true"]
    """
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    entry = orch.state(run_id_of(proc.stdout))["tasks"]["idle"]
    assert entry["head_commit"] == repo.head() and entry["diffstat"] == ""


# ----------------------------------------------------------------------------- plan errors


@pytest.mark.parametrize("case", ["not_a_repository", "no_commit", "missing_cwd", "no_git"])
def test_worktree_needs_a_repository_at_run_time(orch: Orch, tmp_path: Path, case: str) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = _orch_extra(tmp_path)
    cwd = "."
    if case == "no_commit":
        Repo(workdir, _git_env(tmp_path)).git("init", "-q")
    if case == "missing_cwd":
        Repo(workdir, _git_env(tmp_path)).git("init", "-q")
        cwd = "nowhere"
    if case == "no_git":
        env["PATH"] = str(tmp_path / "empty-bin")
    orch.plan(
        f"""
        tasks:
          - id: agent
            workspace: worktree
            cwd: {cwd}
            cmd: ["sh", "-c", "touch ran.txt"]
        """
    )
    proc = orch.run("run", "plan.yaml", "--workdir", str(workdir), env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    expected = {
        "not_a_repository": "task 'agent': workspace: worktree: the task's cwd",
        "no_commit": "has no commit yet to start worktrees from",
        "missing_cwd": "is not a directory",
        "no_git": "workspace: worktree needs git, which is not on PATH",
    }[case]
    assert expected in proc.stderr
    assert proc.stderr.startswith("plan.yaml: ")
    assert not (orch.home / "runs").exists() or not os.listdir(orch.home / "runs")
    assert not (workdir / "ran.txt").exists()


def test_every_worktree_task_outside_a_repository_is_reported_at_once(
    orch: Orch, tmp_path: Path
) -> None:
    orch.plan(
        """
        tasks:
          - id: a
            workspace: worktree
            cmd: ["true"]
          - id: b
            workspace: worktree
            cmd: ["true"]
        """
    )
    proc = orch.run("run", "plan.yaml", env=_orch_extra(tmp_path))
    assert proc.returncode == 2
    assert "task 'a': " in proc.stderr and "task 'b': " in proc.stderr


# ----------------------------------------------------------------------------- where it starts


def test_the_base_is_head_when_the_run_was_created(orch: Orch, repo: Repo) -> None:
    # `move_head` commits in the user's repository while the run is going on: a worktree
    # made afterwards still starts from the run's base.
    identity = "-c user.name=T -c user.email=t@localhost"
    move = f"echo moved > moved.txt && git add moved.txt && git {identity} commit -qm moved"
    plan = f"""
    tasks:
      - id: move_head
        cmd: ["sh", "-c", {json.dumps(move)}]
      - id: later
        depends_on: [move_head]
        workspace: worktree
        cmd: ["sh", "-c", "test ! -e moved.txt && echo later > later.txt"]
    """
    base = repo.head()
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    assert repo.head() != base
    assert orch.state(run_id)["base_commit"] == base
    assert repo.head(f"orch/{run_id}/later~1") == base


def test_worktree_from_starts_from_the_dependencys_branch(orch: Orch, repo: Repo) -> None:
    plan = """
    tasks:
      - id: first
        workspace: worktree
        cmd: ["sh", "-c", "echo first > first.txt"]
      - id: second
        depends_on: [first]
        workspace: worktree
        worktree_from: first
        cmd: ["sh", "-c", "cat first.txt > seen.txt"]
    """
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    first = f"orch/{run_id}/first"
    second = f"orch/{run_id}/second"
    assert repo.head(f"{second}~1") == repo.head(first)
    assert repo.show(second, "seen.txt") == "first\n"
    assert orch.state(run_id)["tasks"]["second"]["base_commit"] == repo.head(f"{first}~1")


# ----------------------------------------------------------------------------- reuse


def test_retries_reuse_the_worktree_and_every_attempt_is_committed(orch: Orch, repo: Repo) -> None:
    flaky = "pwd -P >> places.txt; echo $ORCH_ATTEMPT > attempt-$ORCH_ATTEMPT.txt"
    plan = f"""
    tasks:
      - id: flaky
        workspace: worktree
        retries: 2
        cmd: ["sh", "-c", "{flaky}; test $ORCH_ATTEMPT -ge 2"]
    """
    base = repo.head()
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    branch = f"orch/{run_id}/flaky"
    assert repo.subjects(branch, base) == [
        f"orch: flaky attempt 2 (run {run_id})",
        f"orch: flaky attempt 1 (run {run_id})",
    ]
    places = repo.show(branch, "places.txt").splitlines()
    assert places == [os.path.realpath(_wt(orch, run_id, "flaky"))] * 2
    assert repo.show(branch, "attempt-1.txt") == "1\n"


def test_resume_reuses_the_worktree(orch: Orch, repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "allow"
    plan = f"""
    tasks:
      - id: agent
        workspace: worktree
        cmd: ["sh", "-c", "echo $ORCH_ATTEMPT >> log.txt; test -e {marker}"]
    """
    base = repo.head()
    proc = _run(orch, plan, repo)
    assert proc.returncode == 3
    run_id = run_id_of(proc.stdout)
    marker.touch()
    again = orch.run("resume", run_id, env=_orch_extra(tmp_path))
    assert again.returncode == 0, again.stderr
    branch = f"orch/{run_id}/agent"
    assert repo.show(branch, "log.txt") == "1\n2\n"
    assert len(repo.subjects(branch, base)) == 2
    assert repo.git("worktree", "list").count("/worktrees/agent ") == 1


# ----------------------------------------------------------------------------- nothing is lost


@pytest.mark.parametrize("ending", ["failure", "timeout", "cancel"])
def test_changes_are_committed_however_the_attempt_ends(
    orch: Orch, repo: Repo, tmp_path: Path, ending: str
) -> None:
    up = tmp_path / "up"
    body = {
        "failure": "echo work > work.txt; exit 1",
        "timeout": f"echo work > work.txt; touch {up}; sleep 60",
        "cancel": f"echo work > work.txt; touch {up}; sleep 60",
    }[ending]
    lines = ["tasks:", "  - id: agent", "    workspace: worktree", f'    cmd: [sh, -c, "{body}"]']
    if ending == "timeout":
        lines.append("    timeout_sec: 1")
    orch.plan("\n".join(lines) + "\n")
    env = _orch_extra(tmp_path)
    proc = orch.popen("run", "plan.yaml", "--workdir", str(repo.path), env=env)
    assert proc.stdout is not None
    run_id = run_id_of(proc.stdout.readline())
    if ending == "cancel":
        wait_for(up.exists)
        assert orch.run("cancel", run_id).returncode == 0
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (4 if ending == "cancel" else 3), err
    entry = orch.state(run_id)["tasks"]["agent"]
    assert entry["status"] == ("CANCELED" if ending == "cancel" else "FAILED")
    branch = f"orch/{run_id}/agent"
    assert repo.show(branch, "work.txt") == "work\n"
    assert repo.subjects(branch, repo.head()) == [f"orch: agent attempt 1 (run {run_id})"]
    assert entry["head_commit"] == repo.head(branch)


def test_hooks_never_run_for_orchs_own_git_commands(orch: Orch, repo: Repo, tmp_path: Path) -> None:
    fired = tmp_path / "fired"
    for hooks in (repo.path / ".git" / "hooks", tmp_path / "hooks"):
        hooks.mkdir(exist_ok=True)
        for name in (
            "pre-commit",
            "commit-msg",
            "post-commit",
            "post-checkout",
            "prepare-commit-msg",
        ):
            hook = hooks / name
            hook.write_text(f"#!/bin/sh\necho {name} >> {fired}\nexit 1\n")
            hook.chmod(0o755)
    plan = """
    tasks:
      - id: agent
        workspace: worktree
        cmd: ["sh", "-c", "echo x > x.txt"]
    """
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    assert repo.show(f"orch/{run_id_of(proc.stdout)}/agent", "x.txt") == "x\n"
    repo.git("config", "core.hooksPath", str(tmp_path / "hooks"))
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    assert repo.show(f"orch/{run_id_of(proc.stdout)}/agent", "x.txt") == "x\n"
    assert not fired.exists(), fired.read_text()


def test_a_commit_failure_is_recorded_and_the_run_goes_on(orch: Orch, repo: Repo) -> None:
    # The agent destroys its worktree's administrative directory: nothing can be committed.
    plan = """
    tasks:
      - id: vandal
        workspace: worktree
        cmd: ["sh", "-c", "echo lost > f.txt; rm -rf \\"$(git rev-parse --absolute-git-dir)\\""]
      - id: after
        depends_on: [vandal]
        cmd: ["true"]
    """
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    tasks = orch.state(run_id_of(proc.stdout))["tasks"]
    assert tasks["vandal"]["status"] == "SUCCESS"
    assert "commit of attempt 1 failed" in tasks["vandal"]["workspace_error"]
    assert tasks["after"]["status"] == "SUCCESS"
    report = (orch.run_dir(run_id_of(proc.stdout)) / "report" / "final_report.md").read_text()
    assert "commit of attempt 1 failed" in report


def test_a_damaged_git_file_is_repaired_and_the_work_committed(orch: Orch, repo: Repo) -> None:
    plan = """
    tasks:
      - id: clumsy
        workspace: worktree
        cmd: ["sh", "-c", "echo kept > f.txt; echo 'gitdir: /nonexistent' > .git"]
    """
    proc = _run(orch, plan, repo)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    entry = orch.state(run_id)["tasks"]["clumsy"]
    assert repo.show(f"orch/{run_id}/clumsy", "f.txt") == "kept\n"
    assert "repaired the worktree's .git file" in entry["workspace_error"]


def test_an_inherited_git_dir_never_points_anything_at_the_users_repository(
    orch: Orch, repo: Repo, tmp_path: Path
) -> None:
    before = repo.checkout_state()
    plan = """
    tasks:
      - id: agent
        workspace: worktree
        cmd: ["sh", "-c", "git rev-parse --show-toplevel > top.txt; echo x > x.txt; git add x.txt"]
    """
    orch.plan(plan)
    env = _orch_extra(tmp_path)
    env.update(GIT_DIR=str(repo.path / ".git"), GIT_WORK_TREE=str(repo.path))
    env["GIT_INDEX_FILE"] = str(repo.path / ".git" / "index")
    proc = orch.run("run", "plan.yaml", "--workdir", str(repo.path), env=env)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    top = repo.show(f"orch/{run_id}/agent", "top.txt").strip()
    assert top == os.path.realpath(_wt(orch, run_id, "agent"))
    assert repo.checkout_state() == before


def test_a_home_inside_the_repository_leaves_the_checkout_alone(
    orch: Orch, repo: Repo, tmp_path: Path
) -> None:
    (repo.path / ".gitignore").write_text(".orch/\n")
    repo.commit("ignore the orch home")
    before = repo.checkout_state()
    orch.plan(
        """
        tasks:
          - id: agent
            workspace: worktree
            cmd: ["sh", "-c", "echo x > x.txt"]
        """
    )
    env = _orch_extra(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "orch", "run", str(orch.workdir / "plan.yaml")],
        cwd=str(repo.path),
        env={**os.environ, **env, "PYTHONPATH": str(REPO), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    assert (repo.path / ".orch" / "runs" / run_id / "worktrees" / "agent" / "x.txt").exists()
    assert repo.show(f"orch/{run_id}/agent", "x.txt") == "x\n"
    assert repo.checkout_state() == before


def test_parallel_worktrees_are_all_created(orch: Orch, repo: Repo) -> None:
    tasks = "\n".join(
        f"""  - id: t{i}
    workspace: worktree
    cmd: ["sh", "-c", "echo {i} > mine.txt"]"""
        for i in range(8)
    )
    proc = _run(orch, f"tasks:\n{tasks}\n", repo, "--max-parallel", "8")
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    for i in range(8):
        assert repo.show(f"orch/{run_id}/t{i}", "mine.txt") == f"{i}\n"
    assert (orch.run_dir(run_id) / "worktrees" / ".lock").exists()
    assert len(repo.git("worktree", "list").splitlines()) == 9


def test_a_cancel_while_a_worktree_is_made_starts_nothing(orch: Orch, repo: Repo) -> None:
    # Many files: the checkout takes a moment, during which the run is canceled.
    for d in range(20):
        (repo.path / f"d{d}").mkdir()
        for f in range(100):
            (repo.path / f"d{d}" / f"f{f}").write_text("x\n")
    repo.commit("many files")
    plan = """
    tasks:
      - id: agent
        workspace: worktree
        cmd: ["sh", "-c", "echo ran > ran.txt"]
    """
    orch.plan(plan)
    env = _orch_extra(orch.workdir)
    proc = orch.popen("run", "plan.yaml", "--workdir", str(repo.path), env=env)
    assert proc.stdout is not None
    run_id_of(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode in (0, 4)
    run_id = os.listdir(orch.home / "runs")[0]
    entry = orch.state(run_id)["tasks"]["agent"]
    if proc.returncode == 4:
        assert entry["status"] == "CANCELED"


# ----------------------------------------------------------------------------- recovery


@pytest.fixture
def git_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _orch_extra(tmp_path).items():
        monkeypatch.setenv(key, value)


def _target(repo: Repo, run_dir: Path, task_id: str = "t", **kw: Any) -> workspace.Target:
    fields: Dict[str, Any] = {
        "run_id": RUN_ID,
        "task_id": task_id,
        "path": str(run_dir / "worktrees" / task_id),
        "branch": f"orch/{RUN_ID}/{task_id}",
        "cwd": str(repo.path),
        "lock_path": str(run_dir / "worktrees" / ".lock"),
        "repository": os.path.realpath(repo.path),
        "base_commit": repo.head(),
    }
    fields.update(kw)
    return workspace.Target(**fields)


def _prepare(target: workspace.Target, last: int = 1) -> workspace.Prepared:
    return workspace.prepare(target, workspace.WorktreeLock(), last)


def test_prepare_creates_then_adopts_with_the_leftovers_committed(
    git_isolated: None, repo: Repo, tmp_path: Path
) -> None:
    target = _target(repo, tmp_path / "run")
    made = _prepare(target)
    assert made.cwd == target.path and made.error is None
    assert made.fields["head_commit"] == repo.head() and not made.fields["workspace_error"]
    # orch killed after the attempt wrote, before its commit: the next session adopts the
    # worktree and commits the leftovers as that attempt.
    (Path(target.path) / "left.txt").write_text("left\n")
    again = _prepare(target, last=3)
    assert again.cwd == target.path
    assert repo.subjects(target.branch, repo.head()) == [f"orch: t attempt 3 (run {RUN_ID})"]
    assert repo.show(target.branch, "left.txt") == "left\n"
    assert again.fields["head_commit"] == repo.head(target.branch)


def test_prepare_adopts_a_worktree_the_state_never_recorded(
    git_isolated: None, repo: Repo, tmp_path: Path
) -> None:
    target = _target(repo, tmp_path / "run")
    # As a crash right after `git worktree add` leaves it.
    repo.git("worktree", "add", "-q", "-b", target.branch, target.path, repo.head())
    (Path(target.path) / "work.txt").write_text("work\n")
    prepared = _prepare(target, last=1)
    assert prepared.cwd == target.path
    assert repo.show(target.branch, "work.txt") == "work\n"


def test_prepare_gives_a_branch_without_worktree_its_worktree_back(
    git_isolated: None, repo: Repo, tmp_path: Path
) -> None:
    target = _target(repo, tmp_path / "run")
    scratch = tmp_path / "scratch"
    repo.git("worktree", "add", "-q", "-b", target.branch, str(scratch), repo.head())
    (scratch / "done.txt").write_text("done\n")
    identity = ("-c", "user.name=T", "-c", "user.email=t@localhost")
    repo.git("add", "-A", where=scratch)
    repo.git(*identity, "commit", "-qm", "earlier work", where=scratch)
    tip = repo.head(target.branch)
    repo.git("worktree", "remove", str(scratch))
    prepared = _prepare(target)
    assert prepared.cwd == target.path
    assert (Path(target.path) / "done.txt").read_text() == "done\n"
    assert repo.head(target.branch) == tip


def test_prepare_checks_out_again_an_add_git_left_initializing(
    git_isolated: None, repo: Repo, tmp_path: Path
) -> None:
    target = _target(repo, tmp_path / "run")
    repo.git("worktree", "add", "-q", "-b", target.branch, target.path, repo.head())
    git_dir = repo.git("rev-parse", "--absolute-git-dir", where=Path(target.path)).strip()
    # `git worktree add` killed in the middle of its checkout: files missing, still locked.
    Path(git_dir, "locked").write_text("initializing")
    os.unlink(Path(target.path) / "story.txt")
    prepared = _prepare(target)
    assert prepared.cwd == target.path, prepared
    assert (Path(target.path) / "story.txt").exists()
    assert repo.head(target.branch) == repo.head()  # no commit of the missing files
    assert "locked" not in repo.git("worktree", "list", "--porcelain")


def test_prepare_recreates_a_registered_worktree_whose_directory_is_gone(
    git_isolated: None, repo: Repo, tmp_path: Path
) -> None:
    target = _target(repo, tmp_path / "run")
    assert _prepare(target).cwd
    shutil.rmtree(target.path)
    prepared = _prepare(target)
    assert prepared.cwd == target.path and (Path(target.path) / "story.txt").exists()


@pytest.mark.parametrize("what", ["empty_dir", "foreign_dir", "symlink_to_the_checkout"])
def test_prepare_never_adopts_what_is_not_its_worktree(
    git_isolated: None, repo: Repo, tmp_path: Path, what: str
) -> None:
    target = _target(repo, tmp_path / "run")
    path = Path(target.path)
    path.parent.mkdir(parents=True)
    if what == "empty_dir":
        path.mkdir()
    elif what == "foreign_dir":
        path.mkdir()
        (path / "precious.txt").write_text("precious\n")
    else:
        path.symlink_to(repo.path)
    (repo.path / "dirty.txt").write_text("the user's\n")
    before = repo.checkout_state()
    prepared = _prepare(target)
    assert prepared.cwd == target.path
    assert not path.is_symlink() and (path / ".git").is_file()
    assert repo.checkout_state() == before
    if what == "empty_dir":
        assert prepared.fields["workspace_error"] is None
    else:
        aside = Path(f"{target.path}.orphan-1")
        assert "moved to" in prepared.fields["workspace_error"]
        if what == "foreign_dir":
            assert (aside / "precious.txt").read_text() == "precious\n"
        else:
            assert aside.is_symlink()


def test_prepare_failure_is_a_value(git_isolated: None, repo: Repo, tmp_path: Path) -> None:
    target = _target(repo, tmp_path / "run", base_commit="0" * 40)
    prepared = _prepare(target)
    assert prepared.cwd is None
    assert prepared.error and prepared.error.startswith("cannot prepare the worktree of task t")
    assert prepared.fields["workspace_error"] == prepared.error


def test_a_task_without_a_recorded_repository_takes_the_runs_base(
    git_isolated: None, repo: Repo, tmp_path: Path
) -> None:
    base = repo.head()
    (repo.path / "later.txt").write_text("later\n")
    repo.commit("after the run was created")
    target = _target(
        repo,
        tmp_path / "run",
        repository=None,
        base_commit=None,
        known_bases=((os.path.realpath(repo.path), base),),
    )
    prepared = _prepare(target)
    assert prepared.fields["base_commit"] == base
    assert repo.head(target.branch) == base


def test_a_failed_worktree_creation_fails_the_attempt(orch: Orch, repo: Repo) -> None:
    # The task's branch name is taken by a tag-like ref that cannot be a branch's parent:
    # a file where git wants the directory refs/heads/orch/<run_id>/.
    plan = """
    tasks:
      - id: agent
        workspace: worktree
        cmd: ["true"]
    """
    repo.git("branch", "orch")  # refs/heads/orch is a file: orch/<run>/<task> cannot exist
    proc = _run(orch, plan, repo)
    assert proc.returncode == 3
    entry = orch.state(run_id_of(proc.stdout))["tasks"]["agent"]
    assert entry["status"] == "FAILED"
    assert entry["error"].startswith("cannot prepare the worktree of task agent")
    assert entry["workspace_error"] == entry["error"]


# ----------------------------------------------------------------------------- soak, example


def test_sigkill_during_worktree_creation_and_commit_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("ORCH_SOAK_SEED", str(int(time.time()))))
    iterations = int(os.environ.get("ORCH_WORKTREE_SOAK_ITERATIONS", "4"))
    lines: List[str] = []
    with_run, kills = soak.worktree_soak(tmp_path, iterations, seed, say=lines.append)
    assert with_run >= iterations // 2, (with_run, seed)
    assert kills >= iterations // 2, (kills, seed)


def test_example_plan_worktrees_merges_two_parallel_agents(orch: Orch, repo: Repo) -> None:
    before = repo.checkout_state()
    proc = orch.run(
        "run",
        str(REPO / "examples" / "plan_worktrees.yaml"),
        "--workdir",
        str(repo.path),
        env=_orch_extra(orch.workdir),
    )
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    story = "worktree-demo/story.txt"
    seeded = "intro: draft\n\nmiddle: as seeded\n\nending: draft\n"
    intro = seeded.replace("intro: draft", "intro: written by draft_intro")
    ending = seeded.replace("ending: draft", "ending: written by draft_ending")
    both = intro.replace("ending: draft", "ending: written by draft_ending")
    branch = f"orch/{run_id}/"
    assert repo.show(branch + "seed", story) == seeded
    assert repo.show(branch + "draft_intro", story) == intro
    assert repo.show(branch + "draft_ending", story) == ending
    assert repo.show(branch + "merge", story) == both
    parents = repo.git("log", "-1", "--format=%P", branch + "merge").split()
    assert parents == [repo.head(branch + "draft_intro"), repo.head(branch + "draft_ending")]
    assert repo.checkout_state() == before
    assert not (repo.path / "worktree-demo").exists()


def test_example_plan_worktrees_validates() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orch", "validate", "examples/plan_worktrees.yaml"],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plan OK: 4 tasks")
