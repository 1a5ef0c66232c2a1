"""Workspaces: a git worktree per task (``workspace: worktree``); nothing an agent wrote is lost.

The life of a task's worktree:

- ``orch run`` (before the run directory exists): ``check_plan`` finds the repository of every
  worktree task's cwd and its ``HEAD``; a cwd outside a git repository, a repository without a
  commit, or no git at all is a plan error. Worktree tasks may live in several repositories:
  each repository gets its own base (its ``HEAD`` then), recorded on each task
  (``repository``, ``base_commit``) and, when there is only one repository, on the run too.
- The first attempt of a session (``prepare``, in a worker thread: a checkout can take long):
  branch ``orch/<run_id>/<task_id>`` and worktree ``<run dir>/worktrees/<task_id>``, from the
  base or from the branch of the ``worktree_from`` dependency. What an earlier orch left —
  killed between ``git worktree add`` and the state record, or in the middle of the add —
  is adopted, never thrown away: a complete worktree is reused and its uncommitted changes
  committed (as the attempt that made them); a branch without a worktree gets its worktree
  back; a checkout that git itself still marks ``initializing`` (no attempt can have run in
  it) is checked out again from the branch; anything else at the path is moved aside.
- After every attempt (``commit_attempt``, in a worker thread): ``git add -A`` and a commit
  on the worktree's branch if anything changed, then ``head_commit`` and a diffstat against
  the base. A failure is recorded (``workspace_error``), never raised.

Safety: git always gets an argv list (never a shell) and runs with hooks, fsmonitor, commit
signing and automatic gc switched off for orch's own commands; the variables that would point
it at another repository (``GIT_DIR`` and friends) are removed. Before ``git add -A`` orch checks
that the directory is the top level of a worktree of the expected repository (an agent that
deleted the worktree's ``.git`` file must not make orch commit in the user's checkout).
Branch names are built only from the run id and a validated task id. orch never deletes a
branch, never touches the user's checkout or index, never pushes. ``git worktree add`` and
``remove`` of one run are serialized (a threading lock and ``flock`` on a lock file of the run).

The git processes orch starts carry the run's ``ORCH_RUN_ID`` and the task's ``ORCH_TASK_ID``:
after a crash of orch, ``resume`` ends an orphaned one before it touches the worktree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, MutableMapping, Optional, Sequence, Tuple

from orch.errors import PlanError, Problem
from orch.layout import RunLayout
from orch.model import Plan, Task
from orch.state import RunState

__all__ = [
    "GIT_LOCATION_VARS",
    "GitError",
    "Prepared",
    "Target",
    "WorktreeLock",
    "branch_name",
    "check_plan",
    "commit_attempt",
    "commit_changes",
    "commit_message",
    "git_available",
    "prepare",
    "recorded",
    "run_git",
    "scrub_git_env",
    "target_for",
    "with_bases",
    "worktree_root",
]

WORKTREE = "worktree"
# Variables that make git use another repository, index or object store than the one its
# -C directory names: inherited from a hook or a wrapper, they would point orch (and the agents
# in their worktrees) at the user's own repository.
GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)
# For orch's own git commands only: no hook of the repository ever runs, no fsmonitor daemon
# or signing prompt, no background gc in the user's repository.
_GIT_OPTIONS = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
)
_FALLBACK_IDENTITY = (("user.name", "orch"), ("user.email", "orch@localhost"))
_QUICK_SEC = 120.0  # rev-parse, config, worktree list
_SLOW_SEC = 1800.0  # a checkout or `add -A` of a large tree
# Another git process holding a lock of the shared repository (refs, the worktrees list):
# waited for a little, a few times, before the failure counts.
_LOCK_RETRIES = (0.1, 0.3, 1.0)
_LOCK_HINTS = (".lock': File exists",)
# A stale index.lock in orch's own worktree (a git process of orch or of the agent killed
# mid-write): after this long with nothing alive to finish it, it is removed.
_STALE_LOCK_WAIT_SEC = 3.0
_DIFFSTAT_MAX = 8192


class GitError(Exception):
    """A git command that failed; the message says which and why (git's own last lines)."""


def git_available() -> bool:
    return shutil.which("git") is not None


def branch_name(run_id: str, task_id: str) -> str:
    return f"orch/{run_id}/{task_id}"


def commit_message(run_id: str, task_id: str, attempt: int) -> str:
    return f"orch: {task_id} attempt {attempt} (run {run_id})"


def scrub_git_env(env: MutableMapping[str, str]) -> None:
    for key in GIT_LOCATION_VARS:
        env.pop(key, None)


def _git_env(tag: Optional[Tuple[str, str]]) -> Dict[str, str]:
    env = dict(os.environ)
    scrub_git_env(env)
    # Messages in one language (they are recorded and matched), no prompt ever waits on a
    # terminal, and read-only commands take no optional lock on an index.
    env.update({"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"})
    if tag is not None:
        env["ORCH_RUN_ID"], env["ORCH_TASK_ID"] = tag
    return env


def run_git(
    where: str,
    *args: str,
    options: Sequence[str] = (),
    tag: Optional[Tuple[str, str]] = None,
    timeout: float = _QUICK_SEC,
    ok_codes: Sequence[int] = (0,),
) -> Tuple[int, str]:
    """``git <options> -C where args``: (exit code, stdout). GitError for another exit code,
    a timeout, or no git. ``tag``: (run id, task id) for the process's environment."""
    argv = ["git", *_GIT_OPTIONS, *options, "-C", where, *args]
    for pause in (*_LOCK_RETRIES, None):
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=_git_env(tag),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} did not finish within {timeout:g}s") from None
        except OSError as err:
            raise GitError(f"cannot run git: {err.strerror or err}") from None
        if proc.returncode in ok_codes:
            return proc.returncode, os.fsdecode(proc.stdout)
        message = _last_lines(os.fsdecode(proc.stderr) or os.fsdecode(proc.stdout))
        if pause is None or not any(hint in message for hint in _LOCK_HINTS):
            raise GitError(f"git {args[0]} failed (exit {proc.returncode}): {message}")
        time.sleep(pause)
    raise AssertionError("unreachable")


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "no message"


