"""Output collection and the ORCH_CONTEXT file.

Outputs
-------
``collect_outputs`` runs after every attempt of a task, success or not. Each pattern of the
task's ``outputs`` is matched against the task's cwd; every match is copied to
``<run>/artifacts/<task_id>/<relative path>`` and, when the plan sets ``artifacts_dir``, also to
``<artifacts_dir>/<task_id>/<relative path>``.

Pattern language (relative to the task's cwd, ``/``-separated):

- ``*`` any run of characters inside one path segment, ``?`` one character, ``[...]`` a set
  (``[!...]`` negates); matching is case-sensitive (``fnmatch.fnmatchcase``).
- ``**`` as a whole segment: zero or more directories. A trailing ``**`` (``dist/**``) collects
  the directory whole, so ``dist/**`` and ``dist`` collect the same files.
- A matched directory is copied whole, empty subdirectories included.
- Dotfiles are not special: ``*`` matches ``.env`` and ``**`` descends into ``.cache/``, as in
  ``.gitignore``. A task lists what it wants collected; hiding some of it silently would be worse.
- Empty and ``.`` segments are ignored (``./dist/`` is ``dist``). Absolute patterns and ``..``
  are refused here too (plan validation rejects them first).

Symlinks: matching never descends through a symlinked directory (no loops, and the relative
path of a match is always the lexical path below the cwd). A matched symlink, or one met inside
a matched directory, is resolved: if its target lies inside the task's cwd, the target's content
(a file, or a directory copied whole) is collected under the link's name; if it points outside
the cwd or dangles, nothing is read through it and an error is recorded
(``x: symlink points outside the task's cwd, not collected``). A symlinked directory that leads
back to one of its own ancestors is recorded as a loop. Only regular files and directories are
copied: a FIFO, socket or device is recorded as an error and never opened for a blocking read.

orch's own artifact directories (this run's ``artifacts/`` and the plan's ``artifacts_dir``) are
skipped when they lie inside the cwd, so ``**`` never copies a collection into itself; the
caller may name more (``exclude=``, e.g. orch's home).

Copies stream in 1 MiB chunks, hashing (sha256) in the same pass; memory does not grow with file
size. In the run directory files are 0600 and directories 0700; in ``artifacts_dir`` they are
created with the usual modes (the umask applies) and keep the source's executable bits.

Replacement is whole: the task's new tree is built in a temporary directory beside the
destination, then swapped in with two renames (the old tree is renamed away, the new one into
place, the old one removed), so a reader that opens the path sees the old tree, the new tree,
or briefly none, but never a mix; a reader already inside the old tree sees it emptied as it
is removed, as with any rename-based swap. The latest attempt's outputs are what count: if
nothing matched, the task's destination is left as an empty directory. A task without
``outputs`` touches nothing, and tasks that are not re-run (SUCCESS tasks on resume) keep their
artifacts.

Collection problems (permission denied, a file vanishing mid-copy, a full disk, a bad pattern)
never raise: each becomes one line in ``Collected.errors`` (``report.json: Permission denied``).

ORCH_CONTEXT
------------
``write_context`` writes ``<run>/context/<task_id>.json`` (in place, mode 0600) before each
attempt; the task finds it through ``$ORCH_CONTEXT``. Tasks that share their dependencies (or
have none) share one file, written once per session, without ``task_id`` and ``attempt``::

    {
      "schema_version": 1,
      "run_id": "20261125_090000_a1b2c3",
      "task_id": "summarize",
      "attempt": 1,                          # same as $ORCH_ATTEMPT
      "run_dir": "/abs/.orch/runs/20261125_090000_a1b2c3",
      "artifacts_dir": "/abs/.orch/runs/20261125_090000_a1b2c3/artifacts",
      "dependencies": {                      # one entry per depends_on id, in that order
        "analyze": {
          "status": "SUCCESS",
          "exit_code": 0,                    # null if killed by a signal or never started
          "stdout_path": "/abs/.../logs/analyze.out.log",
          "stderr_path": "/abs/.../logs/analyze.err.log",
          "artifacts_dir": "/abs/.../artifacts/analyze",
          "artifact_paths": ["/abs/.../artifacts/analyze/result.json"]
        }
      }
    }

All paths are absolute. ``artifact_paths`` lists collected files (not directories), sorted.
A dependency with ``workspace: worktree`` also has ``worktree``, ``branch`` and
``head_commit`` (its branch's head after its last attempt).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import (
    IO,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from orch import procs

__all__ = [
    "CONTEXT_SCHEMA_VERSION",
    "Collected",
    "Matches",
    "collect_outputs",
    "match_outputs",
    "resolve_artifacts_dir",
    "write_context",
]

CONTEXT_SCHEMA_VERSION = 1

_CHUNK = 1 << 20
_MAGIC = re.compile(r"[*?\[]")
# Ids are validated by the plan; this guards the file system against any id that slipped past.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Collected:
    """What one collection produced; every field is ready to store in the task's state."""

    artifacts: List[Dict[str, object]]  # [{"path": rel posix, "size": int, "sha256": hex}]
    artifact_paths: List[str]  # absolute, under <run>/artifacts/<task_id>/
    missing_outputs: List[str]  # patterns that matched nothing
    errors: List[str]  # one line each: "report.json: Permission denied"


