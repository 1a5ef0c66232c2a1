"""``orch clean``: delete finished runs' directories and their worktrees.

``orch clean RUN_ID ...`` cleans the named runs; ``orch clean --older-than DAYS`` every
finished run that ended more than DAYS days ago (``0``: every finished run). ``--dry-run``
prints what would be removed and touches nothing.

For each run:

- A live run is never touched: its lock is held (by its owner, or by a resume taking it over)
  or its recorded owner is alive. Clean holds the run's lock itself while it works, so that
  no resume can start meanwhile.
- Only a finished run is cleaned (SUCCESS, FAILED, CANCELED). A run whose orch was killed
  (INTERRUPTED) or that never started is kept: ``orch resume`` or ``orch cancel`` it first.
- Each worktree (``<run dir>/worktrees/<task>``) is removed with ``git worktree remove
  --force``, then ``git worktree prune`` runs in its repository. What orch did not commit
  (the run's attempts committed everything; this is what someone changed later) is first
  committed to the worktree's branch, so that nothing is lost. A worktree locked with
  ``git worktree lock`` keeps its run (unlock it first). Branches are never deleted.
- Then the run directory goes.

Named runs that are refused (unknown, live, unfinished, unreadable) and removals that fail
are one line each on stderr, and make the exit code 2; the other runs are cleaned all the
same. With ``--older-than``, runs that are not finished are not candidates: they are
mentioned on stderr when old enough, and do not change the exit code.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import sys
import time
from datetime import datetime
from typing import Any, Callable, List, Optional, Sequence, Tuple

from orch import store, workspace
from orch.errors import OrchError
from orch.layout import RunLayout
from orch.state import RunState

__all__ = ["clean_runs"]

_FINISHED = ("SUCCESS", "FAILED", "CANCELED")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_DAY_SEC = 86400.0

Say = Callable[[str], None]


class _Refused(Exception):
    """This run is kept; the message says why."""


def clean_runs(
    home: str,
    run_ids: Sequence[str],
    older_than_days: Optional[float],
    *,
    dry_run: bool,
    out: Say,
    warn: Say,
    now: Optional[float] = None,
) -> bool:
    """Clean the named runs, or the finished runs older than ``older_than_days``. ``out``
    gets what was (or would be) removed, ``warn`` what was refused; False when a named run
    was refused or a removal failed."""
    ok = True
    if older_than_days is not None:
        names = _old_finished_runs(home, older_than_days, now or time.time(), warn)
    else:
        names = list(dict.fromkeys(run_ids))
    cleaned = 0
    verb = "would remove" if dry_run else "removed"
    for name in names:
        try:
            run_dir = store.run_dir_for(home, name)
            _clean_one(run_dir, dry_run, out, verb)
            cleaned += 1
        except (_Refused, OrchError) as err:
            warn(f"orch: kept run {name}: {err}" if isinstance(err, _Refused) else f"{err}")
            ok = False
    runs = "run" if cleaned == 1 else "runs"
    if not names:
        out("nothing to clean")
    elif cleaned:
        out(f"{'would clean' if dry_run else 'cleaned'} {cleaned} {runs}")
    return ok


def _old_finished_runs(home: str, days: float, now: float, warn: Say) -> List[str]:
    entries, skipped = store.list_runs(home)
    for line in skipped:
        warn(line)
    found = []
    for state, alive in reversed(entries):  # oldest first
        age = now - _ended_epoch(state)
        if age <= days * _DAY_SEC:
            continue
        status = str(state.get("status"))
        if alive or status not in _FINISHED:
            shown = "live" if alive else ("INTERRUPTED" if status == "RUNNING" else status)
            warn(f"orch: kept run {state['run_id']}: not finished ({shown})")
            continue
        found.append(str(state["run_id"]))
    return found


def _ended_epoch(state: RunState) -> float:
    for key in ("ended_at", "updated_at", "created_at"):
        value = state.get(key)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return time.time()


# ----------------------------------------------------------------------------- one run


def _clean_one(run_dir: str, dry_run: bool, out: Say, verb: str) -> None:
    run_id = os.path.basename(run_dir)
    lock_fd = _try_lock(run_dir)
    try:
        if store.owner_alive(run_dir):
            raise _Refused("it is live (its orch process is running)")
        try:
            state = store.read_state(run_dir)
        except OrchError as err:
            raise _Refused(f"its state cannot be read: {err}") from None
        status = str(state.get("status"))
        if status not in _FINISHED:
            shown = "INTERRUPTED" if status == "RUNNING" else status
            raise _Refused(f"it is not finished ({shown}): 'orch resume' or 'orch cancel' it first")
        worktrees = _worktrees_of(run_dir, state)
        if worktrees and not workspace.git_available():
            raise _Refused("git is not on PATH: its worktrees cannot be removed")
        checked = [_inspect(run_id, task_id, path) for task_id, path in worktrees]
        for _, path, root, locked in checked:
            if root is not None and locked and locked != "initializing":
                raise _Refused(f"its worktree {path} is locked ({locked}): unlock it first")
        commons = []
        for task_id, path, root, locked in checked:
            if root is None:
                continue  # not (or no longer) a worktree: deleted with the run directory
            branch = workspace.branch_name(run_id, task_id)
            note = _leftovers(run_id, task_id, path, dry_run)
            if not dry_run:
                force = ["--force", "--force"] if locked else ["--force"]
                tag = (run_id, task_id)
                _git(path, "worktree", "remove", *force, path, tag=tag)
            out(f"{verb} worktree {path} (branch {branch} kept){note}")
            commons.append(root[1])
        for repository in _recorded_repositories(state):
            with contextlib.suppress(_Refused):  # no longer a repository: nothing to prune
                commons.append(_common_dir(repository))
        if not dry_run:
            for common in dict.fromkeys(commons):
                if os.path.isdir(common):
                    _git(common, "worktree", "prune")
            _remove_tree(run_dir)
        out(f"{verb} run {run_id} ({run_dir})")
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _try_lock(run_dir: str) -> Optional[int]:
    """The run's lock, held until the run is gone; _Refused if a live process holds it."""
    path = RunLayout(run_dir).lock
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _Refused(f"its lock cannot be opened: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise _Refused("it is live (another orch process holds its lock)") from None
        raise _Refused(f"its lock cannot be taken: {err.strerror}") from None
    return fd


def _worktrees_of(run_dir: str, state: RunState) -> List[Tuple[str, str]]:
    """(task id, path) of every worktree the run may have: the tasks' and whatever lies in
    ``worktrees/`` (a worktree whose record a crash lost). Only paths orch itself would
    have made: a damaged state cannot point clean anywhere else."""
    layout = RunLayout(run_dir)
    found = {layout.worktree(t): t for t in state["tasks"] if _TASK_ID.match(t)}
    parent = os.path.dirname(layout.worktree("_"))
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for name in sorted(os.listdir(parent)):
            if not name.startswith("."):
                found.setdefault(os.path.join(parent, name), name)
    return [(task_id, path) for path, task_id in found.items() if os.path.lexists(path)]


def _inspect(
    run_id: str, task_id: str, path: str
) -> Tuple[str, str, Optional[Tuple[str, str]], Optional[str]]:
    """(task, path, (git dir, common dir) or None, lock reason or None)."""
    root = workspace.worktree_root(path, (run_id, task_id))
    if root is None:
        return task_id, path, None, None
    locked_file = os.path.join(root[0], "locked")
    try:
        with open(locked_file, encoding="utf-8", errors="replace") as f:
            reason: Optional[str] = f.read().strip() or "no reason given"
    except FileNotFoundError:
        reason = None
    except OSError as err:
        raise _Refused(f"cannot read {locked_file}: {err.strerror}") from None
    return task_id, path, root, reason


def _leftovers(run_id: str, task_id: str, path: str, dry_run: bool) -> str:
    """Commit what nobody committed in the worktree to its branch; a note for the line."""
    tag = (run_id, task_id)
    changes = _git(path, "status", "--porcelain", "--untracked-files=all", tag=tag)
    if not changes.strip():
        return ""
    if dry_run:
        return "; its uncommitted changes would first be committed to the branch"
    message = f"orch: {task_id} uncommitted changes kept by orch clean (run {run_id})"
    try:
        workspace.commit_changes(path, message, tag, None)
    except workspace.GitError as err:
        raise _Refused(f"cannot commit the uncommitted changes in {path}: {err}") from None
    return "; its uncommitted changes were committed to the branch first"


def _recorded_repositories(state: RunState) -> List[str]:
    found = [state.get("repository")]
    found += [entry.get("repository") for entry in state["tasks"].values()]
    return [r for r in dict.fromkeys(found) if isinstance(r, str) and os.path.isdir(r)]


def _common_dir(repository: str) -> str:
    text = _git(repository, "rev-parse", "--git-common-dir")
    return os.path.realpath(os.path.join(repository, text.strip()))


def _git(where: str, *args: str, tag: Optional[Tuple[str, str]] = None) -> str:
    try:
        return workspace.run_git(where, *args, tag=tag, timeout=600.0)[1]
    except workspace.GitError as err:
        raise _Refused(str(err)) from None


def _remove_tree(run_dir: str) -> None:
    """``rm -rf``, also through the read-only directories tools leave (Go's module cache).

    The directory is first renamed to a hidden name: readers (``orch list``) see the run
    whole, or not at all, never half removed.
    """
    gone = os.path.join(os.path.dirname(run_dir), f".removing-{os.path.basename(run_dir)}")
    try:
        os.rename(run_dir, gone)
    except OSError as err:
        raise _Refused(f"cannot remove {run_dir}: {err.strerror or err}") from None

    def retry(func: Callable[..., Any], target: str, exc_info: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            if not os.path.islink(target) and os.path.isdir(target):
                os.chmod(target, stat.S_IRWXU)
        func(target)

    try:
        if sys.version_info >= (3, 12):
            shutil.rmtree(gone, onexc=retry)
        else:
            shutil.rmtree(gone, onerror=retry)
    except OSError as err:
        where = err.filename or gone
        raise _Refused(f"removed from the list, but {where} is left: {err.strerror}") from None
