"""Reading task logs for ``orch logs``: tails, attempt slices, sections and ``--follow``.

Logs are opaque bytes (a task may print anything), so everything here works on bytes, copies
in fixed-size chunks and never holds a whole log in memory: ``--tail 50`` of a 1 GB log reads
a few blocks from the end. Which bytes belong to which attempt comes from the offsets the
scheduler records in each task's ``history`` (see docs/STATE.md): attempt n is
``[offset of n, offset of the next attempt or EOF)``.
"""

from __future__ import annotations

import difflib
import os
import threading
import time
from typing import IO, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from orch.errors import StateError, UsageError
from orch.layout import RunLayout

__all__ = [
    "STREAMS",
    "TAIL_BYTES",
    "attempt_range",
    "follow",
    "tail_bytes",
    "tail_lines",
    "write_logs",
]

STREAMS = ("stdout", "stderr", "both")
_BLOCK = 64 * 1024
# Most bytes a tail (report, progress, retry_on output rules) reads from the end of a log.
TAIL_BYTES = 64 * 1024
_SUFFIX = {"stdout": ".out.log", "stderr": ".err.log"}
# A task in one of these states may still write to its logs.
_LIVE = ("PENDING", "RUNNING")

_Section = Tuple[str, str, Optional[str], int, int]  # task, stream, path, start, end


