"""Run directories and durable state.

State lives in two files. ``state.json`` is a complete snapshot, only ever replaced atomically
(temp file in the same directory, fsync, ``os.replace``, fsync of the directory). ``journal.jsonl``
holds one line per change since that snapshot, each numbered; a batch of lines is written with
one ``write`` and one ``fsync``, so recording a change costs the same for 10 tasks or 10,000.
The snapshot names the last journal number it contains; compaction writes a new snapshot and then
truncates the journal. Readers replay the journal over the snapshot, skip lines the snapshot
already holds, ignore a torn last line, and retry when a compaction raced them.

One process owns a run at a time: it holds ``flock`` on ``lock`` (released by the kernel when the
owner dies, so there is no stale-lock timer) and writes its pid and process identity to
``owner.json`` so that other processes can tell a live owner from a dead one without locking.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import time
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union, cast

from orch import procs
from orch.errors import StateError, UsageError
from orch.layout import RUN_SUBDIRS, RunLayout, runs_dir
from orch.state import (
    SCHEMA_VERSION,
    RunState,
    apply_record,
    encode_state,
    record_problem,
    state_problem,
)

__all__ = [
    "LAST",
    "SCHEMA_VERSION",
    "RunLocked",
    "RunStore",
    "create_run",
    "iso_time",
    "list_runs",
    "looks_like_run_id",
    "now_iso",
    "open_run",
    "owner_alive",
    "read_plan_text",
    "read_state",
    "resolve_run_id",
    "run_dir_for",
]

State = RunState

_RUN_ID = re.compile(r"\A[0-9]{8}_[0-9]{6}_[0-9a-f]{6}\Z")
# A state file or journal larger than this is not one orch wrote (a link to /dev/zero, ...).
_MAX_STATE_BYTES = 1 << 30
# Compaction rewrites the whole snapshot, so it is spaced out to cost at most ~2% of the run
# (10,000 tasks: ~0.1 s a snapshot, one every ~5 s; the journal a reader replays meanwhile
# stays a few MB).
_COMPACT_MIN_INTERVAL = 1.0
_COMPACT_COST_FACTOR = 50.0
# updated_at is recorded at most this often (and with every snapshot).
_STAMP_INTERVAL = 1.0
# A run directory is built under this prefix and renamed into place whole.
_CREATING = ".creating-"


# The local UTC offset, looked up once: ``astimezone()`` per timestamp costs microseconds on the
# hot path. After a DST change a time keeps the old offset, which still names the right instant.
_LOCAL_TZ = datetime.now().astimezone().tzinfo
_OFFSET = datetime.fromtimestamp(0, _LOCAL_TZ).isoformat()[19:]  # "+09:00" (no microseconds)
_SECONDS: Dict[int, str] = {}  # whole second -> "2026-12-01T23:57:08"


def iso_time(epoch: float) -> str:
    """``epoch`` as ISO 8601 with the local UTC offset, as ``datetime.isoformat`` writes it,
    from a cache of whole seconds (a start and an end per task on the hot path)."""
    second = int(epoch // 1)
    micro = round((epoch - second) * 1e6)
    if micro >= 1000000:
        second, micro = second + 1, micro - 1000000
    head = _SECONDS.get(second)
    if head is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        head = _SECONDS[second] = datetime.fromtimestamp(second, _LOCAL_TZ).isoformat()[:19]
    return f"{head}.{micro:06d}{_OFFSET}" if micro else head + _OFFSET


def now_iso() -> str:
    return iso_time(time.time())


def looks_like_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


LAST = "last"


def resolve_run_id(home: str, run_id: str) -> str:
    """``run_id`` itself, or for ``last`` the newest run of ``home``: the greatest run id (ids
    start with their creation time, so they sort by it) whose directory holds a state. Runs
    created within the same second are told apart by their ``created_at``.

    ``last`` is a word, never a path: no file or directory named ``last`` is consulted.
    """
    if run_id != LAST:
        return run_id
    runs = runs_dir(home)
    try:
        names = sorted(n for n in os.listdir(runs) if looks_like_run_id(n))
    except FileNotFoundError:
        names = []
    except OSError as err:
        raise StateError(f"{runs}: cannot list: {err.strerror}") from None
    names = [n for n in names if os.path.lexists(RunLayout.of(home, n).state)]
    if not names:
        raise UsageError(f"no runs in {home}: 'last' names the newest run, and there is none yet")
    second = names[-1][:15]  # YYYYMMDD_HHMMSS
    same = [n for n in names if n.startswith(second)]
    return max(same, key=lambda n: (_created_at(os.path.join(runs, n)), n))


def _created_at(run_dir: str) -> float:
    """The run's ``created_at`` as a POSIX time (-inf if unreadable: the oldest)."""
    try:
        moment = datetime.fromisoformat(str(read_state(run_dir).get("created_at")))
        return moment.timestamp() if moment.tzinfo is not None else float("-inf")
    except (StateError, ValueError, OSError):
        return float("-inf")


