"""Progress on stderr for ``orch run`` / ``orch resume``: a live view or plain lines.

The scheduler calls a ``Progress`` from its main thread, once per transition plus ``tick()``.
On a terminal (and ``TERM`` is not ``dumb``) a ninja-like status line is rewritten in place,
with failures and retries printed as permanent lines above it; elsewhere (CI logs, pipes) each
transition is exactly one plain line. Every call costs O(1) in the number of tasks: only the
running set (at most ``--max-parallel`` entries) is ever walked, and no further than the
terminal width. Progress never sees, so never prints, an ``env`` value.

Writing progress must never stop a run: if stderr goes away (a closed pipe), reporting stops
quietly and the run goes on.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, TextIO, Tuple

from orch.report import format_duration

__all__ = ["Progress", "format_duration", "make_progress"]

Clock = Callable[[], float]

_RESET = "\x1b[0m"
_COLORS = {"SUCCESS": "32", "FAILED": "31", "CANCELED": "31", "SKIPPED": "33", "RETRY": "33"}
_CLEAR_LINE = "\r\x1b[K"
# Order of the counts in the closing summary; unknown statuses follow, alphabetically.
_SUMMARY_ORDER = ("SUCCESS", "FAILED", "SKIPPED", "CANCELED", "RUNNING", "PENDING")
_REDRAW_SEC = 0.1


class Progress:
    """The scheduler's reporter interface; this base reports nothing (for tests, --quiet).

    ``attempt`` numbers are the run's (they keep counting across resumes, as ``ORCH_ATTEMPT``
    does). The optional ``max_attempts`` is the number of the last attempt this execution may
    make (first attempt + ``retries``); when given, lines say ``attempt 2/3``.
    """

    def run_started(self, run_id: str, total: int, already_done: int) -> None:
        """``total`` tasks in the run, ``already_done`` of them not re-run (resume)."""

    def task_started(self, task_id: str, attempt: int, max_attempts: Optional[int] = None) -> None:
        """An attempt's process started."""

    def task_retrying(
        self,
        task_id: str,
        attempt: int,
        delay: float,
        reason: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        """Attempt ``attempt`` (the next one) starts in ``delay`` s; ``reason`` ended the last."""

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
    terminal. ``env`` is only consulted for ``TERM`` and ``NO_COLOR``.
    """
    tty = _isatty(stream)
    smart = tty and env.get("TERM", "") not in ("", "dumb")
    color = smart and not env.get("NO_COLOR")
    if smart:
        return _LiveProgress(stream, color, clock)
    return _PlainProgress(stream, color, clock)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed or detached
        return False


def _one_line(text: str) -> str:
    # Details come from OS errors and exit codes; a stray newline would break "one line each".
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)


def _attempt_text(attempt: int, max_attempts: Optional[int]) -> str:
    if max_attempts is not None and max_attempts > 1:
        return f"attempt {attempt}/{max_attempts}"
    return f"attempt {attempt}" if attempt > 1 else ""


class _Reporter(Progress):
    """What both views share: counters, colour and a write that cannot fail the run."""

    def __init__(self, stream: TextIO, color: bool, clock: Clock) -> None:
        self._stream = stream
        self._color = color
        self._clock = clock
        self._t0 = clock()
        self._total = 0
        self._done = 0
        self._failed = 0
        self._broken = False

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            try:
                self._stream.write(text)
            except UnicodeEncodeError:  # a path the stream's encoding cannot spell
                self._stream.write(text.encode("ascii", "backslashreplace").decode("ascii"))
            self._stream.flush()
        except (OSError, ValueError):  # EPIPE, EIO on a hung-up tty, closed stream
            self._broken = True

    def _paint(self, word: str) -> str:
        code = _COLORS.get(word)
        return f"\x1b[{code}m{word}{_RESET}" if self._color and code else word

    def run_started(self, run_id: str, total: int, already_done: int) -> None:
        self._t0 = self._clock()
        self._total = total
        self._done = already_done

    def _finished_line(
        self,
        task_id: str,
        status: str,
        attempt: int,
        duration: float,
        detail: str,
        max_attempts: Optional[int],
    ) -> str:
        self._done += 1
        if status == "FAILED":
            self._failed += 1
        parts: List[str] = []
        if status != "SUCCESS" and detail:
            parts.append(_one_line(detail))
        if status in ("SUCCESS", "FAILED", "CANCELED"):
            parts.append(_attempt_text(attempt, max_attempts))
            parts.append(format_duration(duration))
        inside = ", ".join(p for p in parts if p)
        suffix = f" ({inside})" if inside else ""
        return f"[{self._done}/{self._total}] {self._paint(_one_line(status))} {task_id}{suffix}"

    def _retry_line(
        self, task_id: str, attempt: int, delay: float, reason: str, max_attempts: Optional[int]
    ) -> str:
        after = f" after {_one_line(reason)}" if reason else ""
        which = f"attempt {attempt} of {max_attempts}" if max_attempts else f"attempt {attempt}"
        return f"{self._paint('RETRY')} {task_id} in {delay:.1f}s{after} ({which})"

    def _summary(
        self, status: str, counts: Mapping[str, int], wall_sec: float, report_path: str
    ) -> str:
        known = [s for s in _SUMMARY_ORDER if counts.get(s)]
        others = sorted(s for s in counts if s not in _SUMMARY_ORDER and counts[s])
        listed = ", ".join(f"{counts[s]} {self._paint(s)}" for s in known + others) or "no tasks"
        head = f"run {self._paint(_one_line(status))} in {format_duration(wall_sec)}: {listed}\n"
        return head + f"report: {_one_line(report_path)}\n"


class _PlainProgress(_Reporter):
    """One line per transition, for logs and pipes."""

    def run_started(self, run_id: str, total: int, already_done: int) -> None:
        super().run_started(run_id, total, already_done)
        done = f" ({already_done} already done)" if already_done else ""
        tasks = "1 task" if total == 1 else f"{total} tasks"
        self._write(f"run {run_id}: {tasks}{done}\n")

    def task_started(self, task_id: str, attempt: int, max_attempts: Optional[int] = None) -> None:
        which = f"attempt {attempt}/{max_attempts}" if max_attempts else f"attempt {attempt}"
        self._write(f"START {task_id} ({which})\n")

    def task_retrying(
        self,
        task_id: str,
        attempt: int,
        delay: float,
        reason: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        self._write(self._retry_line(task_id, attempt, delay, reason, max_attempts) + "\n")

    def task_finished(
        self,
        task_id: str,
        status: str,
        attempt: int,
        duration: float,
        detail: str,
        max_attempts: Optional[int] = None,
    ) -> None:
        line = self._finished_line(task_id, status, attempt, duration, detail, max_attempts)
        self._write(line + "\n")

    def run_finished(
        self, status: str, counts: Mapping[str, int], wall_sec: float, report_path: str
    ) -> None:
        self._write(self._summary(status, counts, wall_sec, report_path))


class _LiveProgress(_Reporter):
    """A status line rewritten in place; failures and retries as permanent lines above it."""

    def __init__(self, stream: TextIO, color: bool, clock: Clock) -> None:
        super().__init__(stream, color, clock)
        self._running: Dict[str, float] = {}  # task id -> start; insertion order = oldest first
        self._waiting: Dict[str, float] = {}  # task id -> when its retry starts
        self._drawn = False
        self._last_draw = float("-inf")

    def run_started(self, run_id: str, total: int, already_done: int) -> None:
        super().run_started(run_id, total, already_done)
        self._redraw(force=True)

    def task_started(self, task_id: str, attempt: int, max_attempts: Optional[int] = None) -> None:
        self._waiting.pop(task_id, None)
        self._running[task_id] = self._clock()
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
        self._waiting[task_id] = self._clock() + delay
        self._permanent(self._retry_line(task_id, attempt, delay, reason, max_attempts))

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
        line = self._finished_line(task_id, status, attempt, duration, detail, max_attempts)
        # Successes only move the counter; what went wrong stays on screen, as in ninja.
        if status in ("FAILED", "CANCELED"):
            self._permanent(line)
        else:
            self._redraw(force=False)

    def tick(self) -> None:
        self._redraw(force=True)

    def run_finished(
        self, status: str, counts: Mapping[str, int], wall_sec: float, report_path: str
    ) -> None:
        prefix = _CLEAR_LINE if self._drawn else ""
        self._drawn = False
        self._write(prefix + self._summary(status, counts, wall_sec, report_path))

    def _permanent(self, line: str) -> None:
        prefix = _CLEAR_LINE if self._drawn else ""
        self._drawn = False
        self._write(f"{prefix}{line}\n")
        self._redraw(force=True)

    def _redraw(self, force: bool) -> None:
        now = self._clock()
        # Thousands of short tasks would otherwise repaint the line thousands of times a second.
        if not force and now - self._last_draw < _REDRAW_SEC:
            return
        self._last_draw = now
        self._write(_CLEAR_LINE + self._status_line(now, _width(self._stream)))
        self._drawn = True

    def _status_line(self, now: float, width: int) -> str:
        head = f"[{self._done}/{self._total}] {format_duration(now - self._t0)}"
        if self._failed:
            head += f", {self._failed} failed"
        items = (f"{t} ({format_duration(now - s)})" for t, s in self._running.items())
        waits = (f"{t} (retry in {format_duration(w - now)})" for t, w in self._waiting.items())
        line = head
        for label, group in (("running", items), ("waiting", waits)):
            line, full = _append_items(line, label, group, width)
            if full:
                break
        return line


def _append_items(line: str, label: str, items: Iterable[str], width: int) -> Tuple[str, bool]:
    """Add ``| label: a, b`` while it fits in ``width``; True when some item did not fit.

    Stops at the first item that does not fit, so the cost is bounded by the width, not by
    the number of running tasks.
    """
    first = True
    for item in items:
        piece = (f" | {label}: " if first else ", ") + item
        if len(line) + len(piece) + 4 > width:  # keep room for " ..."
            return (line + " ...")[:width], True
        line += piece
        first = False
    return line[:width], False


def _width(stream: TextIO) -> int:
    """Usable columns: one less than the terminal's, so the line never wraps."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    if columns <= 0:
        columns = shutil.get_terminal_size().columns
    return max(columns - 1, 20)
