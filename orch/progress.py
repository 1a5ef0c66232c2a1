"""Progress on stderr for ``orch run`` / ``orch resume``: a live view or plain lines.

The scheduler calls a ``Progress`` from its main thread, once per transition plus ``tick()``.

On a terminal (``TERM`` not ``dumb``) the view is a status block redrawn in place below the
scrollback: a header with the counts, then one line per running task (elapsed time, attempt,
the last line it wrote) and per task that waits (for its pool, a retry backoff, a slot), and
``+N more`` when they do not fit. Every finished task, retry and stop becomes a permanent line
above the block; a failure adds the last lines of the attempt's stdout and stderr and the
``orch logs`` command that shows the rest. Elsewhere (CI logs, pipes) each transition is one
plain line, a failure followed by those same few indented lines.

Costs: a call is O(running tasks), never O(tasks): the block shows at most a screenful, and
only the shown tasks' logs are read, each at most every ``_OUTPUT_EVERY_SEC``, a few KiB from
the end. Redraws are throttled to ``_REDRAW_SEC``. The block is redrawn from its first row
with the width measured again each time, so a resized window leaves no pieces behind.

Progress never sees, so never prints, an ``env`` value. Writing progress must never stop a
run: if stderr goes away (a closed pipe), reporting stops quietly and the run goes on.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple

from orch import _fmt
from orch._fmt import format_duration
from orch.report import root_failure

__all__ = ["Progress", "format_duration", "make_progress"]

Clock = Callable[[], float]

_SGR = re.compile(r"\x1b\[[0-9;]*m")
_ERASE = "\x1b[K"  # erase from the cursor to the end of its row
# Order of the counts in the closing summary; unknown statuses follow, alphabetically.
_SUMMARY_ORDER = ("SUCCESS", "FAILED", "SKIPPED", "CANCELED", "RUNNING", "PENDING")
_REDRAW_SEC = 0.1
_OUTPUT_EVERY_SEC = 0.5
_OUTPUT_BYTES = 4096  # read from the end of a running task's log for its last line
_TAIL_LINES = 3  # of each stream, under a failure line
_TAIL_BYTES = 16 * 1024
_PLAIN_TAIL_WIDTH = 200  # a tail line in plain mode (no terminal width to fit)
_NAMES_IN_SUMMARY = 5
_MAX_BLOCK_TASKS = 10
_BURST = 3  # permanent lines in a row that redraw the block at once, throttle or not
_DEPENDENCY_NOT_SUCCESS = "dependency_not_success"


class Progress:
    """The scheduler's reporter interface; this base reports nothing (for tests, --quiet).

    ``attempt`` numbers are the run's (they keep counting across resumes, as ``ORCH_ATTEMPT``
    does). The optional ``max_attempts`` is the number of the last attempt this execution may
    make (its first attempt + ``retries``); lines then say ``attempt 2/3``.
    """

    def run_started(
        self,
        run_id: str,
        total: int,
        already_done: int,
        state: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """``total`` tasks in the run, ``already_done`` of them not re-run (resume). ``state``
        is the live run state (docs/STATE.md), read-only: log paths, attempt offsets and
        dependencies, so that a failure can show its output and a skip its root failure."""

    def task_started(self, task_id: str, attempt: int, max_attempts: Optional[int] = None) -> None:
        """An attempt's process started (its history entry is in the state already)."""

    def task_retrying(
        self,
        task_id: str,
        attempt: int,
        delay: float,
        reason: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        """Attempt ``attempt`` (the next one) starts in ``delay`` s; ``reason`` ended the last."""

    def task_waiting(self, task_id: str, why: str, seconds: Optional[float] = None) -> None:
        """``task_id`` could start but waits: ``why`` is ``a slot`` or ``pool NAME``;
        ``seconds`` until the wait ends when that is known. Its next start ends the wait."""

    def task_finished(
        self,
        task_id: str,
        status: str,
        attempt: int,
        duration: float,
        detail: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        """Final status of the task in this execution; ``detail`` like ``exit 1``."""

    def run_stopping(self, running: int, grace_sec: float) -> None:
        """A cancel began: ``running`` tasks were sent SIGTERM and get ``grace_sec`` to end."""

    def run_killing(self, running: int) -> None:
        """A second stop request: the ``running`` tasks are killed now."""

    def budget_exceeded(self, cost_usd: float, limit_usd: float) -> None:
        """The run's cost reached budget.max_cost_usd: nothing new starts."""

    def tick(self) -> None:
        """Called at least every ~0.5 s while the run goes on."""

    def run_finished(
        self, status: str, counts: Mapping[str, int], wall_sec: float, report_path: str
    ) -> None:
        """The run ended: ``counts`` of tasks per status, wall time, final report path."""


def make_progress(
    stream: TextIO, env: Mapping[str, str], *, clock: Clock = time.monotonic
) -> Progress:
    """A live view on a terminal whose ``TERM`` is not ``dumb``, plain lines otherwise.

    Colour unless ``NO_COLOR`` is set to a non-empty value (no-color.org) or the stream is no
    terminal. ``env`` is only consulted for ``TERM``, ``NO_COLOR`` and ``ORCH_HOME`` (to say
    ``--home`` in an ``orch logs`` hint only when it is needed).
    """
    tty = _isatty(stream)
    smart = tty and env.get("TERM", "") not in ("", "dumb")
    color = smart and _fmt.color_wanted(stream, env)
    if smart:
        return _LiveProgress(stream, color, clock, env)
    return _PlainProgress(stream, color, clock, env)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed or detached
        return False


class _Running:
    """A running attempt as the live view shows it."""

    __slots__ = ("attempt", "last", "lines", "offsets", "paths", "read_at", "sizes", "started")

    def __init__(self, started: float, attempt: str) -> None:
        self.started = started
        self.attempt = attempt
        self.paths: Tuple[Optional[str], Optional[str]] = (None, None)
        self.offsets = (0, 0)
        self.sizes = (-1, -1)
        self.lines = ("", "")
        self.last = ""  # the more recent of the two streams' last lines
        self.read_at = float("-inf")


class _Reporter(Progress):
    """What both views share: counters, wording, colour and a write that cannot fail the run."""

    def __init__(self, stream: TextIO, color: bool, clock: Clock, env: Mapping[str, str]) -> None:
        self._stream = stream
        self._color = color
        self._clock = clock
        self._env = {k: env[k] for k in ("ORCH_HOME",) if k in env}  # no other value is kept
        self._t0 = clock()
        self._run_id = ""
        self._state: Optional[Mapping[str, Any]] = None
        self._total = 0
        self._done = 0
        self._failed = 0
        self._first: Dict[str, int] = {}  # task -> its first attempt in this execution
        self._last: Dict[str, int] = {}  # task -> the last attempt it may make
        self._roots: Dict[str, Optional[str]] = {}
        # Named in the closing summary, under these headings, in this order.
        self._names: Dict[str, List[str]] = {
            "failed": [],
            "skipped": [],
            "canceled": [],
            "allowed failures": [],
            "skipped, condition not met": [],
        }
        self._unstarted_canceled: List[str] = []
        self._broken = False

    # --- writing

    def _write(self, text: str) -> None:
        if self._broken or not text:
            return
        try:
            try:
                self._stream.write(text)
            except UnicodeEncodeError:  # a path the stream's encoding cannot spell
                self._stream.write(text.encode("ascii", "backslashreplace").decode("ascii"))
            self._stream.flush()
        except (OSError, ValueError):  # EPIPE, EIO on a hung-up tty, closed stream
            self._broken = True

    def _paint(self, word: str, status: Optional[str] = None) -> str:
        return _fmt.paint(word, status or word, self._color)

    # --- what the scheduler reports

    def run_started(
        self,
        run_id: str,
        total: int,
        already_done: int,
        state: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._t0 = self._clock()
        self._run_id = run_id
        self._state = state
        self._total = total
        self._done = already_done

    def _note_start(self, task_id: str, attempt: int, max_attempts: Optional[int]) -> str:
        first = self._first.setdefault(task_id, attempt)
        if max_attempts is not None:
            self._last[task_id] = max_attempts
        return _fmt.attempt_text(attempt, self._last.get(task_id), first)

    def _entry(self, task_id: str) -> Mapping[str, Any]:
        tasks = self._state.get("tasks") if self._state is not None else None
        entry = tasks.get(task_id) if isinstance(tasks, Mapping) else None
        return entry if isinstance(entry, Mapping) else {}

    def _ran_for(self, task_id: str, fallback: float) -> Tuple[float, int]:
        """Seconds this execution's attempts ran (no backoff, no queueing), and how many."""
        first = self._first.get(task_id)
        history = self._entry(task_id).get("history")
        if first is None or not isinstance(history, list):
            return fallback, 1 if first is not None else 0
        mine = [h for h in history if isinstance(h, Mapping) and h.get("attempt", 0) >= first]
        seconds, count = _fmt.ran_for(mine)
        return (seconds if seconds is not None else fallback), count

    def _root_failure(self, task_id: str) -> Optional[str]:
        """The FAILED or CANCELED task a dependency skip descends from, through SKIPPED ones."""
        tasks = self._state.get("tasks") if self._state is not None else None
        if not isinstance(tasks, Mapping):
            return None
        return root_failure(tasks, task_id, self._roots)

    def _finished_line(
        self, task_id: str, status: str, attempt: int, duration: float, detail: str
    ) -> Tuple[str, bool]:
        """The task's one line, and whether its output tails follow it."""
        self._done += 1
        entry = self._entry(task_id)
        allowed = status == "FAILED" and bool(entry.get("allowed_failure"))
        if status == "FAILED" and not allowed:
            self._failed += 1
        heading = status.lower()
        if allowed:
            heading = "allowed failures"
        elif status == "SKIPPED" and entry.get("skip_reason") == "condition_not_met":
            heading = "skipped, condition not met"
        if heading in self._names:
            self._names[heading].append(task_id)
        parts: List[str] = []
        if allowed:
            parts.append("allowed failure")
        if status != "SUCCESS" and detail:
            parts.append(_fmt.one_line(detail))
        if status == "SKIPPED" and entry.get("skip_reason") == _DEPENDENCY_NOT_SUCCESS:
            root = self._root_failure(task_id)
            if root is not None:  # says more than "dependency_not_success", in fewer columns
                parts = [p for p in parts if p != _DEPENDENCY_NOT_SUCCESS]
                parts.append(f"root failure: {root}")
        if status in ("SUCCESS", "FAILED", "CANCELED") and attempt:
            parts.append(
                _fmt.attempt_text(attempt, self._last.get(task_id), self._first.get(task_id))
            )
            seconds, count = self._ran_for(task_id, duration)
            ran = format_duration(seconds)
            parts.append(f"{ran} in {count} attempts" if count > 1 else ran)
        inside = ", ".join(p for p in parts if p)
        suffix = f" ({inside})" if inside else ""
        word = self._paint(_fmt.one_line(status), "ALLOWED" if allowed else status)
        line = f"[{self._done}/{self._total}] {word} {task_id}{suffix}"
        return line, status == "FAILED"

    def _tail_lines(self, task_id: str, width: int) -> List[str]:
        """Under a failure: the attempt's last lines of stdout and stderr, and where the rest is."""
        entry = self._entry(task_id)
        if not entry:
            return []
        lines: List[str] = []
        for stream, offset in zip(("stdout", "stderr"), _fmt.attempt_offsets(entry)):
            try:
                tail = _fmt.read_tail(entry.get(f"{stream}_path"), offset, _TAIL_LINES, _TAIL_BYTES)
            except OSError as err:
                tail = [f"(cannot read: {err.strerror or err})"]
            lines.extend(_fmt.fit(f"  {stream}| {text}", width) for text in tail)
        if not lines:
            lines.append("  (no output on stdout or stderr)")
        home = self._state.get("home") if self._state is not None else None
        command = _fmt.logs_command(self._run_id, task_id, home, self._env)
        lines.append(f"  all of it: {command}")
        return lines

    def _retry_line(
        self, task_id: str, attempt: int, delay: float, reason: str, max_attempts: Optional[int]
    ) -> str:
        if max_attempts is not None:
            self._last[task_id] = max_attempts
        after = f" after {_fmt.one_line(reason)}" if reason else ""
        which = _fmt.attempt_text(attempt, self._last.get(task_id), self._first.get(task_id))
        return f"{self._paint('RETRY')} {task_id} in {format_duration(delay)}{after} ({which})"

    def _canceled_line(self) -> str:
        """The tasks a cancel found waiting (never started, or between retries), in one line
        instead of one line each."""
        names = self._unstarted_canceled
        self._unstarted_canceled = []
        if not names:
            return ""
        self._done += len(names)
        self._names["canceled"].extend(names)
        what = "1 waiting task" if len(names) == 1 else f"{len(names)} waiting tasks"
        listed = _listing(names, _NAMES_IN_SUMMARY)
        return f"[{self._done}/{self._total}] {self._paint('CANCELED')} {what}: {listed}"

    def _stopping_line(self, running: int, grace_sec: float) -> str:
        if not running:
            return f"{self._paint('stopping', 'CANCELED')}: no task was running"
        tasks = "1 task" if running == 1 else f"{running} tasks"
        return (
            f"{self._paint('stopping', 'CANCELED')}: waiting up to {grace_sec:g}s for {tasks}; "
            "Ctrl-C again to kill"
        )

    def _killing_line(self, running: int) -> str:
        tasks = "1 task" if running == 1 else f"{running} tasks"
        return f"{self._paint('stopping', 'CANCELED')}: killing {tasks} now (SIGKILL)"

    def _summary(
        self, status: str, counts: Mapping[str, int], wall_sec: float, report_path: str
    ) -> str:
        known = [s for s in _SUMMARY_ORDER if counts.get(s)]
        others = sorted(s for s in counts if s not in _SUMMARY_ORDER and counts[s])
        listed = ", ".join(f"{counts[s]} {self._paint(s)}" for s in known + others) or "no tasks"
        head = (
            f"run {self._paint(_fmt.one_line(status))} in {format_duration(wall_sec)}: {listed}\n"
        )
        # Name what did not succeed: "1 SKIPPED" alone leaves the reader to hunt for it.
        named = "".join(
            f"  {heading}: {_listing(names, _NAMES_IN_SUMMARY)}\n"
            for heading, names in self._names.items()
            if names
        )
        return head + named + f"report: {_fmt.one_line(report_path)}\n"


def _listing(names: List[str], limit: int) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", +{len(names) - limit} more" if len(names) > limit else "")


class _PlainProgress(_Reporter):
    """One line per transition, for logs and pipes (a failure adds a few indented lines)."""

    def _lines(self, *lines: str) -> None:
        pending = self._canceled_line()
        self._write("".join(f"{line}\n" for line in (pending, *lines) if line))

    def run_started(
        self,
        run_id: str,
        total: int,
        already_done: int,
        state: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().run_started(run_id, total, already_done, state)
        done = f" ({already_done} already done)" if already_done else ""
        tasks = "1 task" if total == 1 else f"{total} tasks"
        self._lines(f"run {run_id}: {tasks}{done}")

    def task_started(self, task_id: str, attempt: int, max_attempts: Optional[int] = None) -> None:
        which = self._note_start(task_id, attempt, max_attempts)
        self._lines(f"START {task_id}" + (f" ({which})" if which else ""))

    def task_retrying(
        self,
        task_id: str,
        attempt: int,
        delay: float,
        reason: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        self._lines(self._retry_line(task_id, attempt, delay, reason, max_attempts))

    def task_finished(
        self,
        task_id: str,
        status: str,
        attempt: int,
        duration: float,
        detail: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        if status == "CANCELED" and not attempt:
            self._unstarted_canceled.append(task_id)
            return
        line, tails = self._finished_line(task_id, status, attempt, duration, detail)
        self._lines(line, *(self._tail_lines(task_id, _PLAIN_TAIL_WIDTH) if tails else ()))

    def run_stopping(self, running: int, grace_sec: float) -> None:
        stop = self._stopping_line(running, grace_sec)
        pending = self._canceled_line()
        self._write(f"{stop}\n" + (f"{pending}\n" if pending else ""))

    def run_killing(self, running: int) -> None:
        self._lines(self._killing_line(running))

    def budget_exceeded(self, cost_usd: float, limit_usd: float) -> None:
        self._lines(_budget_line(cost_usd, limit_usd))

    def run_finished(
        self, status: str, counts: Mapping[str, int], wall_sec: float, report_path: str
    ) -> None:
        self._lines()
        self._write(self._summary(status, counts, wall_sec, report_path))


class _LiveProgress(_Reporter):
    """A status block redrawn in place; every transition a permanent line above it."""

    def __init__(self, stream: TextIO, color: bool, clock: Clock, env: Mapping[str, str]) -> None:
        super().__init__(stream, color, clock, env)
        self._running: Dict[str, _Running] = {}  # insertion order = oldest first
        self._waiting: Dict[str, Tuple[str, Optional[float], str]] = {}  # why, until, attempt
        self._stopping = False
        self._drawn: List[str] = []  # the block's lines as last drawn
        self._drawn_columns = 0
        self._last_draw = float("-inf")
        self._burst = 0  # permanent lines printed since the block was last drawn, in a burst

    # --- events

    def run_started(
        self,
        run_id: str,
        total: int,
        already_done: int,
        state: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().run_started(run_id, total, already_done, state)
        self._redraw(force=True)

    def task_started(self, task_id: str, attempt: int, max_attempts: Optional[int] = None) -> None:
        which = self._note_start(task_id, attempt, max_attempts)
        self._waiting.pop(task_id, None)
        running = _Running(self._clock(), which)
        entry = self._entry(task_id)
        if entry:
            running.paths = (entry.get("stdout_path"), entry.get("stderr_path"))
            running.offsets = _fmt.attempt_offsets(entry)
        self._running[task_id] = running
        self._redraw(force=False)

    def task_retrying(
        self,
        task_id: str,
        attempt: int,
        delay: float,
        reason: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        self._running.pop(task_id, None)
        line = self._retry_line(task_id, attempt, delay, reason, max_attempts)
        which = _fmt.attempt_text(attempt, self._last.get(task_id), self._first.get(task_id))
        self._waiting[task_id] = ("retry", self._clock() + max(delay, 0.0), which)
        self._permanent([line])

    def task_waiting(self, task_id: str, why: str, seconds: Optional[float] = None) -> None:
        if task_id in self._running:
            return
        old = self._waiting.get(task_id)
        if old is not None and old[0] == why and seconds is None and old[1] is None:
            return  # told again at every tick while the pool stays full
        until = self._clock() + seconds if seconds is not None else None
        self._waiting[task_id] = (why, until, old[2] if old is not None else "")
        self._redraw(force=False)

    def task_finished(
        self,
        task_id: str,
        status: str,
        attempt: int,
        duration: float,
        detail: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        self._running.pop(task_id, None)
        self._waiting.pop(task_id, None)
        if status == "CANCELED" and not attempt:
            self._unstarted_canceled.append(task_id)
            self._redraw(force=False)
            return
        line, tails = self._finished_line(task_id, status, attempt, duration, detail)
        width = _columns(self._stream) - 1
        self._permanent([line, *(self._tail_lines(task_id, width) if tails else ())])

    def run_stopping(self, running: int, grace_sec: float) -> None:
        self._stopping = True
        # The stop first, then what it canceled before it started.
        stop = self._stopping_line(running, grace_sec)
        pending = self._canceled_line()
        self._redraw(force=True, permanent=[stop, pending] if pending else [stop])

    def run_killing(self, running: int) -> None:
        self._permanent([self._killing_line(running)])

    def budget_exceeded(self, cost_usd: float, limit_usd: float) -> None:
        self._permanent([_budget_line(cost_usd, limit_usd)])

    def tick(self) -> None:
        if self._unstarted_canceled:
            self._permanent([])
        else:
            self._redraw(force=False)

    def run_finished(
        self, status: str, counts: Mapping[str, int], wall_sec: float, report_path: str
    ) -> None:
        pending = self._canceled_line()
        summary = self._summary(status, counts, wall_sec, report_path).splitlines()
        self._write(self._compose(([pending] if pending else []) + summary, []))

    # --- drawing

    def _permanent(self, lines: List[str]) -> None:
        """Lines that stay in the scrollback, printed where the block was, the block drawn
        again below them in the same write (a terminal never shows the screen without it).
        In a burst (a thousand skips) the throttle decides: the burst costs one block."""
        pending = self._canceled_line()
        lines = ([pending] if pending else []) + lines
        self._burst = self._burst + 1 if self._clock() - self._last_draw < _REDRAW_SEC else 0
        self._redraw(force=self._burst < _BURST, permanent=lines)

    def _redraw(self, force: bool, permanent: Optional[List[str]] = None) -> None:
        now = self._clock()
        # Thousands of short tasks would otherwise repaint the block thousands of times a second.
        if not force and now - self._last_draw < _REDRAW_SEC:
            if permanent:
                self._write(self._compose(permanent, []))
            return
        self._last_draw = now
        columns, rows = _size(self._stream)
        self._write(self._compose(permanent or [], self._block(now, columns - 1, rows), columns))

    def _compose(
        self, permanent: List[str], block: List[str], columns: Optional[int] = None
    ) -> str:
        """Text that replaces the block drawn last by ``permanent`` lines, then ``block``.

        Goes back to the old block's first row and overwrites row by row, erasing each row
        before and after writing it, then erases the old rows left below; never "erase to the
        end of the screen", which tmux turns into a copy of the screen in its scrollback when
        done from the top row. The block is drawn one column short of the width, so it never
        wraps when drawn; if the window got narrower since, a terminal that reflows has wrapped
        each of its lines onto more rows, which are counted at the new width.
        """
        width, height = _size(self._stream)
        columns = columns or width
        old_rows = sum(
            max(1, -(-_fmt.display_width(line) // columns)) if columns < self._drawn_columns else 1
            for line in self._drawn
        )
        # Rows the terminal pushed off the top when it rewrapped are in its scrollback, out of
        # reach; going further up or erasing further down would scroll the screen itself.
        old_rows = min(old_rows, height)
        out = []
        if old_rows:
            out.append("\r" + (f"\x1b[{old_rows - 1}A" if old_rows > 1 else ""))
        row = 0  # the row the cursor is on, counted from the old block's first
        for line in permanent:
            used = _fmt.display_width(_strip_sgr(line))
            # After a line that fills its last row exactly the cursor waits in the margin, where
            # an erase would take the last character: no erase then (the row is full anyway).
            out.append(_ERASE + line + (_ERASE if used % columns else "") + "\n")
            row += max(1, -(-used // columns))
        out.append("\n".join(_ERASE + line + _ERASE for line in block) or _ERASE)
        row += max(len(block) - 1, 0)
        below = old_rows - 1 - row
        if below > 0:
            out.append(f"\n{_ERASE}" * below + f"\x1b[{below}A")
        self._drawn = [_strip_sgr(line) for line in block]
        self._drawn_columns = columns
        return "".join(out)

    def _block(self, now: float, width: int, rows: int) -> List[str]:
        head = self._header(now, width)
        room = max(1, min(_MAX_BLOCK_TASKS, rows // 2 - 1))
        count = len(self._running) + len(self._waiting)
        shown = room if count <= room else room - 1
        lines = [head]
        items: List[Tuple[str, str, str]] = []  # id, time column, text
        for task_id, running in self._running.items():
            if len(items) >= shown:
                break
            items.append(
                (task_id, format_duration(now - running.started), self._doing(running, now))
            )
        for task_id, (why, until, which) in self._waiting.items():
            if len(items) >= shown:
                break
            items.append((task_id, "", _wait_text(why, until, which, now)))
        if items:
            id_width = min(max(_fmt.display_width(t) for t, _, _ in items), max(8, width // 3))
            time_width = max(len(t) for _, t, _ in items)
            for task_id, elapsed, text in items:
                left = f"  {_fmt.pad(_fmt.fit(task_id, id_width), id_width)}"
                # A waiting task has no elapsed time: its text starts in that column.
                middle = f" {elapsed:>{time_width}} " if elapsed else " "
                lines.append(_fmt.fit(f"{left}{middle} {text}".rstrip(), width))
        if count > len(items):
            lines.append(_fmt.fit(f"  +{count - len(items)} more", width))
        return lines

    def _header(self, now: float, width: int) -> str:
        """``[4/13] 1.1s  1 failed  6 running  2 waiting``, in fewer words when narrow."""
        head = f"[{self._done}/{self._total}] {format_duration(now - self._t0)}"
        counts = [
            (self._failed, "failed", "failed"),
            (len(self._running), "running", "run"),
            (len(self._waiting), "waiting", "wait"),
        ]
        for gap, long in (("  ", True), (" ", False)):
            words = ["stopping"] if self._stopping else []
            words += [f"{n} {full if long else short}" for n, full, short in counts if n]
            plain = gap.join([head, *words])
            if _fmt.display_width(plain) <= width or not long:
                break
        if not self._failed or _fmt.display_width(plain) > width:
            return _fmt.fit(plain, width)
        failed = f"{self._failed} failed"
        return plain.replace(f" {failed}", " " + self._paint(failed, "FAILED"), 1)

    def _doing(self, running: _Running, now: float) -> str:
        """The attempt and the last line it wrote (read again at most every 0.5 s)."""
        if now - running.read_at >= _OUTPUT_EVERY_SEC:
            running.read_at = now
            _refresh_output(running)
        return "  ".join(p for p in (running.attempt, running.last) if p)


def _wait_text(why: str, until: Optional[float], which: str, now: float) -> str:
    if why == "retry":
        left = (until or now) - now
        text = f"retry in {format_duration(left)}" if left > 0.05 else "retry due"
    else:
        text = f"waiting for {why}"
    return f"{text} ({which})" if which else text


def _refresh_output(running: _Running) -> None:
    """Read the last line of each log whose size changed; keep the newer stream's."""
    newest = (-1, "")
    sizes = list(running.sizes)
    lines = list(running.lines)
    for i, path in enumerate(running.paths):
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_size != sizes[i]:
            sizes[i] = st.st_size
            try:
                tail = _fmt.read_tail(path, running.offsets[i], 1, _OUTPUT_BYTES)
            except OSError:
                tail = []
            lines[i] = tail[-1] if tail else ""
        if lines[i] and st.st_mtime_ns >= newest[0]:
            newest = (st.st_mtime_ns, lines[i])
    running.sizes = (sizes[0], sizes[1])
    running.lines = (lines[0], lines[1])
    running.last = newest[1]


def _strip_sgr(line: str) -> str:
    return _SGR.sub("", line) if "\x1b[" in line else line


def _size(stream: TextIO) -> Tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
        columns, rows = size.columns, size.lines
    except (OSError, ValueError, AttributeError):
        columns, rows = 0, 0
    return (max(columns, 10) if columns > 0 else 80), (rows if rows > 0 else 24)


def _columns(stream: TextIO) -> int:
    """The terminal's width, measured again each time (a window can be resized any time)."""
    return max(_size(stream)[0], 20)


def _budget_line(cost_usd: float, limit_usd: float) -> str:
    return (
        f"budget: ${cost_usd:.4g} spent of max_cost_usd ${limit_usd:.4g}: starting nothing new; "
        "running tasks finish"
    )