def run_dir_for(home: str, run_id: str) -> str:
    """The run directory of an existing run; refuses anything that is not a run id.

    ``last`` stands for the newest run (``resolve_run_id``)."""
    run_id = resolve_run_id(home, run_id)
    if not looks_like_run_id(run_id):
        shown = run_id if len(run_id) <= 80 else run_id[:77] + "..."
        raise UsageError(
            f"invalid run id {shown!r}: expected YYYYMMDD_HHMMSS_xxxxxx (see 'orch list')"
        )
    layout = RunLayout.of(home, run_id)
    if not os.path.lexists(layout.state):
        raise UsageError(f"unknown run {run_id} in {home} (see 'orch list')")
    return layout.root


def _read_regular(path: str, limit: int = _MAX_STATE_BYTES) -> bytearray:
    """A run file's bytes; refuses a symlink, a FIFO, a device or an oversized file (it
    would hang the reader or fill its memory) with one clear StateError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StateError(
                f"{path}: is a symbolic link, not a file orch wrote; left untouched"
            ) from None
        raise StateError(f"{path}: cannot read: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{path}: not a regular file; left untouched")
        if info.st_size > limit:
            raise StateError(f"{path}: {info.st_size} bytes is too large for a run file")
        # Into one buffer of the file's size: chunks joined at the end would hold the file
        # twice (+8 MB of peak memory for a 10,000-task state).
        buffer = bytearray(info.st_size + 1)
        filled = 0
        with memoryview(buffer) as view:
            while filled < len(buffer):
                got = os.readv(fd, [view[filled:]])
                if not got:
                    break
                filled += got
        del buffer[filled:]
        while filled > info.st_size:  # it grows while read: a journal being appended to
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            buffer += chunk
            filled += len(chunk)
            if filled > limit:
                raise StateError(f"{path}: too large for a run file; left untouched")
        return buffer
    except OSError as err:
        raise StateError(f"{path}: cannot read: {err.strerror}") from None
    finally:
        os.close(fd)


def read_plan_text(run_dir: str) -> str:
    path = RunLayout(run_dir).plan
    try:
        return _read_regular(path, 64 << 20).decode("utf-8")
    except FileNotFoundError:
        raise StateError(f"{path}: the plan snapshot is missing") from None
    except UnicodeDecodeError as err:
        raise StateError(f"{path}: cannot read the plan snapshot: {err}") from None


# ---------------------------------------------------------------------------- writing


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: str, data: Union[bytes, Iterable[bytes]]) -> None:
    """Replace ``path`` so that no reader ever sees a partial file, and make it durable.

    ``data`` may be an iterable of chunks: a large file is then never whole in memory.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            for chunk in _batched([data] if isinstance(data, bytes) else data):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # A full disk must not leave a partial temp file behind, taking more space.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(path))


