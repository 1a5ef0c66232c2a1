"""What every view formats the same way: durations, timestamps, attempts, colours, widths.

Shared by the live progress (orch.progress), ``orch status`` / ``orch list`` (orch.report) and
the final report (orch.final_report), so a duration or an attempt reads the same in all three.
Pure functions of their arguments, except ``color_wanted`` and ``terminal_columns`` which look
at a stream.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import unicodedata
from datetime import datetime
from typing import Any, Iterable, List, Mapping, Optional, Tuple

__all__ = [
    "ELLIPSIS",
    "STATUS_SGR",
    "attempt_offsets",
    "attempt_text",
    "clean_line",
    "color_wanted",
    "display_width",
    "fit",
    "format_duration",
    "format_timestamp",
    "local_time",
    "logs_command",
    "one_line",
    "pad",
    "paint",
    "parse_time",
    "ran_for",
    "read_tail",
    "terminal_columns",
]

ELLIPSIS = "…"

# One palette for every terminal view (SGR codes). The Mermaid and DOT colours of the same
# statuses are orch.graph.STATUS_COLORS (light fills for a white page, the same hues).
STATUS_SGR = {
    "SUCCESS": "32",
    "FAILED": "31",
    "SKIPPED": "33",
    "CANCELED": "35",
    "RUNNING": "36",
    "PENDING": "2",
    "INTERRUPTED": "1;33",
    "RETRY": "33",
    "ALLOWED": "33",  # an allowed failure: FAILED, but not an error of the run
}

_CONTROLS = {code: " " for code in (*range(32), *range(127, 160))}
_TAB_CONTROLS = {code: sub for code, sub in _CONTROLS.items() if code != 9}
# CSI (colours, cursor moves), OSC (titles, hyperlinks) and two-byte escapes a task may print.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")


# --- durations and times ------------------------------------------------------------------


def format_duration(seconds: Optional[float]) -> str:
    """``0.4s``, ``59.9s``, ``2m05s``, ``1h02m``; ``-`` when unknown."""
    if seconds is None or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "-"
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        text = f"{seconds:.1f}s"
        return "1m00s" if text == "60.0s" else text
    # Truncated, never rounded up: a live view ticking 59m59s must not jump back to 59m.
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def parse_time(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def local_time(value: Optional[str], pattern: Optional[str] = None) -> str:
    """A stored ISO timestamp in local time, to the second (``-`` for None)."""
    moment = parse_time(value)
    if moment is None:
        return "-" if value is None else str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    moment = moment.replace(microsecond=0)
    return moment.strftime(pattern) if pattern else moment.isoformat()


def format_timestamp(value: Optional[str]) -> str:
    """``2026-11-25T10:00:00+01:00``: a stored ISO timestamp in local time, to the second."""
    return local_time(value, None)


def ran_for(history: Iterable[Mapping[str, Any]]) -> Tuple[Optional[float], int]:
    """(seconds spent running, number of attempts) over ``history``: the sum of the attempts'
    own durations, so retry backoffs and waits for a slot are not counted."""
    total: Optional[float] = None
    count = 0
    for entry in history:
        count += 1
        duration = entry.get("duration_sec")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            total = (total or 0.0) + max(float(duration), 0.0)
    return total, count


def attempt_text(attempt: int, last: Optional[int], first: Optional[int] = None) -> str:
    """``attempt 2/3``: the one wording of attempts. ``last`` is the number of the last attempt
    this execution may make, ``first`` its first; ``/last`` is said only when the execution may
    make more than one (a resumed ``retries: 0`` task is ``attempt 2``, not ``attempt 2/2``).
    The first attempt of a task that has no retries says nothing (empty)."""
    start = first if first is not None else 1
    if last is not None and last > start and last >= attempt:
        return f"attempt {attempt}/{last}"
    return f"attempt {attempt}" if attempt > 1 else ""


# --- text for terminals -------------------------------------------------------------------


def one_line(text: Any, limit: Optional[int] = None) -> str:
    """Control characters (an escape sequence in an error message) never reach the terminal,
    and a stray newline never breaks a one-line-per-item output."""
    flat = " ".join(str(text).translate(_CONTROLS).split())
    return fit(flat, limit) if limit is not None else flat


def clean_line(raw: Any, tabs: bool = False) -> str:
    """A line a task printed, made safe to show: decoded, colour codes dropped, the part after
    the last carriage return (what a progress bar shows), controls as spaces (tabs kept when
    ``tabs``: a Markdown code block shows them; a terminal line would miscount its width)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    text = _ESCAPES.sub("", str(raw).rstrip("\r\n"))
    if "\r" in text:
        parts = [p for p in text.split("\r") if p.strip()]
        text = parts[-1] if parts else ""
    return text.translate(_TAB_CONTROLS if tabs else _CONTROLS).rstrip()


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide and full-width characters take
    two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, its end replaced by ``…`` when it did not fit."""
    if width <= 0:
        return ""
    if display_width(text) <= width:
        return text
    if text.isascii():
        return text[: width - 1] + ELLIPSIS
    used = 0
    for index, char in enumerate(text):
        used += _char_width(char)
        if used > width - 1:
            return text[:index] + ELLIPSIS
    return text


def pad(text: str, width: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` columns (display width)."""
    gap = " " * max(width - display_width(text), 0)
    return gap + text if right else text + gap


