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
import secrets
import time
from datetime import datetime
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from orch.errors import StateError, UsageError

__all__ = [
    "SCHEMA_VERSION",
    "RunLocked",
    "RunStore",
    "create_run",
    "list_runs",
    "looks_like_run_id",
    "now_iso",
    "open_run",
    "owner_alive",
    "read_plan_text",
    "read_state",
    "run_dir_for",
]

SCHEMA_VERSION = 1
State = Dict[str, Any]

_RUN_ID = re.compile(r"\A[0-9]{8}_[0-9]{6}_[0-9a-f]{6}\Z")
_STATE = "state.json"
_JOURNAL = "journal.jsonl"
_OWNER = "owner.json"
_LOCK = "lock"
CANCEL_FILE = "cancel"
# Compaction rewrites the whole snapshot, so it is spaced out to cost at most ~5% of the run.
_COMPACT_MIN_INTERVAL = 1.0
_COMPACT_COST_FACTOR = 20.0


def now_iso() -> str:
    return datetime.now().astimezone().isoformat()


def looks_like_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def run_dir_for(home: str, run_id: str) -> str:
    """The run directory of an existing run; refuses anything that is not a run id."""
    if not looks_like_run_id(run_id):
        shown = run_id if len(run_id) <= 80 else run_id[:77] + "..."
        raise UsageError(
            f"invalid run id {shown!r}: expected YYYYMMDD_HHMMSS_xxxxxx (see 'orch list')"
        )
    run_dir = os.path.join(home, "runs", run_id)
    if not os.path.isfile(os.path.join(run_dir, _STATE)):
        raise UsageError(f"unknown run {run_id} in {home} (see 'orch list')")
    return run_dir


def read_plan_text(run_dir: str) -> str:
    path = os.path.join(run_dir, "plan.yaml")
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
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
    return f"{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"


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
        self.state = state
        self._lock_fd = lock_fd
        self._pending: List[bytes] = []
        self._unsynced = False  # journal lines written but not yet fsynced
        self._seq = int(state.get("journal_seq", 0))
        self._journal_fd = os.open(
            os.path.join(run_dir, _JOURNAL), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self._next_compact = time.monotonic() + _COMPACT_MIN_INTERVAL

    @property
    def run_id(self) -> str:
        return str(self.state["run_id"])

    def cancel_requested(self) -> bool:
        return os.path.exists(os.path.join(self.run_dir, CANCEL_FILE))

    def update_run(self, fields: Dict[str, Any]) -> None:
        self.state.update(fields)
        self._append({"r": fields})

    def update_task(self, task_id: str, fields: Dict[str, Any]) -> None:
        self.state["tasks"][task_id].update(fields)
        self._append({"t": task_id, "s": fields})

    def add_attempt(self, task_id: str, entry: Dict[str, Any]) -> None:
        self.state["tasks"][task_id]["history"].append(entry)
        self._append({"t": task_id, "h": entry})

    def update_attempt(self, task_id: str, fields: Dict[str, Any]) -> None:
        """Update the task's latest attempt entry."""
        self.state["tasks"][task_id]["history"][-1].update(fields)
        self._append({"t": task_id, "hs": fields})

    def _append(self, record: Dict[str, Any]) -> None:
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
        stamp = now_iso()
        self.state["updated_at"] = stamp
        self._append({"r": {"updated_at": stamp}})
        data = b"".join(self._pending)
        self._pending.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._journal_fd, view) :]
        if sync:
            os.fsync(self._journal_fd)
        self._unsynced = not sync

    def compact(self) -> None:
        """Write the whole state as the snapshot, then drop the journal it now contains."""
        self._write_pending()
        began = time.monotonic()
        self.state["journal_seq"] = self._seq
        write_file_atomic(os.path.join(self.run_dir, _STATE), _encode_state(self.state))
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
            try:
                os.unlink(os.path.join(self.run_dir, _OWNER))
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode_state(state: State) -> Iterator[bytes]:
    """The snapshot a task at a time, ``tasks`` last.

    10,000 tasks make ~8 MB of JSON; encoded in one piece, its text, its bytes and the bytes
    plus newline were all alive at once (+13 MiB peak RSS). No indent: json's C encoder only
    runs without one.
    """
    head = {key: value for key, value in state.items() if key != "tasks"}
    encode = _ENCODER.encode
    yield encode(head)[:-1].encode() + (b',"tasks":{' if head else b'"tasks":{')
    sep = b""
    for task_id, entry in state["tasks"].items():
        yield sep + f"{encode(task_id)}:{encode(entry)}".encode()
        sep = b","
    yield b"}}\n"