def _batched(chunks: Iterable[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Small chunks joined into writes of about ``size`` bytes."""
    batch: List[bytes] = []
    held = 0
    for chunk in chunks:
        batch.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(batch)
            batch, held = [], 0
    if batch:
        yield b"".join(batch)


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d_%H%M%S')}_{os.urandom(3).hex()}"


def _make_private_dirs(path: str) -> None:
    """``makedirs`` with 0700 for every directory it creates (umask may not strip group bits)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)


class RunLocked(StateError):
    """Another live process owns the run."""


class RunStore:
    """The owner's handle on a run: in-memory state, journal, snapshot and lock."""

    def __init__(self, run_dir: str, state: State, lock_fd: int) -> None:
        self.run_dir = run_dir
        self.layout = RunLayout(run_dir)
        self.state = state
        self._lock_fd = lock_fd
        self._pending: List[bytes] = []
        self._unsynced = False  # journal lines written but not yet fsynced
        self._seq = int(state.get("journal_seq", 0))
        self._journal_fd = os.open(
            self.layout.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600
        )
        self._next_compact = time.monotonic() + _COMPACT_MIN_INTERVAL
        self._next_stamp = 0.0
        self._stale_stamp = False  # changes recorded after the last updated_at

    @property
    def run_id(self) -> str:
        return str(self.state["run_id"])

    def cancel_requested(self) -> bool:
        return os.path.exists(self.layout.cancel)

    def update_run(self, fields: Dict[str, Any]) -> None:
        self._record({"r": fields})

    def update_task(
        self,
        task_id: str,
        fields: Optional[Dict[str, Any]] = None,
        *,
        new_attempt: Optional[Any] = None,
        attempt_fields: Optional[Dict[str, Any]] = None,
    ) -> None:
        """Change a task with one journal record: append ``new_attempt`` to its history,
        update its latest attempt with ``attempt_fields``, then the task with ``fields`` (the
        order replay applies them in). A start or an end is one record, not three."""
        record: Dict[str, Any] = {"t": task_id}
        if new_attempt is not None:
            record["h"] = new_attempt
        if attempt_fields:
            record["hs"] = attempt_fields
        if fields:
            record["s"] = fields
        if len(record) > 1:  # a record with no change is not one (record_problem refuses it)
            self._record(record)

    def _record(self, record: Dict[str, Any]) -> None:
        """Apply a change to the live state as a reader replays it, and journal it."""
        apply_record(self.state, record)  # type: ignore[arg-type]
        self._append(record)

    def _append(self, record: Dict[str, Any]) -> None:
        self._stale_stamp = True
        self._seq += 1
        record["n"] = self._seq
        self._pending.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def flush(self, sync: bool = True) -> None:
        """Write every recorded change with one write; with ``sync``, make it durable (fsync).

        Unsynced lines are in the page cache: they survive orch being killed, not a machine
        crash, which ends the tasks' processes too.
        """
        self._write_pending(sync)
        if time.monotonic() >= self._next_compact:
            self.compact()

    def _write_pending(self, sync: bool = True) -> None:
        if not self._pending:
            if sync and self._unsynced:
                os.fsync(self._journal_fd)
                self._unsynced = False
            return
        now = time.monotonic()
        if now >= self._next_stamp:
            # updated_at is a reader's "last change" to about a second, not a record per write.
            self._next_stamp = now + _STAMP_INTERVAL
            self._stamp()
        data = b"".join(self._pending)
        self._pending.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._journal_fd, view) :]
        if sync:
            os.fsync(self._journal_fd)
        self._unsynced = not sync

    def _stamp(self) -> None:
        stamp = now_iso()
        self._record({"r": {"updated_at": stamp}})
        self._stale_stamp = False

    def compact(self) -> None:
        """Write the whole state as the snapshot, then drop the journal it now contains."""
        if self._stale_stamp:
            self._stamp()  # the snapshot's updated_at is that of its last change
        self._write_pending()
        began = time.monotonic()
        self.state["journal_seq"] = self._seq
        write_file_atomic(self.layout.state, encode_state(self.state))
        os.ftruncate(self._journal_fd, 0)
        spent = time.monotonic() - began
        self._next_compact = time.monotonic() + max(
            _COMPACT_MIN_INTERVAL, spent * _COMPACT_COST_FACTOR
        )

    def close(self) -> None:
        """Final snapshot, then give up ownership."""
        try:
            self.compact()
        finally:
            os.close(self._journal_fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.layout.owner)
            os.close(self._lock_fd)

    def abandon(self) -> None:
        """Give up ownership without writing anything (the run directory is unusable)."""
        os.close(self._journal_fd)
        os.close(self._lock_fd)