@dataclass(frozen=True)
class Matches:
    """Result of matching patterns: relative posix paths, none inside another; "." is the cwd."""

    paths: List[str]
    missing: List[str]
    errors: List[str]


# --------------------------------------------------------------------------- helpers


def _posix_join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _shown(rel: str) -> str:
    return rel or "."


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _inside_any(path: str, roots: Iterable[str]) -> bool:
    return any(_inside(path, root) for root in roots)


def resolve_artifacts_dir(artifacts_dir: Optional[str], workdir: str) -> Optional[str]:
    """The plan's ``artifacts_dir`` as an absolute path: relative to ``workdir``, absolute as is."""
    if artifacts_dir is None:
        return None
    return os.path.abspath(os.path.join(workdir, os.path.expanduser(artifacts_dir)))


# --------------------------------------------------------------------------- matching


def _split_pattern(pattern: str) -> Tuple[Optional[List[str]], Optional[str]]:
    """Pattern -> segments (consecutive ``**`` merged), or an error message."""
    if not pattern or "\0" in pattern:
        return None, f"pattern {pattern!r}: not a valid pattern"
    if pattern.startswith("/"):
        return None, f"pattern {pattern!r}: absolute patterns are not allowed"
    segments: List[str] = []
    for seg in pattern.split("/"):
        if seg == "..":
            return None, f"pattern {pattern!r}: '..' is not allowed"
        if seg in ("", ".") or (seg == "**" and segments[-1:] == ["**"]):
            continue
        segments.append(seg)
    return segments, None


class _Walker:
    """Matches segments below ``root`` without following symlinks; listings are cached."""

    def __init__(self, root: str, excluded: Sequence[str]) -> None:
        self.root = root
        self.excluded = excluded
        self.errors: List[str] = []
        self._listings: Dict[str, List[Tuple[str, bool]]] = {}

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _entries(self, rel: str) -> List[Tuple[str, bool]]:
        cached = self._listings.get(rel)
        if cached is not None:
            return cached
        entries: List[Tuple[str, bool]] = []
        try:
            with os.scandir(self._abs(rel)) as it:
                for entry in it:
                    entries.append((entry.name, self._is_real_dir(entry)))
        except OSError as err:
            self.errors.append(f"{_shown(rel)}: {_reason(err)}")
        entries = [(n, d) for n, d in entries if not (d and self._excluded(_posix_join(rel, n)))]
        entries.sort()
        self._listings[rel] = entries
        return entries

    @staticmethod
    def _is_real_dir(entry: os.DirEntry[str]) -> bool:
        try:
            return entry.is_dir(follow_symlinks=False)
        except OSError:
            return False

    def _excluded(self, rel: str) -> bool:
        return _inside_any(self._abs(rel), self.excluded)

    def _literal(self, rel: str, name: str) -> List[Tuple[str, bool]]:
        child = _posix_join(rel, name)
        try:
            st = os.lstat(self._abs(child))
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTDIR):
                self.errors.append(f"{child}: {_reason(err)}")
            return []
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and self._excluded(child):
            return []
        return [(name, is_dir)]

    def match(self, segments: Sequence[str], index: int, rel: str, out: Set[str]) -> None:
        if index == len(segments):
            out.add(rel)
            return
        seg = segments[index]
        if seg == "**":
            if index + 1 == len(segments):
                out.add(rel)  # the directory itself, copied whole
                return
            self.match(segments, index + 1, rel, out)
            for name, is_dir in self._entries(rel):
                if is_dir:
                    self.match(segments, index, _posix_join(rel, name), out)
            return
        if _MAGIC.search(seg):
            candidates = [(n, d) for n, d in self._entries(rel) if fnmatchcase(n, seg)]
        else:
            candidates = self._literal(rel, seg)
        last = index + 1 == len(segments)
        for name, is_dir in candidates:
            if last:
                out.add(_posix_join(rel, name))
            elif is_dir:
                self.match(segments, index + 1, _posix_join(rel, name), out)


