"""Pure renderers from stored state: `orch status`, `orch list` and report/final_report.md.

Every function takes the state dict of ``orch.store.read_state`` (schema: docs/STATE.md) and returns
text, so `status`, `list` and the report look the same from any process. Nothing here reads a
file: the stderr tail of a failed task comes through a callback. The state holds no env values,
and nothing here adds any.

Rendering stays linear in the number of tasks (lists joined once, no repeated concatenation):
`orch status` of a 10,000-task run must stay well under a second.
"""

from __future__ import annotations

import math
import re
import shlex
import signal
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from orch import graph

__all__ = [
    "effective_status",
    "format_duration",
    "format_timestamp",
    "list_entry_json",
    "mermaid_flowchart",
    "mermaid_gantt",
    "render_final_report",
    "render_list",
    "render_status",
]

State = Mapping[str, Any]
StderrTail = Callable[[str, int], List[str]]

# Display order of task statuses in counts and summaries.
_TASK_STATUSES = ("SUCCESS", "FAILED", "SKIPPED", "CANCELED", "RUNNING", "PENDING")
_INTERRUPTED = "INTERRUPTED"
_COLOURS = {
    "SUCCESS": "32",
    "FAILED": "31",
    "SKIPPED": "33",
    "CANCELED": "35",
    "RUNNING": "36",
    "PENDING": "2",
    _INTERRUPTED: "1;33",
}
_TAIL_LINES = 50
_NOTE_MAX = 120
_GOAL_MAX = 60
# Mermaid's defaults (maxTextSize, maxEdges): a bigger diagram renders as an error box on
# GitHub, so the report says why it left the diagram out instead.
_MERMAID_MAX_TEXT = 50_000
_MERMAID_MAX_EDGES = 500
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~&!])")
_BACKTICKS = re.compile(r"`+")
_GANTT_UNSAFE = re.compile(r"[^A-Za-z0-9._\- ]")
_CONTROLS = {code: " " for code in (*range(32), *range(127, 160))}
_LOG_CONTROLS = {code: None for code in _CONTROLS if code != 9}
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


# --- small formatters ---------------------------------------------------------------------


def format_duration(seconds: Optional[float]) -> str:
    """``0.4s``, ``59.9s``, ``2m05s``, ``1h02m`` (as the progress view); ``-`` when unknown."""
    if seconds is None or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "-"
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        text = f"{seconds:.1f}s"
        return "1m00s" if text == "60.0s" else text
    # Truncated like orch.progress, so the summary line and the report agree on a wall time.
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_timestamp(value: Optional[str]) -> str:
    """A stored ISO timestamp in local time, to the second: ``2026-11-25T10:00:00+01:00``."""
    return _local_time(value, None)


def _local_time(value: Optional[str], pattern: Optional[str]) -> str:
    moment = _parse_time(value)
    if moment is None:
        return "-" if value is None else str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    moment = moment.replace(microsecond=0)
    return moment.strftime(pattern) if pattern else moment.isoformat()


def _short_timestamp(value: Optional[str]) -> str:
    return _local_time(value, "%Y-%m-%d %H:%M:%S")