def _out(where: str, *args: str, **kwargs: Any) -> str:
    return run_git(where, *args, **kwargs)[1].strip()


def _real(path: str) -> str:
    return os.path.realpath(path)


# ----------------------------------------------------------------------------- orch run


Bases = Dict[str, Tuple[str, str]]  # task id -> (repository top level, base commit)


def check_plan(plan: Plan, workdir: str) -> Bases:
    """Each worktree task's repository and base commit; PlanError (every problem) otherwise."""
    tasks = [t for t in plan.tasks if t.workspace == WORKTREE]
    if not tasks:
        return {}
    if not git_available():
        ids = ", ".join(t.id for t in tasks[:5]) + (", ..." if len(tasks) > 5 else "")
        message = f"workspace: worktree needs git, which is not on PATH (tasks {ids})"
        raise PlanError([Problem(plan.source, None, None, None, message)])
    tops: Dict[str, Tuple[Optional[str], str]] = {}  # cwd -> (top level, problem)
    heads: Dict[str, Tuple[Optional[str], str]] = {}  # top level -> (HEAD, problem)
    bases: Bases = {}
    problems = []
    for task in tasks:
        cwd = os.path.join(workdir, task.cwd)
        if cwd not in tops:
            tops[cwd] = _repository_of(cwd)
        top, problem = tops[cwd]
        if top is not None and top not in heads:
            heads[top] = _head_of(top)
        head, head_problem = heads[top] if top is not None else (None, "")
        if top is None or head is None:
            message = f"workspace: worktree: {problem or head_problem}"
            problems.append(Problem(plan.source, None, None, task.id, message))
            continue
        bases[task.id] = (top, head)
    if problems:
        raise PlanError(problems)
    return bases


def _repository_of(cwd: str) -> Tuple[Optional[str], str]:
    if not os.path.isdir(cwd):
        return None, f"the task's cwd {cwd} is not a directory"
    try:
        return _real(_out(cwd, "rev-parse", "--show-toplevel")), ""
    except GitError as err:
        return None, f"the task's cwd {cwd} is not inside a git repository ({err})"