def _outermost(paths: Set[str]) -> List[str]:
    """Drop paths inside another matched path: a matched directory is copied whole anyway."""
    if "" in paths:
        return [""]
    kept = []
    for path in sorted(paths):
        parts = path.split("/")
        if not any("/".join(parts[:k]) in paths for k in range(1, len(parts))):
            kept.append(path)
    return kept


def _match(
    patterns: Sequence[str], root: str, excluded: Sequence[str]
) -> Tuple[List[str], Matches]:
    walker = _Walker(root, excluded)
    found: Set[str] = set()
    missing: List[str] = []
    pattern_errors: List[str] = []
    for pattern in patterns:
        segments, problem = _split_pattern(pattern)
        if segments is None:
            pattern_errors.append(problem or pattern)
            continue
        out: Set[str] = set()
        walker.match(segments, 0, "", out)
        if not out:
            missing.append(pattern)
        found |= out
    paths = _outermost(found)
    matches = Matches([p or "." for p in paths], missing, pattern_errors + walker.errors)
    return paths, matches


def match_outputs(patterns: Sequence[str], cwd: str, exclude: Sequence[str] = ()) -> Matches:
    """Match ``patterns`` below ``cwd`` (nothing is read but directory listings).

    ``exclude``: directories (any spelling) whose subtrees are never matched.
    """
    root = os.path.realpath(cwd)
    return _match(patterns, root, [os.path.realpath(p) for p in exclude])[1]


# --------------------------------------------------------------------------- destinations


class _Target:
    """One destination tree (<root>/<task_id>) being rebuilt in a temporary sibling."""

    def __init__(self, parent: str, task_id: str, private: bool) -> None:
        self.parent = parent
        self.final = os.path.join(parent, task_id)
        self.task_id = task_id
        self.private = private
        self.tmp: Optional[str] = None
        self.rels: Set[str] = set()  # files successfully written

    def dir_mode(self) -> int:
        return 0o700 if self.private else 0o777

    def file_mode(self, src_mode: int) -> int:
        return 0o600 if self.private else 0o666 | (src_mode & 0o111)

    def prepare(self) -> None:
        os.makedirs(self.parent, mode=self.dir_mode(), exist_ok=True)
        _remove_stale(self.parent, self.task_id)
        while True:
            name = f".{self.task_id}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
            path = os.path.join(self.parent, name)
            try:
                os.mkdir(path, self.dir_mode())
            except FileExistsError:
                continue
            self.tmp = path
            return

    def dest(self, rel: str) -> str:
        assert self.tmp is not None
        path = os.path.normpath(os.path.join(self.tmp, *rel.split("/")))
        # Names come from directory listings, so this holds by construction; checked anyway.
        if not _inside(path, self.tmp):
            raise _Outside(rel)
        return path

    def swap(self) -> None:
        """Old tree renamed away, new one renamed in: readers never see a mix."""
        assert self.tmp is not None
        old = None
        if os.path.lexists(self.final):
            old = os.path.join(
                self.parent, f".{self.task_id}.old-{os.getpid()}-{os.urandom(4).hex()}"
            )
            os.rename(self.final, old)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if old is not None:
                os.rename(old, self.final)
            raise
        self.tmp = None
        if old is not None:
            _remove(old)

    def discard(self) -> None:
        if self.tmp is not None:
            _remove(self.tmp)
            self.tmp = None


class _Outside(Exception):
    pass


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _remove_stale(parent: str, task_id: str) -> None:
    """Temporary trees left by a collector that was killed (its pid is gone)."""
    stale = re.compile(re.escape(f".{task_id}.") + r"(?:tmp|old)-(\d+)-[0-9a-f]+\Z")
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        found = stale.match(name)
        if found and not procs.pid_exists(int(found.group(1))):
            _remove(os.path.join(parent, name))