def _take_lock(run_dir: str) -> int:
    """Own the run, or fail at once naming the current owner."""
    layout = RunLayout(run_dir)
    try:
        fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as err:  # e.g. a read-only home: the run can be read, not resumed
        raise StateError(f"run {layout.run_id} cannot be taken: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        owner = _read_owner(run_dir)
        pid = owner.get("pid", "?") if owner else "?"
        raise RunLocked(
            f"run {layout.run_id} is in use by another orch process (pid {pid})"
        ) from None
    return fd


def _write_owner(run_dir: str) -> None:
    pid = os.getpid()
    owner = {"pid": pid, "identity": procs.identity(pid)}
    write_file_atomic(RunLayout(run_dir).owner, json.dumps(owner).encode())


def _read_owner(run_dir: str) -> Optional[Dict[str, Any]]:
    try:
        owner = json.loads(_read_regular(RunLayout(run_dir).owner, 1 << 16))
    except (OSError, ValueError, StateError):
        return None
    return owner if isinstance(owner, dict) else None


def owner_alive(run_dir: str) -> bool:
    """Whether the process recorded as the run's owner still exists (pid reuse ruled out)."""
    owner = _read_owner(run_dir)
    pid = owner.get("pid") if owner else None
    if owner is None or type(pid) is not int or pid <= 0:
        return False
    return procs.owner_alive(pid, owner.get("identity"))


def _remove_stale_creations(runs: str) -> None:
    """Half-built run directories of a creator that died (its pid is in the name)."""
    try:
        names = [n for n in os.listdir(runs) if n.startswith(_CREATING)]
    except OSError:
        return
    for name in names:
        pid = name[len(_CREATING) :].split("-", 1)[0]
        if pid.isdigit() and not procs.pid_exists(int(pid)):
            _remove_tree(os.path.join(runs, name))


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def create_run(home: str, plan_bytes: bytes, make_state: Callable[[str, str], State]) -> RunStore:
    """Create a new private run directory, whole or not at all, with a unique id; own it.

    ``make_state(run_id, run_dir)`` gives the initial state. The directory is built under a
    temporary name and renamed into place: a full disk or a crash never leaves a run
    directory without its state behind.
    """
    runs = runs_dir(home)
    try:
        _make_private_dirs(runs)
    except OSError as err:
        raise StateError(f"cannot create {runs}: {err.strerror}") from None
    _remove_stale_creations(runs)
    building = os.path.join(runs, f"{_CREATING}{os.getpid()}-{os.urandom(4).hex()}")
    lock_fd = -1
    try:
        os.mkdir(building, 0o700)
        os.chmod(building, 0o700)
        for sub in RUN_SUBDIRS:
            os.mkdir(os.path.join(building, sub), 0o700)
        write_file_atomic(RunLayout(building).plan, plan_bytes)
        lock_fd = _take_lock(building)
        while True:
            run_id = _new_run_id()
            run_dir = os.path.join(runs, run_id)
            state = make_state(run_id, run_dir)
            write_file_atomic(RunLayout(building).state, encode_state(state))
            if not os.path.lexists(run_dir):
                # rename(2) replaces an empty directory silently: the check comes first
                # (two orch processes drawing the same id in the same second is the race).
                os.rename(building, run_dir)
                break
        _fsync_dir(runs)
        _write_owner(run_dir)
    except OSError as err:
        if lock_fd >= 0:
            os.close(lock_fd)
        _remove_tree(building)
        where = err.filename or runs
        raise StateError(f"cannot create a run in {where}: {err.strerror or err}") from None
    return RunStore(run_dir, state, lock_fd)


def open_run(home: str, run_id: str) -> RunStore:
    """Take ownership of an existing run (for resume or cancel of an interrupted run)."""
    run_dir = run_dir_for(home, run_id)
    layout = RunLayout(run_dir)
    lock_fd = _take_lock(run_dir)
    store = None
    try:
        state = read_state(run_dir)
        _remove_stale_temp_files(run_dir)
        # A cancel file here was meant for an owner that is gone. Removed before owner.json
        # names us, so that `orch cancel` (which writes the file only for a live owner) can
        # never have its request for *this* session removed.
        _remove(layout.cancel)
        store = RunStore(run_dir, state, lock_fd)
        if os.path.getsize(layout.journal):
            # Fold the journal into the snapshot before appending to it: a torn last line
            # left by a crash must not end up in the middle of the journal, followed by ours.
            store.compact()
        _write_owner(run_dir)
    except BaseException:
        if store is not None:
            os.close(store._journal_fd)
        os.close(lock_fd)
        raise
    return store


def _remove_stale_temp_files(run_dir: str) -> None:
    """``state.json.tmpPID`` and the like left by an owner killed mid-write (we own the run
    now, so no live writer can be using one)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(run_dir):
            if ".tmp" in name and name.split(".tmp", 1)[1].isdigit():
                _remove(os.path.join(run_dir, name))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ---------------------------------------------------------------------------- reading


def _load_snapshot(path: str) -> State:
    try:
        data = _read_regular(path)
    except FileNotFoundError:
        raise StateError(f"{path}: cannot read: No such file or directory") from None
    try:
        text = data.decode("utf-8")
        del data  # the bytes are not needed while the text is parsed
        state = json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:
        raise StateError(f"{path}: damaged state file ({err}); left untouched") from None
    if not isinstance(state, dict) or not isinstance(state.get("tasks"), dict):
        raise StateError(f"{path}: damaged state file (not an orch state); left untouched")
    version = state.get("schema_version")
    if type(version) is not int or version < 1:
        raise StateError(f"{path}: damaged state file (no schema_version); left untouched")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: written by a newer orch (schema_version {version}, this orch reads "
            f"{SCHEMA_VERSION}); upgrade orch to read it"
        )
    problem = state_problem(state)
    if problem:
        raise StateError(f"{path}: damaged state file ({problem}); left untouched")
    return cast(State, state)


def _journal_records(path: str, after: int) -> Optional[List[Tuple[int, Dict[str, Any]]]]:
    """(line number, record) of the records numbered above ``after``; None when a compaction
    raced us (retry)."""
    try:
        data = _read_regular(path)
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    # A torn last line (no newline yet, or cut by a crash) is not part of the state.
    complete, records = lines[:-1], []
    for number, line in enumerate(complete, 1):
        try:
            record = json.loads(line)
            seq = record["n"]
            if type(seq) is not int:
                raise TypeError(seq)
        except (ValueError, KeyError, TypeError):
            if number == len(complete):
                break  # the very last line, torn by a crash after its newline was lost
            raise StateError(f"{path}: damaged journal at line {number}; left untouched") from None
        if seq > after:
            records.append((number, record))
    if records and records[0][1]["n"] != after + 1:
        return None
    return records


def read_state(run_dir: str) -> State:
    """The run's current state; never takes the lock, never sees a partial file."""
    layout = RunLayout(run_dir)
    for _ in range(50):
        state = _load_snapshot(layout.state)
        records = _journal_records(layout.journal, state.get("journal_seq", 0))
        if records is None:
            time.sleep(0.01)
            continue
        for number, record in records:
            # Checked one by one against the state replayed so far: a record of the wrong
            # shape must never reach a reader, nor be written back by a resume.
            problem = record_problem(record, state)
            if problem:
                raise StateError(
                    f"{layout.journal}: damaged journal at line {number} ({problem}); "
                    "left untouched"
                )
            apply_record(state, record)  # type: ignore[arg-type]
        if records:
            # The next owner numbers its records after these, never reusing a number the
            # journal still holds (a crash between snapshot and truncation would otherwise
            # let stale records be replayed over a newer snapshot).
            state["journal_seq"] = records[-1][1]["n"]
        return state
    raise StateError(f"{run_dir}: state keeps changing under the reader; try again")


def list_runs(home: str) -> Tuple[List[Tuple[State, bool]], List[str]]:
    """Every readable run in ``home``, newest first, with whether its owner is alive.

    Runs that cannot be read are left out of the list and described in the second value,
    one line each, so that one damaged run does not hide the others.
    """
    runs = runs_dir(home)
    try:
        names = sorted((n for n in os.listdir(runs) if looks_like_run_id(n)), reverse=True)
    except FileNotFoundError:
        return [], []
    except OSError as err:
        raise StateError(f"{runs}: cannot list: {err.strerror}") from None
    entries = []
    skipped = []
    for name in names:
        run_dir = os.path.join(runs, name)
        try:
            entries.append((read_summary(run_dir), owner_alive(run_dir)))
        except StateError as err:
            skipped.append(f"orch: skipped run {name}: {err}")
    return entries, skipped


# The boundary between the snapshot's head and its tasks (state.encode_state writes the head
# first). Inside a JSON string a '"' is always escaped, so the text cannot occur earlier.
_TASKS_MARK = b',"tasks":{'
_HEAD_MAX = 1 << 20


def read_summary(run_dir: str) -> State:
    """The run's fields and ``task_counts`` without its tasks, when the snapshot alone is the
    state (an empty journal: every finished run); else the whole state (read_state).

    ``orch list`` of a home of 10,000-task runs reads a few KiB per run instead of megabytes.
    """
    layout = RunLayout(run_dir)
    try:
        journal = os.lstat(layout.journal)
        if journal.st_size or not stat.S_ISREG(journal.st_mode):
            return read_state(run_dir)  # replays it, or says what is wrong with it
    except FileNotFoundError:
        pass
    except OSError as err:
        raise StateError(f"{layout.journal}: cannot read: {err.strerror}") from None
    try:
        fd = os.open(layout.state, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return read_state(run_dir)  # it says what is wrong
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return read_state(run_dir)
        prefix = os.read(fd, _HEAD_MAX)
    finally:
        os.close(fd)
    end = prefix.find(_TASKS_MARK)
    if end < 0:
        return read_state(run_dir)
    try:
        head = json.loads(prefix[:end] + b"}")
    except ValueError:
        return read_state(run_dir)
    if not isinstance(head, dict) or not isinstance(head.get("task_counts"), dict):
        return read_state(run_dir)  # written before task_counts existed
    head["tasks"] = {}
    if head.get("schema_version") != SCHEMA_VERSION or state_problem(head):
        return read_state(run_dir)
    return cast(State, head)