def _head_of(top: str) -> Tuple[Optional[str], str]:
    try:
        return _out(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"), ""
    except GitError:
        return None, f"the repository {top} has no commit yet to start worktrees from"


def with_bases(state: RunState, bases: Bases) -> RunState:
    """The initial state with each worktree task's repository and base; the run's own
    ``repository`` and ``base_commit`` when every worktree task uses the same repository
    (null when they span several: each task then names its own)."""
    for task_id, (top, base) in bases.items():
        state["tasks"][task_id].update({"repository": top, "base_commit": base})
    distinct = set(bases.values())
    if distinct:
        only: Tuple[Optional[str], Optional[str]] = (None, None)
        if len(distinct) == 1:
            only = distinct.pop()
        state["repository"], state["base_commit"] = only
    return state


# ----------------------------------------------------------------------------- the worktree


@dataclass(frozen=True)
class Target:
    """One task's worktree as the scheduler knows it; built on the loop thread."""

    run_id: str
    task_id: str
    path: str  # <run dir>/worktrees/<task_id>
    branch: str  # orch/<run_id>/<task_id>
    cwd: str  # the task's cwd in the user's tree (workdir/cwd)
    lock_path: str
    repository: Optional[str] = None  # None: not recorded yet (found from cwd)
    base_commit: Optional[str] = None
    start_branch: Optional[str] = None  # worktree_from: the dependency's branch
    known_bases: Tuple[Tuple[str, str], ...] = ()  # (repository, base) the run already has

    @property
    def tag(self) -> Tuple[str, str]:
        return self.run_id, self.task_id


@dataclass(frozen=True)
class Prepared:
    """The outcome of ``prepare``: fields to record on the task, and where the attempt runs
    (``cwd`` None: it cannot run, ``error`` says why)."""

    target: Target
    fields: Dict[str, Any]
    cwd: Optional[str]
    error: Optional[str] = None


def _worktrees_dir(run_dir: str) -> str:
    return os.path.dirname(RunLayout(run_dir).worktree("_"))


def target_for(task: Task, state: RunState, run_dir: str) -> Target:
    entry = state["tasks"][task.id]
    known = {}
    if entry.get("repository") is None:
        # A task that got its worktree after the run was created (resume --plan): it takes
        # the base the run has for its repository, if any.
        for other in [state, *state["tasks"].values()]:
            top, base = other.get("repository"), other.get("base_commit")
            if isinstance(top, str) and isinstance(base, str):
                known[top] = base
    run_id = str(state["run_id"])
    return Target(
        run_id=run_id,
        task_id=task.id,
        path=RunLayout(run_dir).worktree(task.id),
        branch=branch_name(run_id, task.id),
        cwd=os.path.join(state["workdir"], task.cwd),
        lock_path=os.path.join(_worktrees_dir(run_dir), ".lock"),
        repository=entry.get("repository"),
        base_commit=entry.get("base_commit"),
        start_branch=branch_name(run_id, task.worktree_from) if task.worktree_from else None,
        known_bases=tuple(sorted(known.items())),
    )


def recorded(task: Task, state: RunState, run_dir: str) -> Optional[Prepared]:
    """The worktree the state records for the task (made by an earlier session), as
    ``prepare`` would give it; None if it has none."""
    entry = state["tasks"][task.id]
    if not entry.get("worktree") or not entry.get("repository") or not entry.get("base_commit"):
        return None
    target = target_for(task, state, run_dir)
    return Prepared(target, {}, _cwd_of(target))


def _cwd_of(target: Target) -> Optional[str]:
    rel = os.path.relpath(_real(target.cwd), str(target.repository))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return os.path.normpath(os.path.join(target.path, rel))


class WorktreeLock:
    """Serializes ``git worktree add`` and ``remove`` for one run: between the threads of
    this process, and through ``flock`` with any other process that takes it. (Parallel adds
    into one repository race on its worktree list and refs under load.)"""

    def __init__(self) -> None:
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, path: str) -> Iterator[None]:
        with self._thread_lock:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)