def tail_lines(path: str, n: int, start: int = 0, max_bytes: int = TAIL_BYTES) -> List[bytes]:
    """The last ``n`` lines of the file from offset ``start`` on, each with its ``\\n`` (the
    last one may lack it), within its last ``max_bytes`` (a longer line is cut at its start).

    A missing file has no lines. Only the end of the file is read, and at most ``max_bytes``
    of it are held in memory, whatever the lines' length.
    """
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            start = _tail_start(f, n, max(min(start, end), end - max_bytes), end)
            f.seek(start)
            data = f.read(end - start)
    except FileNotFoundError:
        return []
    pieces = data.split(b"\n")
    lines = [p + b"\n" for p in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def tail_bytes(path: Optional[str], start: int, window: int = TAIL_BYTES) -> bytes:
    """The last ``window`` bytes of the file written from offset ``start`` on (b"" if none)."""
    if not path:
        return b""
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            begin = max(min(start, end), end - window)
            f.seek(begin)
            return f.read(end - begin)
    except OSError:
        return b""


def _tail_start(f: IO[bytes], n: int, start: int, end: int) -> int:
    """Offset in ``[start, end]`` where the last ``n`` lines of that range begin.

    Reads backwards one block at a time, so the cost depends on the size of the tail, not of
    the file. The newline that ends the range terminates the last line; it starts nothing.
    """
    if n <= 0:
        return end
    pos, found, final = end, 0, True
    while pos > start:
        size = min(_BLOCK, pos - start)
        pos -= size
        f.seek(pos)
        block = f.read(size)
        limit = len(block)
        if final and block.endswith(b"\n"):
            limit -= 1
        final = False
        # Whole blocks with too few newlines are skipped with one count() instead of a scan.
        in_block = block.count(b"\n", 0, limit)
        if found + in_block < n:
            found += in_block
            continue
        while True:
            limit = block.rfind(b"\n", 0, limit)
            found += 1
            if found == n:
                return pos + limit + 1
    return start


def attempt_range(
    task_state: Dict[str, object],
    stream: str,
    attempt: Optional[int],
    file_size: int,
    *,
    task_id: str = "",
) -> Tuple[int, int]:
    """Byte range ``[start, end)`` of one attempt in the ``stream`` log, or the whole file.

    Offsets are clamped to ``file_size`` so a log shorter than the state says (an attempt that
    died before its marker reached the disk) gives an empty range rather than an error.
    """
    if stream not in _SUFFIX:
        raise UsageError(f"stream must be stdout or stderr, not {stream!r}")
    if attempt is None:
        return 0, file_size
    history = task_state.get("history")
    entries = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    numbers = [h.get("attempt") for h in entries]
    name = f"task '{task_id}'" if task_id else "this task"
    if attempt not in numbers:
        valid = [a for a in numbers if isinstance(a, int)]
        if not valid:
            raise UsageError(f"{name} has no attempts yet (--attempt {attempt})")
        raise UsageError(
            f"{name} has attempts {min(valid)}..{max(valid)}, not {attempt} (--attempt)"
        )
    index = numbers.index(attempt)
    key = f"{stream}_offset"
    start = _offset(entries[index], key, name, attempt)
    end = file_size
    if index + 1 < len(entries):
        end = _offset(entries[index + 1], key, name, attempt + 1)
    start = min(start, file_size)
    return start, max(start, min(end, file_size))


def _offset(entry: Dict[str, object], key: str, name: str, attempt: int) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(f"state of {name} has no valid {key} for attempt {attempt}")
    return value


def write_logs(
    out: BinaryIO,
    state: Dict[str, object],
    task_ids: Sequence[str],
    stream: str,
    tail: Optional[int],
    attempt: Optional[int],
) -> None:
    """Write the selected log bytes of ``task_ids`` (every task when empty) to ``out``.

    With several tasks or both streams each section starts with ``==> <task> <stream> <==``,
    as tail(1) does. Every task id, attempt and stream is checked before anything is written,
    so a bad argument never leaves half an output behind.
    """
    if stream not in STREAMS:
        raise UsageError(f"--stream must be stdout, stderr or both, not {stream!r}")
    if tail is not None and tail < 0:
        raise UsageError(f"--tail must be >= 0, not {tail}")
    tasks = _tasks(state)
    ids = list(task_ids) if task_ids else list(tasks)
    for task_id in ids:
        _task(state, task_id)
    streams = ["stdout", "stderr"] if stream == "both" else [stream]
    sections = [_section(state, t, s, tail, attempt) for t in ids for s in streams]
    headers = len(ids) > 1 or len(streams) > 1
    last = b"\n"
    for number, (task_id, name, path, start, end) in enumerate(sections):
        if headers:
            gap = (b"" if last == b"\n" else b"\n") + (b"\n" if number else b"")
            out.write(gap + f"==> {task_id} {name} <==\n".encode())
            last = b"\n"
        if path is not None and end > start:
            last = _copy(path, out, start, end) or last
    out.flush()


def _section(
    state: Dict[str, object], task_id: str, stream: str, tail: Optional[int], attempt: Optional[int]
) -> _Section:
    task = _task(state, task_id)
    path = _log_path(state, task_id, stream)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start, end = attempt_range(task, stream, attempt, size, task_id=task_id)
            if tail is not None:
                start = _tail_start(f, tail, start, end)
    except FileNotFoundError:
        # Not started yet: nothing to show, but a bad --attempt is still an error.
        attempt_range(task, stream, attempt, 0, task_id=task_id)
        return task_id, stream, None, 0, 0
    except OSError as exc:
        raise StateError(f"cannot read log {path}: {exc.strerror}") from None
    return task_id, stream, path, start, end


def _copy(path: str, out: BinaryIO, start: int, end: int) -> bytes:
    """Copy ``[start, end)`` in chunks; returns the last byte written (b"" if none)."""
    last = b""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            while start < end:
                chunk = f.read(min(_BLOCK, end - start))
                if not chunk:
                    break
                out.write(chunk)
                start += len(chunk)
                last = chunk[-1:]
    except OSError as exc:
        raise StateError(f"cannot read log {path}: {exc.strerror}") from None
    return last


def _tasks(state: Dict[str, object]) -> Dict[str, object]:
    tasks = state.get("tasks")
    if not isinstance(tasks, dict):
        raise StateError(f"state of run {state.get('run_id')} has no task table")
    return tasks


def _task(state: Dict[str, object], task_id: str) -> Dict[str, object]:
    tasks = _tasks(state)
    task = tasks.get(task_id)
    if isinstance(task, dict):
        return task
    if task_id in tasks:
        raise StateError(f"state of task '{task_id}' is damaged")
    raise UsageError(
        f"unknown task '{task_id}' in run {state.get('run_id')}{_hint(task_id, tasks)}"
    )


def _hint(task_id: str, known: Iterable[str]) -> str:
    # Ids are unique ignoring case, so a case-only difference is the best possible guess.
    names = list(known)
    same = [k for k in names if k.lower() == task_id.lower()]
    close = same or difflib.get_close_matches(task_id, names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _log_path(state: Dict[str, object], task_id: str, stream: str) -> str:
    path = _task(state, task_id).get(f"{stream}_path")
    if isinstance(path, str) and path:
        return path
    run_dir = state.get("run_dir")
    if not isinstance(run_dir, str):
        raise StateError(f"state of task '{task_id}' names no {stream} log")
    layout = RunLayout(run_dir)
    return layout.stdout_log(task_id) if stream == "stdout" else layout.stderr_log(task_id)


class _Cursor:
    """How far one log has been copied by ``follow``."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.file: Optional[IO[bytes]] = None
        self.pos = 0
        self.seen = False  # whether the first poll has happened (tail applies only then)

    def pump(self, path: str, tail: Optional[int]) -> Tuple[IO[bytes], int, int]:
        """Open the log once it exists; returns (file, start, end) of the bytes not yet copied."""
        first = not self.seen
        self.seen = True
        if self.file is None:
            try:
                self.file = open(path, "rb")  # noqa: SIM115 - kept open across polls
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise StateError(f"cannot read log {path}: {exc.strerror}") from None
            if first and tail is not None:
                size = os.fstat(self.file.fileno()).st_size
                self.pos = _tail_start(self.file, tail, 0, size)
        size = os.fstat(self.file.fileno()).st_size
        if size < self.pos:  # truncated behind our back: start over, as tail -f does
            self.pos = 0
        return self.file, self.pos, size


def follow(
    out: BinaryIO,
    read_state: Callable[[], Dict[str, object]],
    task_id: str,
    stream: str,
    poll_sec: float = 0.2,
    stop: Optional[threading.Event] = None,
    *,
    tail: Optional[int] = None,
) -> None:
    """Print the task's log (its last ``tail`` lines when given), then what gets appended.

    Returns once the task can write no more and its log is drained: the task's status is no
    longer PENDING/RUNNING, or the run's is not, or ``read_state()`` returns
    ``"owner_alive": False`` (no process owns the run: nothing will be written). Without that
    key only statuses decide. Also returns when ``stop`` is set. A log that does not exist yet
    (task not started) is waited for. ``stream`` may be ``both``: sections switch with a
    ``==> <task> <stream> <==`` header, as ``tail -f`` does with several files.
    """
    if stream not in STREAMS:
        raise UsageError(f"--stream must be stdout, stderr or both, not {stream!r}")
    cursors = [_Cursor(s) for s in (("stdout", "stderr") if stream == "both" else (stream,))]
    writer = _FollowWriter(out, task_id if stream == "both" else None)
    try:
        while True:
            # State first, logs second: whatever was written before the state said "done" is
            # then on disk when we drain, so the last poll loses nothing.
            state = read_state()
            done = _finished(state, task_id)
            for cursor in cursors:
                _drain(cursor, _log_path(state, task_id, cursor.stream), tail, writer)
            if done or (stop is not None and stop.is_set()):
                return
            if stop is not None:
                stop.wait(poll_sec)
            else:
                time.sleep(poll_sec)
    finally:
        for cursor in cursors:
            if cursor.file is not None:
                cursor.file.close()


def _finished(state: Dict[str, object], task_id: str) -> bool:
    task = _task(state, task_id)
    if state.get("owner_alive") is False:
        return True
    return task.get("status") not in _LIVE or state.get("status") not in _LIVE


def _drain(cursor: _Cursor, path: str, tail: Optional[int], writer: _FollowWriter) -> None:
    try:
        f, pos, end = cursor.pump(path, tail)
    except FileNotFoundError:
        return  # not started yet; once it appears, all of it is new (no tail)
    f.seek(pos)
    while pos < end:
        chunk = f.read(min(_BLOCK, end - pos))
        if not chunk:
            break
        writer.write(cursor.stream, chunk)
        pos += len(chunk)
    cursor.pos = pos


class _FollowWriter:
    """Writes followed bytes, inserting a header whenever the source stream changes."""

    def __init__(self, out: BinaryIO, task_id: Optional[str]) -> None:
        self.out = out
        self.task_id = task_id
        self.current: Optional[str] = None
        self.last = b"\n"

    def write(self, stream: str, chunk: bytes) -> None:
        if self.task_id is not None and stream != self.current:
            gap = (b"" if self.last == b"\n" else b"\n") + (b"\n" if self.current else b"")
            self.out.write(gap + f"==> {self.task_id} {stream} <==\n".encode())
            self.current = stream
        self.out.write(chunk)
        self.last = chunk[-1:]
        self.out.flush()
