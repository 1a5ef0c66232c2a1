"""orch clean: finished runs' directories and worktrees go; live runs and branches stay."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any, List

import pytest
from conftest import Orch, run_id_of, wait_for
from test_workspace import Repo, _orch_extra, _wt, make_repo

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None,
    reason="git is not installed: the clean tests need a real git (a test-only dependency)",
)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


TWO = """
tasks:
  - id: a
    workspace: worktree
    cmd: ["sh", "-c", "echo a > a.txt"]
  - id: b
    workspace: worktree
    cmd: ["sh", "-c", "echo b > b.txt"]
"""


def _start(orch: Orch, repo: Repo, plan: str = TWO, expect: int = 0) -> str:
    orch.plan(plan)
    proc = orch.run("run", "plan.yaml", "--workdir", str(repo.path), env=_orch_extra(orch.workdir))
    assert proc.returncode == expect, proc.stderr
    return run_id_of(proc.stdout)


def _clean(orch: Orch, *args: str) -> Any:
    return orch.run("clean", *args, env=_orch_extra(orch.workdir))


def _registered(repo: Repo) -> List[str]:
    listing = repo.git("worktree", "list", "--porcelain").splitlines()
    return [line.split(" ", 1)[1] for line in listing if line.startswith("worktree ")]


def test_clean_removes_the_run_and_its_worktrees_and_keeps_the_branches(
    orch: Orch, repo: Repo
) -> None:
    run_id = _start(orch, repo)
    kept = _start(orch, repo)
    before = repo.checkout_state()
    heads = {t: repo.head(f"orch/{run_id}/{t}") for t in "ab"}
    proc = _clean(orch, run_id)
    assert proc.returncode == 0, proc.stderr
    for task_id in "ab":
        path = _wt(orch, run_id, task_id)
        branch = f"orch/{run_id}/{task_id}"
        assert f"removed worktree {path} (branch {branch} kept)\n" in proc.stdout
        assert repo.head(branch) == heads[task_id]
    assert f"removed run {run_id} ({orch.run_dir(run_id)})\n" in proc.stdout
    assert proc.stdout.endswith("cleaned 1 run\n")
    assert not orch.run_dir(run_id).exists()
    assert _registered(repo) == [
        os.path.realpath(repo.path),
        *[str(_wt(orch, kept, t)) for t in "ab"],
    ]
    assert orch.run_dir(kept).is_dir()
    assert repo.checkout_state() == before
    assert [r["run_id"] for r in json.loads(orch.run("list", "--json").stdout)] == [kept]


def test_dry_run_touches_nothing(orch: Orch, repo: Repo) -> None:
    run_id = _start(orch, repo)
    (_wt(orch, run_id, "a") / "late.txt").write_text("late\n")
    proc = _clean(orch, "--dry-run", run_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"would remove worktree {_wt(orch, run_id, 'a')} (branch orch/{run_id}/a kept); "
        "its uncommitted changes would first be committed to the branch",
        f"would remove worktree {_wt(orch, run_id, 'b')} (branch orch/{run_id}/b kept)",
        f"would remove run {run_id} ({orch.run_dir(run_id)})",
        "would clean 1 run",
    ]
    assert (_wt(orch, run_id, "a") / "late.txt").exists()
    assert len(_registered(repo)) == 3


def test_changes_nobody_committed_are_committed_before_the_worktree_goes(
    orch: Orch, repo: Repo
) -> None:
    run_id = _start(orch, repo)
    (_wt(orch, run_id, "b") / "late.txt").write_text("late\n")
    proc = _clean(orch, run_id)
    assert proc.returncode == 0, proc.stderr
    assert "its uncommitted changes were committed to the branch first" in proc.stdout
    branch = f"orch/{run_id}/b"
    assert repo.show(branch, "late.txt") == "late\n"
    subject = repo.git("log", "-1", "--format=%s", branch).strip()
    assert subject == f"orch: b uncommitted changes kept by orch clean (run {run_id})"


def test_a_live_run_is_refused_and_the_others_are_cleaned(
    orch: Orch, repo: Repo, tmp_path: Path
) -> None:
    done = _start(orch, repo)
    up = tmp_path / "up"
    orch.plan(
        f"""
        tasks:
          - id: long
            workspace: worktree
            cmd: ["sh", "-c", "touch {up}; sleep 60"]
        """,
        "long.yaml",
    )
    live = orch.popen("run", "long.yaml", "--workdir", str(repo.path), env=_orch_extra(tmp_path))
    try:
        assert live.stdout is not None
        live_id = run_id_of(live.stdout.readline())
        wait_for(up.exists)
        proc = _clean(orch, live_id, done)
        assert proc.returncode == 2
        assert f"orch: kept run {live_id}: it is live" in proc.stderr
        assert orch.run_dir(live_id).is_dir() and _wt(orch, live_id, "long").is_dir()
        assert not orch.run_dir(done).exists()
        assert f"removed run {done}" in proc.stdout
    finally:
        live.send_signal(signal.SIGTERM)
        live.communicate(timeout=60)
    assert live.returncode == 4
    assert _clean(orch, live_id).returncode == 0  # finished now (CANCELED)


def test_an_interrupted_run_is_kept_until_canceled(orch: Orch, repo: Repo, tmp_path: Path) -> None:
    up = tmp_path / "up"
    orch.plan(
        f"""
        tasks:
          - id: long
            workspace: worktree
            cmd: ["sh", "-c", "touch {up}; exec sleep 60"]
        """
    )
    proc = orch.popen("run", "plan.yaml", "--workdir", str(repo.path), env=_orch_extra(tmp_path))
    assert proc.stdout is not None
    run_id = run_id_of(proc.stdout.readline())
    wait_for(up.exists)
    proc.kill()
    proc.communicate(timeout=30)
    refused = _clean(orch, run_id)
    assert refused.returncode == 2
    assert f"orch: kept run {run_id}: it is not finished (INTERRUPTED)" in refused.stderr
    assert orch.run("cancel", run_id).returncode == 0
    assert _clean(orch, run_id).returncode == 0
    assert not orch.run_dir(run_id).exists()


def test_older_than_picks_finished_runs_by_age(orch: Orch, repo: Repo, tmp_path: Path) -> None:
    run_id = _start(orch, repo)
    young = _clean(orch, "--older-than", "1")
    assert young.returncode == 0 and young.stdout == "nothing to clean\n"
    assert orch.run_dir(run_id).is_dir()
    # An interrupted run is no candidate: mentioned, kept, not an error.
    up = tmp_path / "up"
    orch.plan(f'tasks:\n  - id: s\n    cmd: ["sh", "-c", "touch {up}; exec sleep 60"]\n', "s.yaml")
    proc = orch.popen("run", "s.yaml", env=_orch_extra(tmp_path))
    assert proc.stdout is not None
    interrupted = run_id_of(proc.stdout.readline())
    wait_for(up.exists)
    proc.kill()
    proc.communicate(timeout=30)
    old = _clean(orch, "--older-than", "0")
    assert old.returncode == 0, old.stderr
    assert f"removed run {run_id}" in old.stdout
    assert f"orch: kept run {interrupted}: not finished (INTERRUPTED)" in old.stderr
    assert orch.run_dir(interrupted).is_dir()
    orch.run("cancel", interrupted)


def test_runs_without_worktrees_are_cleaned_too(orch: Orch) -> None:
    orch.plan('tasks:\n  - id: t\n    cmd: ["true"]\n')
    run_id = run_id_of(orch.run("run", "plan.yaml").stdout)
    proc = orch.run("clean", "last")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"removed run {run_id} ({orch.run_dir(run_id)})\ncleaned 1 run\n"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give RUN_ID ... or --older-than DAYS"),
        (["20260101_000000_abcdef", "--older-than", "3"], "give RUN_ID ... or --older-than"),
        (["../x"], "invalid run id '../x'"),
        (["20260101_000000_abcdef"], "unknown run 20260101_000000_abcdef"),
        (["--older-than", "-1"], "expected a number of days >= 0"),
    ],
)
def test_bad_arguments_exit_2(orch: Orch, args: List[str], message: str) -> None:
    proc = orch.run("clean", *args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_a_worktree_the_user_locked_keeps_its_run(orch: Orch, repo: Repo) -> None:
    run_id = _start(orch, repo)
    repo.git("worktree", "lock", "--reason", "on a usb stick", str(_wt(orch, run_id, "b")))
    proc = _clean(orch, run_id)
    assert proc.returncode == 2
    assert "is locked (on a usb stick): unlock it first" in proc.stderr
    assert orch.run_dir(run_id).is_dir()
    assert (_wt(orch, run_id, "a") / "a.txt").exists()  # checked before anything went
    assert len(_registered(repo)) == 3


def test_a_damaged_state_cannot_point_clean_at_the_users_checkout(orch: Orch, repo: Repo) -> None:
    run_id = _start(orch, repo)
    state_file = orch.run_dir(run_id) / "state.json"
    state = json.loads(state_file.read_text())
    state["tasks"]["a"]["worktree"] = str(repo.path)
    state["tasks"]["a"]["repository"] = str(repo.path)
    state_file.write_text(json.dumps(state))
    (repo.path / "untracked.txt").write_text("the user's\n")
    before = repo.checkout_state()
    proc = _clean(orch, run_id)
    assert proc.returncode == 0, proc.stderr
    assert repo.checkout_state() == before
    assert (repo.path / "untracked.txt").exists()
    assert _registered(repo) == [os.path.realpath(repo.path)]
