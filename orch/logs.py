"""Reading task logs for ``orch logs``: tails, attempt slices, headers, end lines and ``--follow``.

Log files hold exactly the bytes the task wrote, all attempts in order; which bytes belong to
which attempt comes from the offsets the scheduler records in each task's ``history`` (see
docs/STATE.md): attempt n is ``[offset of n, offset of the next attempt or EOF)``. Logs are
opaque bytes (a task may print anything), so everything here works on bytes, copies in
fixed-size chunks and never holds a whole log in memory: ``--tail 50`` of a 1 GB log reads a
few blocks from the end.

What ``orch logs`` prints takes one of three shapes (``_Sink``):

- *raw*: one stream of one task (``--task ID --stream stdout|stderr``): the task's bytes and
  nothing else, so the output can be piped into ``json.tool`` or diffed.
- *sections*: anything else without ``--follow`` of every task. Before the bytes of each
  attempt and stream, ``==> task ID attempt N/M STREAM <==`` (as tail(1) names its files), and
  after each finished attempt ``==> task ID attempt N/M: HOW IT ENDED <==``; M is the number of
  attempts made so far. A blank line separates attempts; a stream an attempt wrote nothing to
  gets no header; a missing final newline is added before orch's next line.
- *prefixed*: ``--follow`` without ``--task``: each line is ``TASK_ID | line``, end lines too.
"""

from __future__ import annotations