def paint(text: str, status: str, color: bool) -> str:
    code = STATUS_SGR.get(status)
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def color_wanted(stream: Any, env: Mapping[str, str]) -> bool:
    """Colour on a terminal unless ``NO_COLOR`` is set to a non-empty value (no-color.org: an
    empty ``NO_COLOR=`` does not count) or ``TERM`` is ``dumb``."""
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def terminal_columns(stream: Any, env: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """The width to fit ``stream``'s output in: ``COLUMNS`` when set to a positive number (as
    shutil.get_terminal_size), else the width of the terminal ``stream`` writes to; None
    (no limit) for a pipe or a file, so ``orch list | grep`` sees whole lines."""
    text = (os.environ if env is None else env).get("COLUMNS", "")
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    try:
        if not stream.isatty():
            return None
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None
    return columns if columns > 0 else None


# --- a task's own output --------------------------------------------------------------------


def read_tail(
    path: Optional[str], start: int, lines: int, max_bytes: int, *, tabs: bool = False
) -> List[str]:
    """The last ``lines`` non-blank-ended lines a task wrote to ``path`` from offset ``start``
    on (its attempt's own offset), cleaned for display. Reads at most ``max_bytes`` from the end
    of the file. A missing file has no lines; other OSErrors are the caller's."""
    if not path or lines <= 0:
        return []
    from orch.logs import tail_lines

    try:
        raw = tail_lines(path, lines + 2, start, max_bytes)
    except FileNotFoundError:
        return []
    shown = [clean_line(line, tabs) for line in raw]
    while shown and not shown[-1].strip():
        shown.pop()
    return shown[-lines:]


def attempt_offsets(entry: Mapping[str, Any]) -> Tuple[int, int]:
    """Where the latest attempt's bytes start in the stdout and stderr logs (0, 0 if unknown)."""
    history = entry.get("history") or ()
    last = history[-1] if history else {}
    offsets: List[int] = []
    for key in ("stdout_offset", "stderr_offset"):
        value = last.get(key) if isinstance(last, Mapping) else None
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        offsets.append(value if ok and isinstance(value, int) else 0)
    return offsets[0], offsets[1]


def logs_command(run_id: str, task_id: str, home: Optional[str], env: Mapping[str, str]) -> str:
    """The exact ``orch logs`` command that prints a task's whole output; ``--home`` is added
    when the run's home is not the one orch would use by default here."""
    words = ["orch", "logs", run_id, "--task", task_id]
    if home:
        default = env.get("ORCH_HOME") or ".orch"
        try:
            same = os.path.realpath(home) == os.path.realpath(default)
        except (OSError, ValueError):
            same = False
        if not same:
            words += ["--home", home]
    return " ".join(shlex.quote(w) for w in words)