def _parse_time(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _seconds_between(start: Optional[datetime], end: Optional[datetime]) -> Optional[float]:
    if start is None or end is None:
        return None
    try:
        return max((end - start).total_seconds(), 0.0)
    except TypeError:  # one naive, one aware: a damaged state, not worth a traceback
        return None


def _now(now: Optional[datetime]) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


def _one_line(text: Any, limit: int = _NOTE_MAX) -> str:
    # Control characters (an escape sequence in an error message) must not reach the terminal.
    flat = " ".join(str(text).translate(_CONTROLS).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _outcome(entry: Mapping[str, Any]) -> str:
    """``exit 1``, ``SIGKILL``, ``timed out, SIGTERM``: how a task or an attempt ended."""
    parts = []
    if entry.get("timed_out"):
        parts.append("timed out")
    sig = entry.get("signal")
    code = entry.get("exit_code")
    if _is_int(sig) and sig:
        parts.append(_signal_name(sig))
    elif _is_int(code):
        parts.append(f"exit {code}")
    return ", ".join(parts) or "-"


# --- run-level facts -----------------------------------------------------------------------


def _tasks(state: State) -> Mapping[str, Mapping[str, Any]]:
    tasks = state.get("tasks")
    return tasks if isinstance(tasks, Mapping) else {}


def effective_status(state: State, owner_alive: bool) -> str:
    """The run status to show: ``INTERRUPTED`` when it claims to run but no process owns it."""
    status = str(state.get("status") or "PENDING")
    if owner_alive:
        return status
    if status == "RUNNING":
        return _INTERRUPTED
    if status == "PENDING" and any(t.get("status") == "RUNNING" for t in _tasks(state).values()):
        return _INTERRUPTED
    return status


def _task_display_status(task: Mapping[str, Any], interrupted: bool) -> str:
    status = str(task.get("status") or "PENDING")
    # A task recorded RUNNING in a run nobody owns is not running: say what happened to it.
    return _INTERRUPTED if interrupted and status == "RUNNING" else status


def _display_counts(state: State, interrupted: bool) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for task in _tasks(state).values():
        status = _task_display_status(task, interrupted)
        counts[status] = counts.get(status, 0) + 1
    return counts


def _count_summary(counts: Mapping[str, int]) -> str:
    """``3/4 ok, 1 failed``."""
    total = sum(counts.values())
    parts = [f"{counts.get('SUCCESS', 0)}/{total} ok"]
    for status in (*_TASK_STATUSES[1:], _INTERRUPTED):
        if counts.get(status):
            parts.append(f"{counts[status]} {status.lower()}")
    return ", ".join(parts)


def _run_duration(
    state: State, status: str, live: bool, now: Optional[datetime]
) -> Tuple[Optional[float], str]:
    """Seconds of the latest session and how to qualify them (so far, until interrupted)."""
    start = _parse_time(state.get("started_at"))
    if start is None:
        return None, ""
    if status == _INTERRUPTED:
        # Nobody will write ended_at: the last recorded change is the best end there is.
        return _seconds_between(start, _parse_time(state.get("updated_at"))), " until interrupted"
    if live and status in ("RUNNING", "PENDING"):
        return _seconds_between(start, _now(now)), " so far"
    end = _parse_time(state.get("ended_at")) or _parse_time(state.get("updated_at"))
    return _seconds_between(start, end), ""


def _task_duration(task: Mapping[str, Any], live: bool, now: Optional[datetime]) -> Optional[float]:
    duration = task.get("duration_sec")
    if live and task.get("status") == "RUNNING":
        return _seconds_between(_parse_time(task.get("started_at")), _now(now))
    return float(duration) if isinstance(duration, (int, float)) else None


def _unsuccessful_deps(
    task: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]
) -> List[str]:
    return [
        dep
        for dep in task.get("depends_on") or ()
        if (tasks.get(dep) or {}).get("status") != "SUCCESS"
    ]


def _reason(task: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """Why a task did not succeed, in one line: skip reason (with the blocking deps) or error."""
    parts = []
    reason = task.get("skip_reason")
    if reason == "dependency_not_success":
        blocking = _unsuccessful_deps(task, tasks)
        shown = ", ".join(blocking[:3]) + (", …" if len(blocking) > 3 else "")
        parts.append(f"{reason}: {shown}" if shown else str(reason))
    elif reason:
        parts.append(str(reason))
    elif task.get("status") == "CANCELED" and not task.get("error"):
        parts.append("canceled")
    if task.get("error"):
        parts.append(str(task["error"]))
    return _one_line("; ".join(parts))


# --- plain-text tables -----------------------------------------------------------------------


def _paint(text: str, status: str, color: bool) -> str:
    code = _COLOURS.get(status.strip())
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[int] = (),
    status_col: Optional[int] = None,
    color: bool = False,
) -> List[str]:
    """Aligned columns two spaces apart; the last column is left ragged (no trailing blanks)."""
    widths = [len(h) for h in header]
    if rows:
        widths = [max(w, max(map(len, cells))) for w, cells in zip(widths, zip(*rows))]
    last = len(header) - 1
    paint = color and status_col is not None

    def spec(i: int, painted: bool) -> str:
        if i == last or painted:
            return "{}"
        return f"{{:{'>' if i in right else '<'}{widths[i]}}}"

    # One format string per table: str.format is several times faster than padding cell by cell.
    head_format = "  ".join(spec(i, False) for i in range(len(header)))
    row_format = "  ".join(spec(i, paint and i == status_col) for i in range(len(header)))
    lines = [head_format.format(*header).rstrip()]
    if paint and status_col is not None:
        # Padded outside the escape codes, so the colour takes no width.
        col, width = status_col, widths[status_col]
        rows = [
            (*r[:col], _paint(r[col], r[col], True) + " " * (width - len(r[col])), *r[col + 1 :])
            for r in rows
        ]
    lines.extend(row_format.format(*row).rstrip() for row in rows)
    return lines


# --- orch status ---------------------------------------------------------------------------


def render_status(
    state: State, owner_alive: bool, color: bool, *, now: Optional[datetime] = None
) -> str:
    """`orch status`: a run header, then one aligned line per task. Ends with a newline."""
    status = effective_status(state, owner_alive)
    interrupted = status == _INTERRUPTED
    tasks = _tasks(state)
    duration, qualifier = _run_duration(state, status, owner_alive, now)
    header = [
        ("run", str(state.get("run_id", "-"))),
        ("status", _paint(status, status, color)),
        ("goal", _one_line(state["goal"], 200) if state.get("goal") else "-"),
        ("created", format_timestamp(state.get("created_at"))),
        ("started", format_timestamp(state.get("started_at"))),
        ("ended", format_timestamp(state.get("ended_at"))),
        ("duration", format_duration(duration) + (qualifier if duration is not None else "")),
        ("workdir", str(state.get("workdir", "-"))),
        ("tasks", _count_summary(_display_counts(state, interrupted))),
    ]
    lines = [f"{key + ':':<10}{value}" for key, value in header]
    rows = []
    for task_id, task in tasks.items():
        rows.append(
            (
                str(task_id),
                _task_display_status(task, interrupted),
                str(task.get("attempts", 0)),
                format_duration(_task_duration(task, owner_alive, now)),
                _outcome(task),
                _reason(task, tasks),
            )
        )
    header_row = ("TASK", "STATUS", "ATTEMPTS", "DURATION", "RESULT", "NOTE")
    lines.append("")
    lines.extend(_table(header_row, rows, right=(2, 3), status_col=1, color=color))
    return "\n".join(lines) + "\n"


# --- orch list -----------------------------------------------------------------------------


def render_list(states: Sequence[Tuple[State, bool]], *, now: Optional[datetime] = None) -> str:
    """`orch list`: one line per run in the order given (the caller sorts, newest first).

    The goal comes last: it is free text (any script, any width), so nothing is aligned after it.
    """
    if not states:
        return "no runs\n"
    rows = []
    for state, alive in states:
        status = effective_status(state, alive)
        duration, _ = _run_duration(state, status, alive, now)
        rows.append(
            (
                str(state.get("run_id", "-")),
                status,
                _short_timestamp(state.get("started_at") or state.get("created_at")),
                format_duration(duration),
                _count_summary(_display_counts(state, status == _INTERRUPTED)),
                _one_line(state["goal"], _GOAL_MAX) if state.get("goal") else "",
            )
        )
    header = ("RUN ID", "STATUS", "START", "DURATION", "TASKS", "GOAL")
    return "\n".join(_table(header, rows, right=(3,))) + "\n"


def list_entry_json(
    state: State, owner_alive: bool, *, now: Optional[datetime] = None
) -> Dict[str, Any]:
    """One run of `orch list --json`. ``counts`` has every task status, as stored."""
    status = effective_status(state, owner_alive)
    duration, _ = _run_duration(state, status, owner_alive, now)
    counts = {name: 0 for name in _TASK_STATUSES}
    for task in _tasks(state).values():
        name = str(task.get("status") or "PENDING")
        counts[name] = counts.get(name, 0) + 1
    return {
        "run_id": state.get("run_id"),
        "status": state.get("status"),
        "effective_status": status,
        "goal": state.get("goal"),
        "created_at": state.get("created_at"),
        "started_at": state.get("started_at"),
        "ended_at": state.get("ended_at"),
        "duration_sec": round(duration, 3) if duration is not None else None,
        "tasks": sum(counts.values()),
        "counts": counts,
    }


# --- Markdown helpers ------------------------------------------------------------------------


def _md(text: Any) -> str:
    """Free text inside a paragraph, list item or table cell: literal, on one line."""
    escaped = _MD_SPECIAL.sub(r"\\\1", str(text))
    return escaped.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def _code(text: Any, in_table: bool = True) -> str:
    """An inline code span that survives backticks, newlines and (in a table) pipes."""
    body = " ".join(str(text).splitlines()) if text is not None else ""
    runs = _BACKTICKS.findall(body)
    ticks = "`" * (max(map(len, runs)) + 1 if runs else 1)
    if body.startswith(("`", " ")) or body.endswith(("`", " ")):
        body = f" {body} "
    if in_table:
        # GFM splits table cells before it parses code spans: an escaped pipe is the only way.
        body = body.replace("|", "\\|")
    return f"{ticks}{body}{ticks}"


def _fenced(lines: Sequence[str], info: str = "") -> List[str]:
    """A fenced block whose fence is longer than any backtick run inside it."""
    longest = 0
    for line in lines:
        for run in _BACKTICKS.findall(line):
            longest = max(longest, len(run))
    fence = "`" * max(3, longest + 1)
    return [fence + info, *lines, fence]


def _md_table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> List[str]:
    """``align`` holds one letter per column: ``l`` or ``r``."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _rel_to_run(path: Any, run_dir: Any) -> str:
    text = str(path)
    prefix = str(run_dir).rstrip("/") + "/" if run_dir else None
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def _size(n: Any) -> str:
    if not _is_int(n):
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable: GiB ends the loop


def _yes_no(value: Any) -> str:
    return "yes" if value else "no"


# --- final_report.md -----------------------------------------------------------------------


def render_final_report(state: State, stderr_tail: StderrTail) -> str:
    """report/final_report.md: overview, tasks, failures (with stderr tails), skipped and
    canceled tasks, artifacts, and Mermaid charts of the DAG and of the attempts.

    ``stderr_tail(task_id, 50)`` returns the last lines of a task's stderr log; it is called
    once per FAILED task and may raise OSError (the report then says the log is unreadable).
    """
    tasks = _tasks(state)
    sections = [
        _report_overview(state),
        _report_tasks(state),
        _report_failures(state, stderr_tail),
        _report_not_run(tasks),
        _report_artifacts(tasks),
        _report_graph(state),
        _report_timeline(state),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _report_overview(state: State) -> List[str]:
    status = str(state.get("status") or "PENDING")
    duration, qualifier = _run_duration(state, status, False, None)
    items = [
        ("Goal", _md(state["goal"]) if state.get("goal") else "-"),
        ("Status", f"**{status}**"),
        ("Tasks", _count_summary(_display_counts(state, False))),
        ("Created", format_timestamp(state.get("created_at"))),
        ("Started", format_timestamp(state.get("started_at"))),
        ("Ended", format_timestamp(state.get("ended_at"))),
        ("Wall time", format_duration(duration) + (qualifier if duration is not None else "")),
        ("Max parallel", _md(state.get("max_parallel", "-"))),
        ("Fail fast", _yes_no(state.get("fail_fast"))),
        ("Workdir", _code(state.get("workdir", "-"), in_table=False)),
        ("Plan", _code(state.get("plan_path", "-"), in_table=False)),
        ("Run directory", _code(state.get("run_dir", "-"), in_table=False)),
    ]
    if state.get("artifacts_dir"):
        items.append(("Artifacts dir", _code(state["artifacts_dir"], in_table=False)))
    lines = [f"# Run {_code(state.get('run_id', '-'), in_table=False)}", ""]
    lines.extend(f"- **{key}:** {value}" for key, value in items)
    return lines


def _report_tasks(state: State) -> List[str]:
    run_dir = state.get("run_dir")
    rows = []
    for task_id, task in _tasks(state).items():
        # A task that never started has no logs: do not point at files that do not exist.
        logs = [
            _code(_rel_to_run(task[k], run_dir))
            for k in ("stdout_path", "stderr_path")
            if task.get(k) and task.get("attempts")
        ]
        rows.append(
            (
                _code(task_id),
                str(task.get("status") or "PENDING"),
                str(task.get("attempts", 0)),
                format_duration(_task_duration(task, False, None)),
                _exit_cell(task),
                _yes_no(task.get("timed_out")),
                "<br>".join(logs) or "-",
            )
        )
    header = ("Task", "Status", "Attempts", "Duration", "Exit code", "Timed out", "Logs")
    return ["## Tasks", "", *_md_table(header, "llrrrll", rows)]


def _exit_cell(task: Mapping[str, Any]) -> str:
    sig = task.get("signal")
    if _is_int(sig) and sig:
        return _signal_name(sig)
    code = task.get("exit_code")
    return str(code) if _is_int(code) else "-"


def _report_failures(state: State, stderr_tail: StderrTail) -> List[str]:
    failed = [(tid, t) for tid, t in _tasks(state).items() if t.get("status") == "FAILED"]
    if not failed:
        return []
    lines = ["## Failures"]
    for task_id, task in failed:
        lines.extend(["", f"### {_code(task_id, in_table=False)}", ""])
        lines.append(f"- **Result:** {_md(_outcome(task))}")
        if task.get("error"):
            lines.append(f"- **Error:** {_md(task['error'])}")
        lines.append(f"- **Attempts:** {_md(task.get('attempts', 0))}")
        if task.get("cmd"):
            lines.append(f"- **Command:** {_code(_join_cmd(task['cmd']), in_table=False)}")
        history = task.get("history") or []
        if len(history) > 1:
            lines.extend(["", *_attempts_table(history)])
        lines.extend(["", *_stderr_block(task_id, task, state.get("run_dir"), stderr_tail)])
    return lines


def _join_cmd(cmd: Any) -> str:
    if isinstance(cmd, (list, tuple)):
        return " ".join(shlex.quote(str(arg)) for arg in cmd)
    return str(cmd)


def _attempts_table(history: Sequence[Mapping[str, Any]]) -> List[str]:
    rows = []
    for entry in history:
        duration = entry.get("duration_sec")
        rows.append(
            (
                _md(entry.get("attempt", "-")),
                format_timestamp(entry.get("started_at")),
                format_duration(duration if isinstance(duration, (int, float)) else None),
                _md(_attempt_result(entry)),
                _md(_one_line(entry["error"])) if entry.get("error") else "-",
            )
        )
    return _md_table(("Attempt", "Started", "Duration", "Result", "Error"), "rlrll", rows)


def _attempt_result(entry: Mapping[str, Any]) -> str:
    if entry.get("canceled"):
        return "canceled"
    if entry.get("ended_at") is None and entry.get("exit_code") is None and not entry.get("signal"):
        return "did not finish"
    return _outcome(entry)


def _stderr_block(
    task_id: str, task: Mapping[str, Any], run_dir: Any, stderr_tail: StderrTail
) -> List[str]:
    where = _code(_rel_to_run(task.get("stderr_path", "stderr"), run_dir), in_table=False)
    try:
        tail = [_log_line(line) for line in stderr_tail(task_id, _TAIL_LINES)]
    except OSError as err:
        return [f"Stderr ({where}) could not be read: {_md(err.strerror or err)}"]
    if not tail:
        return [f"Stderr ({where}) is empty."]
    noun = "line" if len(tail) == 1 else "lines"
    return [f"Last {len(tail)} {noun} of stderr ({where}):", "", *_fenced(tail, "text")]


def _log_line(line: Any) -> str:
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    # Colour codes of the tools (pytest, compilers) are noise in a Markdown file.
    return _ANSI.sub("", str(line).rstrip("\r\n")).translate(_LOG_CONTROLS)


def _report_not_run(tasks: Mapping[str, Mapping[str, Any]]) -> List[str]:
    rows = []
    for task_id, task in tasks.items():
        status = task.get("status")
        if status not in ("SKIPPED", "CANCELED"):
            continue
        blocking = (
            _unsuccessful_deps(task, tasks)
            if task.get("skip_reason") == "dependency_not_success"
            else []
        )
        reason = _code(task["skip_reason"]) if task.get("skip_reason") else "-"
        if status == "CANCELED" and not task.get("skip_reason"):
            reason = "canceled"
        if task.get("error"):
            reason = f"{reason}; {_md(_one_line(task['error']))}"
        rows.append((_code(task_id), str(status), reason, ", ".join(map(_code, blocking)) or "-"))
    if not rows:
        return []
    return [
        "## Skipped and canceled",
        "",
        *_md_table(("Task", "Status", "Reason", "Blocked by"), "llll", rows),
    ]


def _report_artifacts(tasks: Mapping[str, Mapping[str, Any]]) -> List[str]:
    lines = ["## Artifacts"]
    for task_id, task in tasks.items():
        artifacts = task.get("artifacts") or []
        missing = task.get("missing_outputs") or []
        errors = task.get("artifact_errors") or []
        if not (artifacts or missing or errors):
            continue
        lines.extend(["", f"### {_code(task_id, in_table=False)}"])
        if artifacts:
            rows = [
                (
                    _code(a.get("path", "?")),
                    _size(a.get("size")),
                    _code(str(a.get("sha256") or "-")[:12]),
                )
                for a in artifacts
            ]
            lines.extend(["", *_md_table(("Path", "Size", "SHA-256"), "lrl", rows)])
        if missing:
            patterns = ", ".join(_code(p, in_table=False) for p in missing)
            lines.extend(["", f"Missing outputs (no match): {patterns}"])
        if errors:
            lines.extend(["", "Artifact errors:", ""])
            lines.extend(f"- {_md(e)}" for e in errors)
    if len(lines) == 1:
        lines.extend(["", "No task declared outputs that produced artifacts."])
    return lines


def _report_graph(state: State) -> List[str]:
    lines = ["## Graph", ""]
    text, edges = _flowchart_lines(_tasks(state))
    if edges > _MERMAID_MAX_EDGES or _length(text) > _MERMAID_MAX_TEXT:
        command = _code(f"orch graph {state.get('run_id', 'RUN_ID')}", in_table=False)
        lines.append(
            f"Graph omitted: {len(_tasks(state))} tasks and {edges} dependencies are more than "
            f"Mermaid renders; {command} prints it."
        )
        return lines
    return [*lines, *_fenced(text, "mermaid")]


def _report_timeline(state: State) -> List[str]:
    lines = ["## Timeline", ""]
    text, bars = _gantt_lines(state)
    if bars == 0:
        return [*lines, "No attempt was started."]
    if _length(text) > _MERMAID_MAX_TEXT:
        return [*lines, f"Timeline omitted: {bars} attempts are more than Mermaid renders."]
    lines.append("One bar per attempt: failed ones are marked critical, running ones active.")
    return [*lines, "", *_fenced(text, "mermaid")]


def _length(lines: Sequence[str]) -> int:
    return sum(len(line) + 1 for line in lines)


# --- Mermaid -------------------------------------------------------------------------------


def mermaid_flowchart(state: State) -> str:
    """The DAG as a Mermaid flowchart, one class (colour) per task status."""
    return "\n".join(_flowchart_lines(_tasks(state))[0]) + "\n"


def mermaid_gantt(state: State) -> str:
    """Every attempt on a time axis: a section per task, failed attempts marked ``crit``."""
    return "\n".join(_gantt_lines(state)[0]) + "\n"


def _flowchart_lines(tasks: Mapping[str, Mapping[str, Any]]) -> Tuple[List[str], int]:
    """The same drawing as `orch graph RUN_ID`, from the state alone."""
    nodes = [(task_id, task.get("depends_on") or ()) for task_id, task in tasks.items()]
    statuses = {task_id: str(task.get("status") or "PENDING") for task_id, task in tasks.items()}
    return graph.mermaid_flowchart(nodes, statuses)


def _epoch_ms(value: Any) -> Optional[int]:
    moment = _parse_time(value)
    if moment is None:
        return None
    return round(moment.timestamp() * 1000)


def _gantt_tag(entry: Mapping[str, Any], running: bool) -> str:
    if running:
        return "active, "
    if entry.get("canceled"):
        return ""
    failed = (
        entry.get("timed_out")
        or entry.get("error")
        or entry.get("signal")
        or entry.get("exit_code") != 0
    )
    return "crit, " if failed else "done, "


def _gantt_lines(state: State) -> Tuple[List[str], int]:
    lines = ["gantt", "    dateFormat x", "    axisFormat %H:%M:%S", "    todayMarker off"]
    fallback_end = _epoch_ms(state.get("updated_at"))
    bars = 0
    for task_id, task in _tasks(state).items():
        section: List[str] = []
        for entry in task.get("history") or ():
            start = _epoch_ms(entry.get("started_at"))
            if start is None:
                continue
            end = _epoch_ms(entry.get("ended_at"))
            running = end is None
            end = max(end if end is not None else (fallback_end or start), start)
            tag = _gantt_tag(entry, running)
            # Bar names stay fixed text: a task name may not hold ':' or '#', nor start
            # with a keyword (title, section, click, ...).
            section.append(f"    attempt {entry.get('attempt', '?')} :{tag}a{bars}, {start}, {end}")
            bars += 1
        if section:
            # Older Mermaid ends a section name at ':', '#' or ';'; ids never hold them anyway.
            lines.append(f"    section {_GANTT_UNSAFE.sub('_', str(task_id))}")
            lines.extend(section)
    return lines, bars