import difflib
import os
import signal
import stat
import threading
import time
from datetime import datetime
from typing import (
    IO,
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from orch._fmt import format_duration
from orch.errors import OrchError, StateError, UsageError
from orch.layout import RunLayout

__all__ = [
    "STREAMS",
    "TAIL_BYTES",
    "Limits",
    "attempt_range",
    "describe_attempt",
    "follow",
    "plan_limits",
    "tail_bytes",
    "tail_lines",
    "write_logs",
]

STREAMS = ("stdout", "stderr", "both")
_BLOCK = 64 * 1024
# Most bytes a tail (report, progress, retry_on output rules) reads from the end of a log.
TAIL_BYTES = 64 * 1024
_SUFFIX = {"stdout": ".out.log", "stderr": ".err.log"}
# A task or run in one of these states may still write to its logs.
_LIVE = ("PENDING", "RUNNING")

State = Mapping[str, Any]
# Task id -> (timeout_sec, idle_timeout_sec): the state names the limit that ended an attempt,
# the plan holds its value.
Limits = Mapping[str, Tuple[Optional[float], Optional[float]]]
# (attempt number, attempts made so far), or None for bytes no attempt entry covers.
_Attempt = Optional[Tuple[int, int]]


# --------------------------------------------------------------------------- tails


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


# --------------------------------------------------------------------------- attempts


def _entries(task: State) -> List[Mapping[str, Any]]:
    history = task.get("history")
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def _attempt_index(entries: Sequence[Mapping[str, Any]], attempt: int, task_id: str = "") -> int:
    """Where attempt number ``attempt`` is in ``entries``; a UsageError naming the valid ones."""
    numbers = [h.get("attempt") for h in entries]
    if attempt in numbers:
        return numbers.index(attempt)
    name = f"task '{task_id}'" if task_id else "this task"
    valid = [a for a in numbers if isinstance(a, int)]
    if not valid:
        raise UsageError(f"{name} has no attempts yet (--attempt {attempt})")
    raise UsageError(f"{name} has attempts {min(valid)}..{max(valid)}, not {attempt} (--attempt)")


def attempt_range(
    task_state: State,
    stream: str,
    attempt: Optional[int],
    file_size: int,
    *,
    task_id: str = "",
) -> Tuple[int, int]:
    """Byte range ``[start, end)`` of one attempt in the ``stream`` log, or the whole file.

    Offsets are clamped to ``file_size`` so a log shorter than the state says (an attempt
    whose first bytes never reached the disk) gives an empty range rather than an error.
    """
    if stream not in _SUFFIX:
        raise UsageError(f"stream must be stdout or stderr, not {stream!r}")
    if attempt is None:
        return 0, file_size
    entries = _entries(task_state)
    index = _attempt_index(entries, attempt, task_id)
    name = f"task '{task_id}'" if task_id else "this task"
    key = f"{stream}_offset"
    start = _offset(entries[index], key, name, attempt)
    end = file_size
    if index + 1 < len(entries):
        end = _offset(entries[index + 1], key, name, attempt + 1)
    start = min(start, file_size)
    return start, max(start, min(end, file_size))


def _offset(entry: Mapping[str, Any], key: str, name: str, attempt: Any) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(f"state of {name} has no valid {key} for attempt {attempt}")
    return value


def _offsets(entries: Sequence[Mapping[str, Any]], stream: str, task_id: str) -> List[int]:
    """Each attempt's start in the ``stream`` log, made non-decreasing (a damaged history
    must not make a byte belong to two attempts)."""
    key = f"{stream}_offset"
    result: List[int] = []
    for entry in entries:
        value = _offset(entry, key, f"task '{task_id}'", entry.get("attempt"))
        result.append(max(value, result[-1]) if result else value)
    return result


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_attempt(entry: Mapping[str, Any], limit: Optional[float] = None) -> Optional[str]:
    """How a stored attempt ended, in orch.policy's words plus its duration: ``exit 1 after
    2.3s``, ``timed out after 60s (idle_timeout_sec)``, ``killed by SIGKILL after 1.0s``,
    ``canceled after 4.0s``, ``not started: cannot start 'x': ...``; None while it runs.

    ``limit`` is the value of the limit that ended a timed-out attempt (the state names the
    limit, the plan holds its value); without it the attempt's duration is shown instead.
    """
    if entry.get("ended_at") is None:
        return None
    took = entry.get("duration_sec")
    known = isinstance(took, (int, float)) and not isinstance(took, bool)
    after = f" after {format_duration(took)}" if known else ""
    error = entry.get("error") if isinstance(entry.get("error"), str) else None
    if entry.get("canceled"):
        return "canceled" + after
    if entry.get("timed_out"):
        by = entry.get("timed_out_by") or "timeout_sec"
        if limit:
            return f"timed out after {limit:g}s ({by})"
        return f"timed out{after} ({by})"
    sig, code = entry.get("signal"), entry.get("exit_code")
    if isinstance(sig, int) and not isinstance(sig, bool):
        text = f"killed by {_signal_name(sig)}{after}"
    elif _is_int(code):
        text = f"exit {code}{after}"
    elif error and entry.get("pid") is None:
        return f"not started: {error}"
    else:
        return (error or "ended") + after
    return f"{text}; {error}" if error else text


def plan_limits(run_dir: str) -> Dict[str, Tuple[Optional[float], Optional[float]]]:
    """Each task's ``(timeout_sec, idle_timeout_sec)`` from the run's plan snapshot.

    Best effort: ``{}`` when the snapshot cannot be read or parsed (a timed-out attempt then
    shows its duration instead of its limit). It is the current snapshot: an attempt made
    before a ``resume --plan`` that changed the limit shows the new value.
    """
    from orch.plan import parse_plan
    from orch.store import read_plan_text

    try:
        plan = parse_plan(read_plan_text(run_dir), RunLayout(run_dir).plan)
    except (OrchError, OSError):
        return {}
    return {t.id: (t.timeout_sec, t.idle_timeout_sec) for t in plan.tasks}


class _Limits:
    """``plan_limits`` read at most once, and only when a timed-out attempt is shown."""

    def __init__(self, source: Optional[Callable[[], Limits]]) -> None:
        self._source = source
        self._value: Optional[Limits] = None

    def of(self, task_id: str, entry: Mapping[str, Any]) -> Optional[float]:
        if self._source is None or not entry.get("timed_out"):
            return None
        if self._value is None:
            self._value = self._source()
        pair = self._value.get(task_id)
        if pair is None:
            return None
        return pair[1] if entry.get("timed_out_by") == "idle_timeout_sec" else pair[0]


# --------------------------------------------------------------------------- output


class _Sink:
    """Writes what ``orch logs`` shows in one of the three shapes of the module docstring."""

    def __init__(
        self,
        out: BinaryIO,
        mode: str,
        timestamps: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert mode in ("raw", "sections", "prefixed")
        self.out = out
        self.mode = mode
        self.timestamps = timestamps
        self.clock = clock
        self.last = b"\n"  # the last byte written: orch's lines start on a line of their own
        self.wrote = False
        self.section: Optional[Tuple[str, Optional[int], str]] = None
        self.group: Optional[Tuple[str, Optional[int]]] = None
        # (task, stream) -> (bytes of a line not ended yet, when its first byte was read)
        self.partial: Dict[Tuple[str, str], Tuple[bytes, float]] = {}

    @property
    def _by_line(self) -> bool:
        return self.mode == "prefixed" or self.timestamps

    def data(self, task_id: str, attempt: _Attempt, stream: str, chunk: bytes) -> None:
        if not chunk:
            return
        if self.mode == "sections":
            key = (task_id, attempt[0] if attempt else None, stream)
            if key != self.section:
                self._flush_partials(task_id)
                where = f" attempt {attempt[0]}/{attempt[1]}" if attempt else ""
                self._orch_line(task_id, key[1], f"==> task {task_id}{where} {stream} <==")
                self.section = key
        if self._by_line:
            self._lines(task_id, stream, chunk)
        else:
            self._write(chunk)

    def ended(self, task_id: str, attempt: Tuple[int, int], text: str) -> None:
        number, made = attempt
        self._orch_line(task_id, number, f"==> task {task_id} attempt {number}/{made}: {text} <==")

    def no_attempts(self, task_id: str, task: State) -> None:
        status = str(task.get("status"))
        reason = task.get("skip_reason")
        what = f"{status}: {reason}" if isinstance(reason, str) and reason else status
        self._orch_line(task_id, None, f"==> task {task_id}: no attempts ({what}) <==")

    def finish_task(self, task_id: str) -> None:
        self._flush_partials(task_id)

    def close(self) -> None:
        for task_id, _ in list(self.partial):
            self._flush_partials(task_id)
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()

    def _orch_line(self, task_id: str, attempt: Optional[int], text: str) -> None:
        if self.mode == "raw":
            return
        self._flush_partials(task_id)
        self.section = None
        if self.mode == "prefixed":
            self._write(f"{task_id} | {text}\n".encode("utf-8", "replace"))
            return
        lead = b"" if self.last == b"\n" else b"\n"
        if self.wrote and self.group != (task_id, attempt):
            lead += b"\n"  # a blank line between attempts, as tail(1) between files
        self.group = (task_id, attempt)
        self._write(lead + text.encode("utf-8", "replace") + b"\n")

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.last = data[-1:]
        self.wrote = True

    def _lines(self, task_id: str, stream: str, chunk: bytes) -> None:
        key = (task_id, stream)
        now = self.clock()
        held, since = self.partial.pop(key, (b"", now))
        parts: List[bytes] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start) + 1
            if not end:
                break
            parts.append(self._prefix(task_id, since) + held + chunk[start:end])
            held, since, start = b"", now, end
        held += chunk[start:]
        if len(held) >= _BLOCK:
            # A line longer than a block is shown in pieces: memory stays bounded.
            parts.append(self._prefix(task_id, since) + held + b"\n")
            held = b""
        if held:
            self.partial[key] = (held, since)
        if parts:
            self._write(b"".join(parts))

    def _flush_partials(self, task_id: str) -> None:
        for stream in ("stdout", "stderr"):
            held = self.partial.pop((task_id, stream), None)
            if held is not None:
                self._write(self._prefix(task_id, held[1]) + held[0] + b"\n")

    def _prefix(self, task_id: str, when: float) -> bytes:
        text = f"{task_id} | " if self.mode == "prefixed" else ""
        if self.timestamps:
            moment = datetime.fromtimestamp(when).astimezone()
            text += moment.isoformat(timespec="milliseconds") + " "
        return text.encode()


# --------------------------------------------------------------------------- one task


def _file_size(path: str) -> Optional[int]:
    """The log's size; None while it does not exist. A FIFO or a device named as a log by a
    damaged state would hang the reader: refused."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read log {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise StateError(f"log {path} is not a regular file")
    return info.st_size


def _chunks(path: str, start: int, end: int) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            while start < end:
                chunk = f.read(min(_BLOCK, end - start))
                if not chunk:
                    return
                start += len(chunk)
                yield chunk
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"cannot read log {path}: {exc.strerror}") from None


def _tail_offset(path: str, n: int, start: int, end: int) -> int:
    if end <= start:
        return end
    try:
        with open(path, "rb") as f:
            return _tail_start(f, n, start, end)
    except FileNotFoundError:
        return end
    except OSError as exc:
        raise StateError(f"cannot read log {path}: {exc.strerror}") from None


class _Cursor:
    """How far one log of one task has been shown."""

    __slots__ = ("limit", "path", "pos", "size", "stream")

    def __init__(self, stream: str, path: str) -> None:
        self.stream = stream
        self.path = path
        self.pos = 0
        self.size = 0
        self.limit = 0


class _TaskLogs:
    """Shows one task's logs, attempt by attempt, over one or many polls.

    ``poll`` reads what was appended since the last one. Bytes are given to the attempt
    whose range they are in; an attempt's end line is written once its bytes are shown in
    every selected stream. With ``only`` (an index into the history), just that attempt.
    """

    def __init__(self, task_id: str, cursors: List[_Cursor], only: Optional[int] = None) -> None:
        self.task_id = task_id
        self.cursors = cursors
        self.only = only
        self.reported = 0  # attempts (history indexes) whose end line is written or skipped
        self.first = True
        self.shown = False  # whether anything of this task was written
        self.done = False

    def sizes(self) -> List[int]:
        return [_file_size(c.path) or 0 for c in self.cursors]

    def poll(
        self,
        task: State,
        sink: _Sink,
        *,
        final: bool,
        before: Optional[Sequence[int]] = None,
        tail: Optional[int] = None,
        limits: Optional[_Limits] = None,
        owner_gone: bool = False,
    ) -> None:
        """Show what is new. ``final``: the task writes nothing more, its logs end at EOF.

        Otherwise only bytes within ``before`` (sizes taken *before* ``task`` was read) are
        shown, and none past the start of the last attempt if that attempt has ended: they
        may belong to a retry that ``task`` does not know yet (a child writes before its
        attempt is recorded), and would be shown under the wrong attempt.
        """
        entries = _entries(task)
        offsets = [_offsets(entries, c.stream, self.task_id) for c in self.cursors]
        self._set_limits(entries, offsets, final, before)
        if self.first:
            self._start(entries, offsets, tail)
        numbers = [
            e["attempt"] if _is_int(e.get("attempt")) else j + 1 for j, e in enumerate(entries)
        ]
        made = max(numbers, default=0)
        for j in range(-1, len(entries)) if self.only is None else [self.only]:
            attempt = (numbers[j], made) if j >= 0 else None
            for i, cursor in enumerate(self.cursors):
                nxt = offsets[i][j + 1] if j + 1 < len(entries) else None
                end = cursor.limit if nxt is None else min(cursor.limit, nxt)
                for chunk in _chunks(cursor.path, cursor.pos, end) if end > cursor.pos else ():
                    sink.data(self.task_id, attempt, cursor.stream, chunk)
                    cursor.pos += len(chunk)
                    self.shown = True
            if attempt is None or j != self.reported:
                continue
            if not self._passed(j, offsets, len(entries), final):
                continue
            text = describe_attempt(
                entries[j], limits.of(self.task_id, entries[j]) if limits else None
            )
            if text is None and j + 1 < len(entries):
                text = "ended, no result recorded"  # a later attempt exists: this one ended
            elif text is None and final and owner_gone:
                text = "did not finish: no orch process owns the run"
            if text is not None:
                sink.ended(self.task_id, attempt, text)
                self.reported = j + 1
                self.shown = True
        if final:
            if not entries and not self.shown:
                sink.no_attempts(self.task_id, task)
            sink.finish_task(self.task_id)
            self.done = True

    def _set_limits(
        self,
        entries: Sequence[Mapping[str, Any]],
        offsets: List[List[int]],
        final: bool,
        before: Optional[Sequence[int]],
    ) -> None:
        """How far each log may be shown in this poll (see ``poll``)."""
        last_ended = bool(entries) and entries[-1].get("ended_at") is not None
        for i, cursor in enumerate(self.cursors):
            cursor.size = _file_size(cursor.path) or 0
            if cursor.size < cursor.pos:  # truncated behind our back: start over, as tail -f
                cursor.pos = 0
            cursor.limit = cursor.size
            if not final:
                cursor.limit = min(cursor.size, before[i] if before is not None else 0)
                if last_ended:
                    cursor.limit = min(cursor.limit, max(cursor.pos, offsets[i][-1]))
            if self.only is not None:
                if self.first:
                    cursor.pos = min(offsets[i][self.only], cursor.limit)
                if self.only + 1 < len(entries):
                    cursor.limit = min(cursor.limit, offsets[i][self.only + 1])

    def _start(
        self, entries: Sequence[Mapping[str, Any]], offsets: List[List[int]], tail: Optional[int]
    ) -> None:
        """On the first poll: apply ``tail``, and skip the end lines of the attempts it cuts."""
        self.first = False
        if self.only is not None:
            self.reported = self.only
        if tail is None:
            return
        for cursor in self.cursors:
            cursor.pos = _tail_offset(cursor.path, tail, cursor.pos, cursor.limit)
        # The last attempt keeps its end line even when the tail shows none of its bytes.
        while self.reported < len(entries) - 1 and all(
            c.pos >= offsets[i][self.reported + 1] for i, c in enumerate(self.cursors)
        ):
            self.reported += 1

    def _passed(self, j: int, offsets: List[List[int]], count: int, final: bool) -> bool:
        """Whether every byte of attempt ``j`` has been shown in every selected stream."""
        for i, cursor in enumerate(self.cursors):
            if j + 1 < count:
                if cursor.pos < min(offsets[i][j + 1], cursor.size):
                    return False
            elif not final or cursor.pos < cursor.limit:
                return False
        return True


# --------------------------------------------------------------------------- commands


def _tasks(state: State) -> Mapping[str, Any]:
    tasks = state.get("tasks")
    if not isinstance(tasks, dict):
        raise StateError(f"state of run {state.get('run_id')} has no task table")
    return tasks


def _task(state: State, task_id: str) -> Mapping[str, Any]:
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


def _log_path(state: State, task_id: str, stream: str) -> str:
    path = _task(state, task_id).get(f"{stream}_path")
    if isinstance(path, str) and path:
        return path
    run_dir = state.get("run_dir")
    if not isinstance(run_dir, str):
        raise StateError(f"state of task '{task_id}' names no {stream} log")
    layout = RunLayout(run_dir)
    return layout.stdout_log(task_id) if stream == "stdout" else layout.stderr_log(task_id)


def _streams(stream: str) -> List[str]:
    if stream not in STREAMS:
        raise UsageError(f"--stream must be stdout, stderr or both, not {stream!r}")
    return ["stdout", "stderr"] if stream == "both" else [stream]


def _task_logs(
    state: State, task_id: str, streams: Sequence[str], only: Optional[int] = None
) -> _TaskLogs:
    return _TaskLogs(task_id, [_Cursor(s, _log_path(state, task_id, s)) for s in streams], only)


def write_logs(
    out: BinaryIO,
    state: State,
    task_ids: Sequence[str],
    stream: str,
    tail: Optional[int],
    attempt: Optional[int],
    *,
    limits: Optional[Callable[[], Limits]] = None,
) -> None:
    """Write the logs of ``task_ids`` (every task when empty) to ``out``.

    One stream of one named task is written raw (exactly its bytes); anything else in
    sections with headers and end lines (module docstring). ``tail`` counts the task's lines
    only, per log (or per attempt with ``attempt``). Every task id, attempt and stream is
    checked before anything is written, so a bad argument never leaves half an output behind.
    """
    streams = _streams(stream)
    if tail is not None and tail < 0:
        raise UsageError(f"--tail must be >= 0, not {tail}")
    ids = list(task_ids) if task_ids else list(_tasks(state))
    shown: List[Tuple[_TaskLogs, Mapping[str, Any]]] = []
    for task_id in ids:
        task = _task(state, task_id)
        only = None if attempt is None else _attempt_index(_entries(task), attempt, task_id)
        shown.append((_task_logs(state, task_id, streams, only), task))
    raw = len(task_ids) == 1 and len(streams) == 1
    sink = _Sink(out, "raw" if raw else "sections")
    owner_gone = state.get("owner_alive") is False
    source = _Limits(limits)
    for logs, task in shown:
        # A snapshot: whatever the logs hold now is shown, the last attempt up to EOF.
        logs.poll(task, sink, final=True, tail=tail, limits=source, owner_gone=owner_gone)
    sink.close()


def follow(
    out: BinaryIO,
    read_state: Callable[[], State],
    task_id: Optional[str],
    stream: str,
    poll_sec: float = 0.2,
    stop: Optional[threading.Event] = None,
    *,
    tail: Optional[int] = None,
    timestamps: bool = False,
    limits: Optional[Callable[[], Limits]] = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Print the logs (their last ``tail`` lines when given), then what gets appended.

    With ``task_id``, one task: raw bytes for one stream (unless ``timestamps``), else
    sections. Without, every task, each line prefixed ``TASK_ID | ``; tasks that appear in
    the state later (``resume --plan``) are picked up. ``timestamps`` starts each line with
    the local time its first byte was read (within ``poll_sec`` of reaching the log).

    Returns once nothing more can be written and the logs are drained: for one task, when it
    or the run is no longer PENDING/RUNNING; for every task, when the run is not; either way
    when ``read_state()`` says ``"owner_alive": False`` (no process owns the run). Also
    returns when ``stop`` is set. A log that does not exist yet is waited for. Files are
    polled (stat, then read from the last position): no file stays open between polls.
    """
    streams = _streams(stream)
    mode = "prefixed" if task_id is None else "sections"
    if task_id is not None and len(streams) == 1 and not timestamps:
        mode = "raw"
    sink = _Sink(out, mode, timestamps, clock)
    source = _Limits(limits)
    tasks: Dict[str, _TaskLogs] = {}
    state = read_state()  # which logs exist, so that the first poll has sizes to go by
    for tid in [task_id] if task_id is not None else list(_tasks(state)):
        tasks[tid] = _task_logs(state, tid, streams)
    try:
        while True:
            # Sizes first, state second: bytes within those sizes were written before the
            # state was read, so the state knows the attempt they belong to; and whatever
            # was written before the state said "done" is on disk for the final drain.
            before = {tid: logs.sizes() for tid, logs in tasks.items() if not logs.done}
            state = read_state()
            gone = state.get("owner_alive") is False
            over = gone or state.get("status") not in _LIVE
            for tid in [task_id] if task_id is not None else list(_tasks(state)):
                logs = tasks.get(tid) or tasks.setdefault(tid, _task_logs(state, tid, streams))
                if logs.done:
                    continue
                task = _task(state, tid)
                logs.poll(
                    task,
                    sink,
                    final=over or task.get("status") not in _LIVE,
                    before=before.get(tid),
                    tail=tail,
                    limits=source,
                    owner_gone=gone,
                )
            sink.flush()
            if over or (task_id is not None and tasks[task_id].done):
                return
            if stop is not None and stop.is_set():
                return
            if stop is not None:
                stop.wait(poll_sec)
            else:
                time.sleep(poll_sec)
    finally:
        sink.close()