def _take_lock(run_dir: str) -> int:
    """Own the run, or fail at once naming the current owner."""
    try:
        fd = os.open(os.path.join(run_dir, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:  # e.g. a read-only home: the run can be read, not resumed
        raise StateError(
            f"run {os.path.basename(run_dir)} cannot be taken: {err.strerror}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        owner = _read_owner(run_dir)
        pid = owner.get("pid", "?") if owner else "?"
        raise RunLocked(
            f"run {os.path.basename(run_dir)} is in use by another orch process (pid {pid})"
        ) from None
    return fd


def _write_owner(run_dir: str) -> None:
    from orch.runner import process_identity

    pid = os.getpid()
    owner = {"pid": pid, "identity": process_identity(pid)}
    write_file_atomic(os.path.join(run_dir, _OWNER), json.dumps(owner).encode())


def _read_owner(run_dir: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(run_dir, _OWNER), encoding="utf-8") as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def owner_alive(run_dir: str) -> bool:
    """Whether the process recorded as the run's owner still exists (pid reuse ruled out)."""
    from orch.runner import process_identity

    owner = _read_owner(run_dir)
    if not owner or not isinstance(owner.get("pid"), int):
        return False
    identity = process_identity(owner["pid"])
    return identity is not None and identity == owner.get("identity") and not _zombie(owner["pid"])


def _zombie(pid: int) -> bool:
    # A SIGKILLed owner stays a zombie, with its identity, until its parent reaps it; it
    # holds no lock any more (the kernel closed its files), so it owns nothing.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return False  # no /proc (macOS) or already gone: the identity check decided
    return raw[raw.rfind(b")") + 2 :][:1] in (b"Z", b"X")


def create_run(home: str, plan_bytes: bytes, state: State) -> RunStore:
    """Create a new private run directory with a unique id and own it."""
    runs = os.path.join(home, "runs")
    try:
        _make_private_dirs(runs)
    except OSError as err:
        raise StateError(f"cannot create {runs}: {err.strerror}") from None
    while True:
        run_id = _new_run_id()
        run_dir = os.path.join(runs, run_id)
        try:
            os.mkdir(run_dir, 0o700)
            break
        except FileExistsError:
            continue  # same second and same random suffix: draw again
        except OSError as err:
            raise StateError(f"cannot create {run_dir}: {err.strerror}") from None
    os.chmod(run_dir, 0o700)
    for sub in ("logs", "artifacts", "context", "report"):
        os.mkdir(os.path.join(run_dir, sub), 0o700)
    write_file_atomic(os.path.join(run_dir, "plan.yaml"), plan_bytes)
    lock_fd = _take_lock(run_dir)
    _write_owner(run_dir)
    state.update(
        schema_version=SCHEMA_VERSION,
        run_id=run_id,
        run_dir=run_dir,
        home=home,
        journal_seq=0,
    )
    for task_id, task in state["tasks"].items():
        task["stdout_path"] = os.path.join(run_dir, "logs", f"{task_id}.out.log")
        task["stderr_path"] = os.path.join(run_dir, "logs", f"{task_id}.err.log")
    write_file_atomic(os.path.join(run_dir, _STATE), _encode_state(state))
    return RunStore(run_dir, state, lock_fd)


def open_run(home: str, run_id: str) -> RunStore:
    """Take ownership of an existing run (for resume or cancel of an interrupted run)."""
    run_dir = run_dir_for(home, run_id)
    lock_fd = _take_lock(run_dir)
    store = None
    try:
        state = read_state(run_dir)
        # A cancel file here was meant for an owner that is gone. Removed before owner.json
        # names us, so that `orch cancel` (which writes the file only for a live owner) can
        # never have its request for *this* session removed.
        _remove(os.path.join(run_dir, CANCEL_FILE))
        store = RunStore(run_dir, state, lock_fd)
        if os.path.getsize(os.path.join(run_dir, _JOURNAL)):
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


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------- reading


def _load_snapshot(path: str) -> State:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise StateError(f"{path}: cannot read: {err.strerror}") from None
    try:
        state = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise StateError(f"{path}: damaged state file ({err}); left untouched") from None
    if not isinstance(state, dict) or not isinstance(state.get("tasks"), dict):
        raise StateError(f"{path}: damaged state file (not an orch state); left untouched")
    version = state.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise StateError(f"{path}: damaged state file (no schema_version); left untouched")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: written by a newer orch (schema_version {version}, this orch reads "
            f"{SCHEMA_VERSION}); upgrade orch to read it"
        )
    problem = _shape_problem(state)
    if problem:
        raise StateError(f"{path}: damaged state file ({problem}); left untouched")
    return state


def _shape_problem(state: State) -> Optional[str]:
    """What makes valid JSON unusable as a state, checked where every reader relies on it."""
    for key in ("run_id", "status", "workdir"):
        if not isinstance(state.get(key), str):
            return f"no {key}"
    for task_id, task in state["tasks"].items():
        if (
            not isinstance(task, dict)
            or not isinstance(task.get("status"), str)
            or not isinstance(task.get("attempts"), int)
            or not isinstance(task.get("history"), list)
            or not all(isinstance(h, dict) for h in task["history"])
        ):
            return f"task {task_id!r} is not a task entry"
    return None


def _journal_records(path: str, after: int) -> Optional[List[Dict[str, Any]]]:
    """Records numbered above ``after``; None when a compaction raced us (retry)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StateError(f"{path}: cannot read: {err.strerror}") from None
    lines = data.split(b"\n")
    # A torn last line (no newline yet, or cut by a crash) is not part of the state.
    complete, records = lines[:-1], []
    for number, line in enumerate(complete, 1):
        try:
            record = json.loads(line)
            seq = record["n"]
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError(seq)
        except (ValueError, KeyError, TypeError):
            if number == len(complete):
                break  # the very last line, torn by a crash after its newline was lost
            raise StateError(f"{path}: damaged journal at line {number}; left untouched") from None
        if seq > after:
            records.append(record)
    if records and records[0]["n"] != after + 1:
        return None
    return records


def _apply(state: State, record: Dict[str, Any]) -> None:
    if "r" in record:
        state.update(record["r"])
        return
    task = state["tasks"][record["t"]]
    if "s" in record:
        task.update(record["s"])
    elif "h" in record:
        task["history"].append(record["h"])
    elif "hs" in record:
        task["history"][-1].update(record["hs"])


def read_state(run_dir: str) -> State:
    """The run's current state; never takes the lock, never sees a partial file."""
    for _ in range(50):
        state = _load_snapshot(os.path.join(run_dir, _STATE))
        records = _journal_records(os.path.join(run_dir, _JOURNAL), state.get("journal_seq", 0))
        if records is None:
            time.sleep(0.01)
            continue
        try:
            for record in records:
                _apply(state, record)
        except (KeyError, IndexError, TypeError, AttributeError):
            raise StateError(
                f"{os.path.join(run_dir, _JOURNAL)}: journal does not match state.json; "
                "left untouched"
            ) from None
        if records:
            # The next owner numbers its records after these, never reusing a number the
            # journal still holds (a crash between snapshot and truncation would otherwise
            # let stale records be replayed over a newer snapshot).
            state["journal_seq"] = records[-1]["n"]
        return state
    raise StateError(f"{run_dir}: state keeps changing under the reader; try again")


def list_runs(home: str) -> Tuple[List[Tuple[State, bool]], List[str]]:
    """Every readable run in ``home``, newest first, with whether its owner is alive.

    Runs that cannot be read are left out of the list and described in the second value,
    one line each, so that one damaged run does not hide the others.
    """
    runs = os.path.join(home, "runs")
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
            entries.append((read_state(run_dir), owner_alive(run_dir)))
        except StateError as err:
            skipped.append(f"orch: skipped run {name}: {err}")
    return entries, skipped