def worktree_root(path: str, tag: Optional[Tuple[str, str]] = None) -> Optional[Tuple[str, str]]:
    """(git dir, common dir) when ``path`` is the top level of a git worktree, else None.

    Checked before orch runs ``add -A`` there: without its ``.git`` file, git would find the
    repository around the path (the user's own, when the orch home lies inside it).
    """
    # A symlink there could lead to the user's own checkout, whose top level it then is.
    if os.path.islink(path) or not os.path.isdir(path):
        return None
    try:
        text = _out(
            path,
            "rev-parse",
            "--show-toplevel",
            "--absolute-git-dir",
            "--git-common-dir",
            tag=tag,
        )
    except GitError:
        return None
    lines = text.splitlines()
    if len(lines) != 3 or _real(lines[0]) != _real(path):
        return None
    git_dir, common = _real(lines[1]), _real(os.path.join(path, lines[2]))
    if git_dir == common:
        return None  # a main worktree (a repository of its own), never one orch made
    return git_dir, common


@functools.lru_cache(maxsize=64)
def _common_dir(top: str) -> str:
    """The repository's common git directory (it never changes while orch runs)."""
    return _real(os.path.join(top, _out(top, "rev-parse", "--git-common-dir")))


def _registered(top: str, tag: Tuple[str, str]) -> Dict[str, Dict[str, str]]:
    """``git worktree list --porcelain``: real path -> its attributes (branch, locked, ...)."""
    found: Dict[str, Dict[str, str]] = {}
    current: Optional[Dict[str, str]] = None
    for line in _out(top, "worktree", "list", "--porcelain", tag=tag).splitlines():
        key, _, value = line.partition(" ")
        if key == "worktree":
            current = {}
            found[_real(value)] = current
            current["path"] = value
        elif current is not None and key:
            current[key] = value
    return found