# --------------------------------------------------------------------------- copying


class _Copier:
    """Copies matched paths into every target, recording errors instead of raising."""

    def __init__(self, root: str, excluded: Sequence[str], targets: List[_Target]) -> None:
        self.root = root
        self.excluded = excluded
        self.targets = targets
        self.errors: List[str] = []
        self.hashes: Dict[str, Tuple[int, str]] = {}

    def collect(self, rel: str) -> None:
        # Iterative, so a very deep tree cannot exhaust the recursion limit.
        stack: List[Tuple[str, str, FrozenSet[str]]] = [
            (os.path.join(self.root, rel) if rel else self.root, rel, frozenset())
        ]
        while stack:
            src, item_rel, ancestors = stack.pop()
            try:
                children = self._one(src, item_rel, ancestors)
            except _Outside:
                self.errors.append(f"{item_rel}: destination outside the artifacts directory")
                continue
            stack.extend(reversed(children))

    def _one(
        self, src: str, rel: str, ancestors: FrozenSet[str]
    ) -> List[Tuple[str, str, FrozenSet[str]]]:
        try:
            st = os.lstat(src)
        except OSError as err:
            self.errors.append(f"{_shown(rel)}: {_reason(err)}")
            return []
        if stat.S_ISLNK(st.st_mode):
            resolved = self._resolve_link(src, rel, ancestors)
            if resolved is None:
                return []
            src, st = resolved
        if stat.S_ISDIR(st.st_mode):
            return self._directory(src, rel, ancestors | {src})
        if stat.S_ISREG(st.st_mode):
            self._file(src, rel)
        else:
            self.errors.append(f"{rel}: not a regular file or directory, not collected")
        return []

    def _resolve_link(
        self, src: str, rel: str, ancestors: FrozenSet[str]
    ) -> Optional[Tuple[str, os.stat_result]]:
        target = os.path.realpath(src)
        if not _inside(target, self.root):
            self.errors.append(f"{rel}: symlink points outside the task's cwd, not collected")
            return None
        if _inside_any(target, self.excluded):
            self.errors.append(f"{rel}: symlink points into orch's artifacts, not collected")
            return None
        try:
            st = os.stat(target)
        except OSError:
            self.errors.append(f"{rel}: broken symlink, not collected")
            return None
        if stat.S_ISDIR(st.st_mode) and any(_inside(a, target) for a in ancestors):
            self.errors.append(f"{rel}: symlink loop, not collected")
            return None
        return target, st

    def _directory(
        self, src: str, rel: str, ancestors: FrozenSet[str]
    ) -> List[Tuple[str, str, FrozenSet[str]]]:
        if rel:
            for target in self.targets:
                self._mkdirs(target, rel)
        children = []
        try:
            with os.scandir(src) as it:
                names = sorted(entry.name for entry in it)
        except OSError as err:
            self.errors.append(f"{_shown(rel)}: {_reason(err)}")
            return []
        for name in names:
            child = os.path.join(src, name)
            if not _inside_any(child, self.excluded):
                children.append((child, _posix_join(rel, name), ancestors))
        return children

    def _mkdirs(self, target: _Target, rel: str) -> bool:
        try:
            os.makedirs(target.dest(rel), mode=target.dir_mode(), exist_ok=True)
        except OSError as err:
            self.errors.append(f"{rel}: cannot write to {target.parent}: {_reason(err)}")
            return False
        return True

    def _file(self, src: str, rel: str) -> None:
        try:
            fd = os.open(src, _READ_FLAGS)
        except OSError as err:
            self.errors.append(f"{rel}: {_reason(err)}")
            return
        with os.fdopen(fd, "rb") as reader:
            try:
                st = os.fstat(fd)
            except OSError as err:
                self.errors.append(f"{rel}: {_reason(err)}")
                return
            if not stat.S_ISREG(st.st_mode):  # replaced after the lstat: never block on it
                self.errors.append(f"{rel}: not a regular file or directory, not collected")
                return
            self._stream(reader, rel, st.st_mode)

    def _open_writers(self, rel: str, src_mode: int) -> List[Tuple[_Target, IO[bytes]]]:
        writers: List[Tuple[_Target, IO[bytes]]] = []
        parent = rel.rpartition("/")[0]
        for target in self.targets:
            if parent and not self._mkdirs(target, parent):
                continue
            try:
                wfd = os.open(target.dest(rel), _WRITE_FLAGS, target.file_mode(src_mode))
            except OSError as err:
                self.errors.append(f"{rel}: cannot write to {target.parent}: {_reason(err)}")
                continue
            writers.append((target, os.fdopen(wfd, "wb")))
        return writers

    def _stream(self, reader: IO[bytes], rel: str, src_mode: int) -> None:
        import hashlib  # here, not at the top: OpenSSL costs every orch process ~4 MB

        writers = self._open_writers(rel, src_mode)
        digest = hashlib.sha256()
        size = 0
        try:
            while True:
                chunk = reader.read(_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                writers = self._write_all(writers, rel, chunk)
        except OSError as err:
            self.errors.append(f"{rel}: {_reason(err)}")
            for target, writer in writers:
                _close_and_remove(writer, target.dest(rel))
            return
        for target, writer in writers:
            try:
                writer.close()
            except OSError as err:
                self.errors.append(f"{rel}: cannot write to {target.parent}: {_reason(err)}")
                _remove(target.dest(rel))
                continue
            target.rels.add(rel)
        self.hashes[rel] = (size, digest.hexdigest())

    def _write_all(
        self, writers: List[Tuple[_Target, IO[bytes]]], rel: str, chunk: bytes
    ) -> List[Tuple[_Target, IO[bytes]]]:
        alive = []
        for target, writer in writers:
            try:
                writer.write(chunk)
            except OSError as err:
                self.errors.append(f"{rel}: cannot write to {target.parent}: {_reason(err)}")
                _close_and_remove(writer, target.dest(rel))
                continue
            alive.append((target, writer))
        return alive


def _close_and_remove(writer: IO[bytes], path: str) -> None:
    with contextlib.suppress(OSError):
        writer.close()
    _remove(path)


# --------------------------------------------------------------------------- collection


def collect_outputs(
    patterns: Sequence[str],
    cwd: str,
    run_artifacts_dir: str,
    extra_artifacts_dir: Optional[str],
    task_id: str,
    *,
    workdir: Optional[str] = None,
    exclude: Sequence[str] = (),
) -> Collected:
    """Collect the task's outputs, replacing its previous artifacts as a whole. Never raises
    for a collection problem: they end up in ``errors``.

    ``run_artifacts_dir`` is ``<run>/artifacts``; a relative ``extra_artifacts_dir`` is taken
    relative to ``workdir`` (default: the current directory). ``exclude``: more directories
    never collected from (e.g. orch's home when it lies inside the cwd).
    """
    if not patterns:
        return Collected([], [], [], [])
    if not _SAFE_NAME.match(task_id):
        return Collected([], [], [], [f"task id {task_id!r} is not a safe name, nothing collected"])
    targets = [_Target(os.path.abspath(run_artifacts_dir), task_id, private=True)]
    if extra_artifacts_dir is not None:
        extra = resolve_artifacts_dir(extra_artifacts_dir, workdir or os.getcwd())
        targets.append(_Target(extra or "", task_id, private=False))
    errors: List[str] = []
    try:
        return _collect(patterns, cwd, targets, exclude, errors)
    except OSError as err:  # last resort: a collection problem must not end the run
        errors.append(f"collecting outputs: {_reason(err)}")
        return Collected([], [], list(patterns), errors)
    finally:
        for target in targets:
            target.discard()


def _collect(
    patterns: Sequence[str],
    cwd: str,
    targets: List[_Target],
    exclude: Sequence[str],
    errors: List[str],
) -> Collected:
    ready = []
    for target in targets:
        try:
            target.prepare()
        except OSError as err:
            errors.append(f"cannot write to {target.parent}: {_reason(err)}")
            continue
        ready.append(target)
    root = os.path.realpath(cwd)
    excluded = [os.path.realpath(p) for p in [t.parent for t in targets] + list(exclude)]
    paths: List[str] = []
    if os.path.isdir(root):
        matches = match_outputs(patterns, root, excluded)
        paths = ["" if p == "." else p for p in matches.paths]
    else:
        errors.append(f"task cwd {cwd} is not a directory, nothing collected")
        matches = Matches([], list(patterns), [])
    errors.extend(matches.errors)
    copier = _Copier(root, excluded, ready)
    for rel in paths:
        copier.collect(rel)
    errors.extend(copier.errors)
    swapped = []
    for target in ready:
        try:
            target.swap()
        except OSError as err:
            errors.append(f"cannot replace {target.final}: {_reason(err)}")
            continue
        swapped.append(target)
    return _result(targets[0], swapped, copier.hashes, matches.missing, errors)


def _result(
    run_target: _Target,
    swapped: List[_Target],
    hashes: Mapping[str, Tuple[int, str]],
    missing: List[str],
    errors: List[str],
) -> Collected:
    rels = sorted(run_target.rels) if run_target in swapped else []
    artifacts: List[Dict[str, object]] = [
        {"path": rel, "size": hashes[rel][0], "sha256": hashes[rel][1]} for rel in rels
    ]
    paths = [os.path.join(run_target.final, *rel.split("/")) for rel in rels]
    return Collected(artifacts, paths, missing, errors)


# --------------------------------------------------------------------------- context


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dependency_entry(
    dep_id: str, entry: Mapping[str, object], artifacts_dir: str
) -> Dict[str, object]:
    paths = entry.get("artifact_paths")
    found: Dict[str, object] = {
        "status": entry.get("status"),
        "exit_code": entry.get("exit_code"),
        "stdout_path": entry.get("stdout_path"),
        "stderr_path": entry.get("stderr_path"),
        "artifacts_dir": os.path.join(artifacts_dir, dep_id),
        "artifact_paths": list(paths) if isinstance(paths, (list, tuple)) else [],
    }
    if entry.get("worktree") is not None:
        # workspace: worktree (orch/workspace.py): where the dependency worked, its branch
        # and that branch's head after its last attempt.
        for key in ("worktree", "branch", "head_commit"):
            found[key] = entry.get(key)
    return found


def write_context(
    path: str,
    run_id: str,
    task_id: Optional[str],
    attempt: Optional[int],
    run_dir: str,
    artifacts_dir: str,
    dependencies: Mapping[str, Mapping[str, object]],
    encoded: Optional[Dict[str, str]] = None,
    atomic: bool = False,
) -> None:
    """Write the ORCH_CONTEXT file (schema in the module docstring), mode 0600.

    ``dependencies`` maps each dependency id to its state entry. ``encoded`` caches each
    finished dependency's JSON across calls (the caller drops an entry when that task runs
    again): on a dense plan every context would otherwise re-encode every dependency. A
    ``task_id`` of None writes a context shared by several tasks (no ``task_id``/``attempt``:
    those are in $ORCH_TASK_ID and $ORCH_ATTEMPT). ``atomic`` replaces the file whole (a temp
    file renamed), for a file a running attempt may be reading. Raises OSError if the file
    cannot be written: the attempt cannot be given its context.
    """
    absolute = os.path.abspath(artifacts_dir)
    head: Dict[str, object] = {"schema_version": CONTEXT_SCHEMA_VERSION, "run_id": run_id}
    if task_id is not None:
        head.update(task_id=task_id, attempt=attempt)
    head.update(run_dir=os.path.abspath(run_dir), artifacts_dir=absolute)
    cache: Dict[str, str] = {} if encoded is None else encoded
    parts = []
    for dep_id, entry in dependencies.items():
        text = cache.get(dep_id)
        if text is None:
            text = _ENCODE(_dependency_entry(dep_id, entry, absolute))
            cache[dep_id] = text
        parts.append(f"{_ENCODE(dep_id)}:{text}")
    # No indent: only then does json use its C encoder (20 dependencies cost ~1 ms in Python).
    data = (_ENCODE(head)[:-1] + ',"dependencies":{' + ",".join(parts) + "}}\n").encode()
    # A task's own file is written in place, no temp file + rename: its only reader is this
    # attempt's process, which does not exist yet. Saves a rename per attempt and a creation
    # per retry (0.1-1 ms each on a busy ext4).
    target = f"{path}.tmp{os.getpid()}" if atomic else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    # No makedirs: a missing context/ means the run directory is gone, never to be recreated.
    fd = os.open(target, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    if atomic:
        os.replace(target, path)