def prepare(target: Target, lock: WorktreeLock, last_attempt: int) -> Prepared:
    """Create or adopt the task's worktree; never raises. ``last_attempt``: the number of the
    task's latest recorded attempt (what uncommitted changes found in an adopted worktree
    are committed as)."""
    notes: List[str] = []
    try:
        target = _resolve(target)
        fields: Dict[str, Any] = {
            "repository": target.repository,
            "base_commit": target.base_commit,
            "worktree": target.path,
            "branch": target.branch,
        }
        with lock.hold(target.lock_path):
            adopted = _ensure(target, notes)
        cwd = _cwd_inside(target)
    except (GitError, OSError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        message = f"cannot prepare the worktree of task {target.task_id}: {reason}"
        failed: Dict[str, Any] = {"workspace_error": message}
        if target.repository is not None:
            failed.update(repository=target.repository, base_commit=target.base_commit)
        return Prepared(target, failed, None, message)
    if adopted:
        committed = commit_attempt(target, max(1, last_attempt))
        fields.update(committed)
        notes.append(committed["workspace_error"] or "")
    else:
        fields.update(_head_fields(target, notes))
    fields["workspace_error"] = "; ".join(note for note in notes if note) or None
    return Prepared(target, fields, cwd)


def _resolve(target: Target) -> Target:
    if target.repository is not None and target.base_commit is not None:
        return target
    top, problem = _repository_of(target.cwd)
    if top is None:
        raise GitError(problem)
    base = dict(target.known_bases).get(top)
    if base is None:
        base, problem = _head_of(top)
        if base is None:
            raise GitError(problem)
    return dataclasses.replace(target, repository=top, base_commit=base)


def _ensure(target: Target, notes: List[str]) -> bool:
    """Make the worktree exist; True if one already there was adopted."""
    top = str(target.repository)
    tag = target.tag
    listed = _registered(top, tag)
    # The path itself is not resolved: a symlink there is not the worktree it leads to.
    here = os.path.join(_real(os.path.dirname(target.path)), os.path.basename(target.path))
    mine = listed.get(here)
    if os.path.lexists(target.path):
        root = worktree_root(target.path, tag)
        if mine is not None and root is None and not os.path.islink(target.path):
            # Registered, its .git file damaged (by an agent): git can write it again.
            with contextlib.suppress(GitError):
                run_git(top, "worktree", "repair", target.path, tag=tag, ok_codes=(0, 1))
            root = worktree_root(target.path, tag)
        if mine is not None and root is not None and root[1] == _common_dir(top):
            if mine.get("locked") != "initializing":
                return True
            # `git worktree add` was killed before it finished: no attempt can have run in
            # this checkout (orch starts one only after the add returned). Checked out again
            # from the branch, which is kept.
            run_git(top, "worktree", "remove", "--force", "--force", target.path, tag=tag)
            mine = None
        else:
            _move_aside(target.path, notes)
    if mine is not None and not os.path.lexists(target.path):
        # Registered, its directory gone: the registration would refuse the add.
        run_git(top, "worktree", "remove", "--force", "--force", target.path, tag=tag)
    _release_branch(target, listed)
    _add(target)
    return False


def _move_aside(path: str, notes: List[str]) -> None:
    """Something at the worktree's path that is not its worktree: an empty directory (an add
    that died before git wrote into it) goes; anything else is kept, beside it."""
    with contextlib.suppress(OSError):
        os.rmdir(path)
        return
    for number in range(1, 1000):
        aside = f"{path}.orphan-{number}"
        if not os.path.lexists(aside):
            os.rename(path, aside)
            notes.append(f"{path} was not a worktree of the repository: moved to {aside}")
            return
    raise GitError(f"{path} is in the way and cannot be moved aside")


def _release_branch(target: Target, listed: Mapping[str, Mapping[str, str]]) -> None:
    """The task's branch registered as checked out at a path that no longer exists (the run
    directory was moved): that stale registration would refuse the add."""
    ref = f"refs/heads/{target.branch}"
    for real, attrs in listed.items():
        if attrs.get("branch") == ref and real != _real(target.path):
            if os.path.exists(real):
                raise GitError(f"branch {target.branch} is checked out at {attrs['path']}")
            top = str(target.repository)
            run_git(top, "worktree", "remove", "--force", "--force", attrs["path"], tag=target.tag)


def _branch_exists(top: str, branch: str, tag: Tuple[str, str]) -> bool:
    ref = f"refs/heads/{branch}"
    code, _ = run_git(top, "rev-parse", "--verify", "--quiet", ref, tag=tag, ok_codes=(0, 1))
    return code == 0


def _add(target: Target) -> None:
    top = str(target.repository)
    tag = target.tag
    # A `git branch` killed while it created the branch (orch's process group killed).
    _clear_stale_locks(_ref_lock(_common_dir(top), target.branch))
    if _branch_exists(top, target.branch, tag):
        # Left by an earlier session (the add died, or the worktree was removed): its
        # commits are the task's work so far, checked out as they are.
        again = ("worktree", "add", "--quiet", target.path, target.branch)
        run_git(top, *again, tag=tag, timeout=_SLOW_SEC)
        return
    start = str(target.base_commit)
    # A dependency that never got a worktree (it failed before) leaves the base as the start.
    if target.start_branch is not None and _branch_exists(top, target.start_branch, tag):
        start = f"refs/heads/{target.start_branch}"
    add = ("worktree", "add", "--quiet", "--no-track", "-b", target.branch, target.path, start)
    run_git(top, *add, tag=tag, timeout=_SLOW_SEC)


def _cwd_inside(target: Target) -> str:
    """The task's cwd in its worktree: the same path relative to the repository."""
    cwd = _cwd_of(target)
    if cwd is None:
        raise GitError(f"the task's cwd {target.cwd} is not inside {target.repository}")
    # A directory git does not track (empty, or ignored) is not in the checkout.
    os.makedirs(cwd, exist_ok=True)
    return cwd


# ----------------------------------------------------------------------------- commits


def commit_attempt(target: Target, attempt: int) -> Dict[str, Any]:
    """Commit what the attempt left uncommitted; the task fields to record. Never raises:
    a failure is ``workspace_error``, and the changes stay in the worktree for the next
    attempt's commit."""
    fields: Dict[str, Any] = {"workspace_error": None}
    notes: List[str] = []
    message = commit_message(target.run_id, target.task_id, attempt)
    try:
        notes += commit_changes(target.path, message, target.tag, target.repository)
    except (GitError, OSError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        notes.append(f"commit of attempt {attempt} failed: {reason}")
    fields.update(_head_fields(target, notes))
    fields["workspace_error"] = "; ".join(notes) or None
    return fields


def commit_changes(
    path: str, message: str, tag: Tuple[str, str], repository: Optional[str]
) -> List[str]:
    """``git add -A`` and a commit in the worktree at ``path`` if anything changed (or a merge
    is pending); notes on what had to be repaired. GitError if it cannot be done."""
    notes: List[str] = []
    root = worktree_root(path, tag)
    if root is None and os.path.isdir(path) and not os.path.islink(path) and repository:
        # Its .git file damaged or removed (by an agent): git can write it again.
        with contextlib.suppress(GitError):
            # Exit 1 when it found something to repair, whether it could or not.
            run_git(repository, "worktree", "repair", path, tag=tag, ok_codes=(0, 1))
        root = worktree_root(path, tag)
        if root is not None:
            notes.append(f"repaired the worktree's .git file ({path})")
    if root is None or (repository and root[1] != _common_dir(repository)):
        raise GitError(f"{path} is not a git worktree of {repository} any more")
    git_dir, common = root
    branch = branch_name(*tag)
    _clear_stale_locks(
        os.path.join(git_dir, "index.lock"),
        os.path.join(git_dir, "HEAD.lock"),
        _ref_lock(common, branch),
    )
    run_git(path, "add", "--all", tag=tag, timeout=_SLOW_SEC)
    code, _ = run_git(
        path, "diff", "--cached", "--quiet", "--no-ext-diff", tag=tag, ok_codes=(0, 1)
    )
    if code == 0 and not os.path.exists(os.path.join(git_dir, "MERGE_HEAD")):
        return notes  # nothing changed (a merge the agent left unconcluded is concluded)
    options = _identity(path, tag)
    commit = ("commit", "--no-verify", "--quiet", "-m", message)
    run_git(path, *commit, options=options, tag=tag, timeout=_SLOW_SEC)
    return notes


def _identity(path: str, tag: Tuple[str, str]) -> List[str]:
    """``-c user.name=orch`` / ``-c user.email=orch@localhost`` for what git config lacks."""
    pattern = r"^user\.(name|email)$"
    _, text = run_git(path, "config", "--get-regexp", pattern, tag=tag, ok_codes=(0, 1))
    have = {line.split(" ", 1)[0] for line in text.splitlines() if " " in line.strip()}
    options: List[str] = []
    for key, fallback in _FALLBACK_IDENTITY:
        if key not in have:
            options += ["-c", f"{key}={fallback}"]
    return options


def _clear_stale_locks(*locks: str) -> None:
    """Lock files of orch's own worktree and branch (its index, HEAD, branch ref) left by a
    git process that was killed (orch's, or the agent's). Nothing of this task runs any more
    and this run has one owner: a lock still there after a moment is stale, and removed so
    that the commit or add can go on."""
    deadline = time.monotonic() + _STALE_LOCK_WAIT_SEC
    while any(os.path.exists(lock) for lock in locks) and time.monotonic() < deadline:
        time.sleep(0.1)
    for lock in locks:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _ref_lock(common_dir: str, branch: str) -> str:
    return os.path.join(common_dir, "refs", "heads", *branch.split("/")) + ".lock"


def _head_fields(target: Target, notes: List[str]) -> Dict[str, Any]:
    fields: Dict[str, Any] = {}
    try:
        text = _out(
            target.path, "rev-parse", "HEAD^{commit}", "--symbolic-full-name", "HEAD",
            tag=target.tag,
        )  # fmt: skip
        head, _, branch = text.partition("\n")
        fields["head_commit"] = head
        if branch != f"refs/heads/{target.branch}":
            notes.append(f"the worktree's HEAD is {branch or 'detached'}, not {target.branch}")
        _, stat = run_git(
            target.path,
            "diff",
            "--stat=100",
            "--stat-count=40",
            "--no-ext-diff",
            "--no-color",
            str(target.base_commit),
            head,
            "--",
            tag=target.tag,
            timeout=_SLOW_SEC,
        )
        fields["diffstat"] = stat.rstrip()[:_DIFFSTAT_MAX]
    except GitError as err:
        notes.append(str(err))
    return fields
