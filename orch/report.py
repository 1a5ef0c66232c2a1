"""`orch status` and `orch list` rendered from stored state, and the facts about a stored run
that every view shares (effective status, how a task ended, why it did not run, its root
failure, how long its attempts ran).

Every function takes the state dict of ``orch.store.read_state`` (schema: docs/STATE.md) and
returns text, so `status` and `list` look the same from any process. Nothing here reads a
file; the final report (which reads log tails) is orch.final_report. The state holds no env
values, and nothing here adds any.

Tables are fitted to a width (the terminal's, when stdout is one): the free-text column (goal,
note) is cut with an ellipsis first, then whole columns of lesser use are left out. Widths
count display columns, so a CJK goal takes two columns per character.

Rendering stays linear in the number of tasks (lists joined once, no repeated concatenation):
`orch status` of a 10,000-task run must stay well under a second.
"""

from __future__ import annotations

import signal
import sys
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from orch import _fmt
from orch._fmt import format_duration, format_timestamp

__all__ = [
    "INTERRUPTED",
    "count_summary",
    "display_counts",
    "effective_status",
    "format_cost",
    "format_duration",
    "format_timestamp",
    "list_entry_json",
    "outcome",
    "reason",
    "render_list",
    "render_status",
    "root_failure",
    "run_duration",
    "task_run_time",
    "tasks_of",
]

State = Mapping[str, Any]

# Display order of task statuses in counts and summaries.
TASK_STATUSES = ("SUCCESS", "FAILED", "SKIPPED", "CANCELED", "RUNNING", "PENDING")
INTERRUPTED = "INTERRUPTED"
DEPENDENCY_NOT_SUCCESS = "dependency_not_success"
CONDITION_NOT_MET = "condition_not_met"
_NOTE_MAX = 120
_GOAL_MAX = 60
_GAP = "  "
_COMFORT = 20  # a cut free-text column keeps this much before other columns are dropped


# --- run-level facts -----------------------------------------------------------------------


def tasks_of(state: State) -> Mapping[str, Mapping[str, Any]]:
    tasks = state.get("tasks")
    return tasks if isinstance(tasks, Mapping) else {}


def effective_status(state: State, owner_alive: bool) -> str:
    """The run status to show: ``INTERRUPTED`` when it claims to run but no process owns it."""
    status = str(state.get("status") or "PENDING")
    if owner_alive:
        return status
    if status == "RUNNING":
        return INTERRUPTED
    if status == "PENDING" and any(t.get("status") == "RUNNING" for t in tasks_of(state).values()):
        return INTERRUPTED
    return status


def _task_display_status(task: Mapping[str, Any], interrupted: bool) -> str:
    status = str(task.get("status") or "PENDING")
    # A task recorded RUNNING in a run nobody owns is not running: say what happened to it.
    return INTERRUPTED if interrupted and status == "RUNNING" else status


def stored_counts(state: State) -> Dict[str, int]:
    """Tasks per stored status: from the tasks, or from a summary read (store.read_summary)."""
    tasks = tasks_of(state)
    summary = state.get("task_counts")
    if not tasks and isinstance(summary, Mapping):
        return {str(k): int(v) for k, v in summary.items() if isinstance(v, int)}
    counts: Dict[str, int] = {}
    for task in tasks.values():
        name = str(task.get("status") or "PENDING")
        counts[name] = counts.get(name, 0) + 1
    return counts


def display_counts(state: State, interrupted: bool) -> Dict[str, int]:
    counts: Dict[str, int]
    if not tasks_of(state) and isinstance(state.get("task_counts"), Mapping):
        counts = stored_counts(state)
        if interrupted and counts.get("RUNNING"):
            counts[INTERRUPTED] = counts.pop("RUNNING")
        return counts
    counts = {}
    for task in tasks_of(state).values():
        status = _task_display_status(task, interrupted)
        if status == "FAILED" and task.get("allowed_failure"):
            status = _ALLOWED  # not an error: counted apart, as the report does
        counts[status] = counts.get(status, 0) + 1
    return counts


_ALLOWED = "ALLOWED FAILURE"


def count_summary(counts: Mapping[str, int]) -> str:
    """``3/4 ok, 1 failed``."""
    total = sum(counts.values())
    parts = [f"{counts.get('SUCCESS', 0)}/{total} ok"]
    for status in (*TASK_STATUSES[1:], INTERRUPTED, _ALLOWED):
        if counts.get(status):
            parts.append(f"{counts[status]} {status.lower()}")
    return ", ".join(parts)


def _seconds_between(start: Optional[datetime], end: Optional[datetime]) -> Optional[float]:
    if start is None or end is None:
        return None
    try:
        return max((end - start).total_seconds(), 0.0)
    except TypeError:  # one naive, one aware: a damaged state, not worth a traceback
        return None


def _now(now: Optional[datetime]) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


def run_duration(
    state: State, status: str, live: bool, now: Optional[datetime]
) -> Tuple[Optional[float], str]:
    """Wall time of the run over all its sessions (a resume adds one), and how to qualify it
    (so far, until interrupted, over N sessions)."""
    latest, qualifier = _latest_session(state, status, live, now)
    sessions = state.get("sessions")
    if latest is None or not isinstance(sessions, list) or len(sessions) < 2:
        return latest, qualifier
    earlier = 0.0
    for session in sessions[:-1]:
        span = _seconds_between(
            _fmt.parse_time(session.get("started_at")), _fmt.parse_time(session.get("ended_at"))
        )
        earlier += span or 0.0
    return earlier + latest, f"{qualifier} over {len(sessions)} sessions"


def _latest_session(
    state: State, status: str, live: bool, now: Optional[datetime]
) -> Tuple[Optional[float], str]:
    start = _fmt.parse_time(state.get("started_at"))
    if start is None:
        return None, ""
    if status == INTERRUPTED:
        # Nobody will write ended_at: the last recorded change is the best end there is.
        end = _fmt.parse_time(state.get("updated_at"))
        return _seconds_between(start, end), " until interrupted"
    if live and status in ("RUNNING", "PENDING"):
        return _seconds_between(start, _now(now)), " so far"
    end = _fmt.parse_time(state.get("ended_at")) or _fmt.parse_time(state.get("updated_at"))
    return _seconds_between(start, end), ""


def task_run_time(
    task: Mapping[str, Any], live: bool = False, now: Optional[datetime] = None
) -> Tuple[Optional[float], int]:
    """(seconds its attempts ran, number of attempts): the sum of the attempts' own durations,
    so backoff waits and queueing are not counted (3 one-second attempts are 3.0s, not the 10s
    from the first start to the last end). A running attempt counts up to ``now`` when
    ``live``. Without a history, the stored ``duration_sec``."""
    history = [h for h in task.get("history") or () if isinstance(h, Mapping)]
    if not history:
        duration = task.get("duration_sec")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            return float(duration), _attempt_count(task)
        return None, _attempt_count(task)
    seconds, count = _fmt.ran_for(history)
    last = history[-1]
    if live and task.get("status") == "RUNNING" and last.get("ended_at") is None:
        so_far = _seconds_between(_fmt.parse_time(last.get("started_at")), _now(now))
        if so_far is not None:
            seconds = (seconds or 0.0) + so_far
    return seconds, count


def _attempt_count(task: Mapping[str, Any]) -> int:
    value = task.get("attempts")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def outcome(entry: Mapping[str, Any]) -> str:
    """``exit 1``, ``SIGKILL``, ``timed out (idle_timeout_sec), SIGTERM``: how a task or an
    attempt ended; ``-`` when nothing says."""
    parts = []
    if entry.get("timed_out"):
        by = entry.get("timed_out_by")
        parts.append(f"timed out ({by})" if isinstance(by, str) and by else "timed out")
    sig = entry.get("signal")
    code = entry.get("exit_code")
    if _is_int(sig) and sig:
        parts.append(_signal_name(sig))
    elif _is_int(code):
        parts.append(f"exit {code}")
    return ", ".join(parts) or "-"


def root_failure(
    tasks: Mapping[str, Any], task_id: str, memo: Dict[str, Optional[str]]
) -> Optional[str]:
    """The first FAILED (not allowed) or CANCELED task that ``task_id`` descends from through
    tasks SKIPPED with ``dependency_not_success``, in ``depends_on`` order; None if none.

    Iterative (a chain of 10,000 skips is no recursion) and memoized in ``memo``: all the
    skips of a run cost O(tasks + dependencies) together.
    """
    if task_id in memo:
        return memo[task_id]
    stack: List[Tuple[str, int]] = [(task_id, 0)]
    on_stack = {task_id}
    while stack:
        node, index = stack.pop()
        deps = _deps(tasks.get(node))
        found: Optional[str] = None
        descended = False
        while index < len(deps) and found is None:
            dep = deps[index]
            index += 1
            entry = tasks.get(dep)
            if not isinstance(entry, Mapping):
                continue
            status = entry.get("status")
            if status == "CANCELED" or (status == "FAILED" and not entry.get("allowed_failure")):
                found = dep
            elif status == "SKIPPED" and entry.get("skip_reason") == DEPENDENCY_NOT_SUCCESS:
                if dep in memo:
                    found = memo[dep]
                elif dep not in on_stack:  # no cycle in a valid plan; never loop on a bad one
                    stack.extend(((node, index), (dep, 0)))
                    on_stack.add(dep)
                    descended = True
                    break
        if descended:
            continue
        memo[node] = found
        on_stack.discard(node)
        if found is not None:
            # Everything still on the stack is on the path down to this root.
            for waiting, _ in stack:
                memo[waiting] = found
            stack.clear()
    return memo.get(task_id)


def _deps(entry: Any) -> List[str]:
    deps = entry.get("depends_on") if isinstance(entry, Mapping) else None
    return [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []


def reason(
    task_id: str, tasks: Mapping[str, Mapping[str, Any]], memo: Dict[str, Optional[str]]
) -> str:
    """Why a task did not succeed, in one line: skip reason (with its root failure), an
    allowed failure, the error (``not retried: ...`` notes included)."""
    task = tasks[task_id]
    parts = []
    skip = task.get("skip_reason")
    if task.get("allowed_failure") and task.get("status") == "FAILED":
        parts.append("allowed failure")
    if skip == DEPENDENCY_NOT_SUCCESS:
        root = root_failure(tasks, task_id, memo)
        # The root first: it is what a narrow terminal must not cut away.
        parts.append(f"root failure: {root} ({skip})" if root else str(skip))
    elif skip:
        parts.append(str(skip))
    elif task.get("status") == "CANCELED" and not task.get("error"):
        parts.append("canceled")
    if task.get("status") == "RUNNING" and task.get("job_id"):
        # executor slurm: the job, and its state when `orch status` could ask squeue.
        job = f"slurm job {task['job_id']}"
        parts.append(f"{job} {task['slurm_state']}" if task.get("slurm_state") else job)
    if task.get("error"):
        parts.append(str(task["error"]))
    return _fmt.one_line("; ".join(parts))


# --- tables fitted to a width --------------------------------------------------------------


class Column(NamedTuple):
    title: str
    right: bool = False
    shrink_to: int = 0  # > 0: may be cut (with an ellipsis) down to this many columns
    drop: int = 0  # > 0: may be left out, the highest first, when the table does not fit


def _auto_width(width: Optional[int]) -> Optional[int]:
    """``None``: the terminal's width when stdout is a terminal, else no limit; 0: no limit."""
    if width is None:
        return _fmt.terminal_columns(sys.stdout)
    return width if width > 0 else None


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: Optional[int],
    *,
    status_col: Optional[int] = None,
    color: bool = False,
) -> List[str]:
    """Aligned columns two spaces apart, within ``width`` display columns (None: any width).

    The last column is left ragged (no trailing blanks). When the table is too wide,
    shrinkable columns are cut (the last first), then droppable columns left out; a table that
    still does not fit (a very narrow terminal) has its lines cut at the width.
    """
    natural = [_fmt.display_width(c.title) for c in columns]
    ascii_columns = []
    for i, cells in enumerate(zip(*rows)):
        if "".join(cells).isascii():  # a column's widths at C speed (10,000-task runs)
            ascii_columns.append(i)
            natural[i] = max(natural[i], max(map(len, cells)))
        else:
            natural[i] = max(natural[i], max(map(_fmt.display_width, cells)))
    keep = list(range(len(columns)))
    widths = list(natural)
    if width is not None:
        keep, widths = _fit_widths(columns, natural, width)
    lines = [_row([columns[i].title for i in keep], keep, widths, columns, None, False)]
    if len(ascii_columns) == len(columns) and all(widths[i] >= natural[i] for i in keep):
        # Every cell fits its column and is ASCII: one format per row, no cell measured again.
        lines.extend(_ascii_rows(rows, keep, widths, columns, status_col, color))
    else:
        lines.extend(
            _row([r[i] for i in keep], keep, widths, columns, status_col, color) for r in rows
        )
    if width is not None and sum(widths[i] for i in keep) + len(_GAP) * (len(keep) - 1) > width:
        lines = [_fit_painted(line, width) for line in lines]
    return lines


def _fit_widths(
    columns: Sequence[Column], natural: List[int], width: int
) -> Tuple[List[int], List[int]]:
    """Columns to keep and their widths. A cut column keeps at least ``_COMFORT`` columns
    while a column of lesser use can still be left out; after that, down to its floor."""
    keep = list(range(len(columns)))
    droppable = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop > 0)
    while True:
        widths, excess = _shrink(columns, natural, keep, width, comfort=True)
        if excess <= 0:
            return keep, widths
        if not droppable:
            return keep, _shrink(columns, natural, keep, width, comfort=False)[0]
        keep.remove(droppable.pop()[1])


def _shrink(
    columns: Sequence[Column], natural: List[int], keep: List[int], width: int, comfort: bool
) -> Tuple[List[int], int]:
    """Widths with the cuttable columns cut (the last first) toward ``width``; the excess left."""
    widths = list(natural)
    excess = sum(widths[i] for i in keep) + len(_GAP) * (len(keep) - 1) - width
    for i in reversed(keep):
        floor = columns[i].shrink_to
        if excess <= 0 or not floor:
            continue
        if comfort:
            floor = max(floor, min(natural[i], _COMFORT))
        cut = min(excess, max(widths[i] - floor, 0))
        widths[i] -= cut
        excess -= cut
    return widths, excess


def _row(
    cells: Sequence[str],
    keep: Sequence[int],
    widths: Sequence[int],
    columns: Sequence[Column],
    status_col: Optional[int],
    color: bool,
) -> str:
    out = []
    last = len(keep) - 1
    for n, (i, cell) in enumerate(zip(keep, cells)):
        text = _fmt.fit(cell, widths[i])
        padded = text if n == last else _fmt.pad(text, widths[i], columns[i].right)
        if color and i == status_col:
            # Painted after padding, so the colour codes take no width.
            padded = _fmt.paint(text, text, True) + padded[len(text) :]
        out.append(padded)
    return _GAP.join(out).rstrip()


def _ascii_rows(
    rows: Sequence[Sequence[str]],
    keep: Sequence[int],
    widths: Sequence[int],
    columns: Sequence[Column],
    status_col: Optional[int],
    color: bool,
) -> Iterator[str]:
    """What ``_row`` gives for rows of ASCII cells that all fit their column, faster."""
    painted = status_col if color and status_col in keep else None
    specs = []
    for n, i in enumerate(keep):
        if n == len(keep) - 1 or i == painted:
            specs.append("{}")  # the last column is ragged; the painted one is padded below
        else:
            align = ">" if columns[i].right else "<"
            specs.append(f"{{:{align}{widths[i]}}}")
    line = _GAP.join(specs)
    for row in rows:
        cells = [row[i] for i in keep]
        if painted is not None:
            at = keep.index(painted)
            cell = cells[at]
            gap = "" if at == len(keep) - 1 else " " * (widths[painted] - len(cell))
            cells[at] = _fmt.paint(cell, cell, True) + gap
        yield line.format(*cells).rstrip()


def _fit_painted(line: str, width: int) -> str:
    if "\x1b[" not in line:
        return _fmt.fit(line, width)
    return line  # painted lines come from a status column that already fits


# --- orch status ---------------------------------------------------------------------------


_STATUS_COLUMNS = (
    Column("TASK", shrink_to=12),
    Column("STATUS"),
    Column("ATTEMPTS", right=True, drop=4),
    Column("DURATION", right=True, drop=3),
    Column("RESULT", drop=2),
    Column("NOTE", shrink_to=12, drop=1),
)


def render_status(
    state: State,
    owner_alive: bool,
    color: bool,
    *,
    now: Optional[datetime] = None,
    width: Optional[int] = None,
) -> str:
    """`orch status`: a run header, then one aligned line per task. Ends with a newline.

    ``width``: columns to fit in (None: the terminal's when stdout is one; 0: no limit). A
    task's DURATION is the time its attempts ran, not counting waits between them.
    """
    limit = _auto_width(width)
    status = effective_status(state, owner_alive)
    interrupted = status == INTERRUPTED
    tasks = tasks_of(state)
    duration, qualifier = run_duration(state, status, owner_alive, now)
    header = [
        ("run", str(state.get("run_id", "-"))),
        ("status", status),
        ("goal", _fmt.one_line(state["goal"], 200) if state.get("goal") else "-"),
        ("created", format_timestamp(state.get("created_at"))),
        ("started", format_timestamp(state.get("started_at"))),
        ("ended", format_timestamp(state.get("ended_at"))),
        ("duration", format_duration(duration) + (qualifier if duration is not None else "")),
        ("workdir", str(state.get("workdir", "-"))),
        ("tasks", count_summary(display_counts(state, interrupted))),
    ]
    spent = format_cost(state.get("metrics"))
    if spent:
        header.append(("cost", spent))
    if int(state.get("plan_version") or 1) > 1:
        header.append(("plan", f"version {state.get('plan_version')} (resume --plan)"))
    lines = []
    for key, value in header:
        line = f"{key + ':':<10}{value}"
        if limit is not None:
            line = _fmt.fit(line, limit)
        if key == "status":
            line = line.replace(value, _fmt.paint(value, value, color), 1)
        lines.append(line)
    memo: Dict[str, Optional[str]] = {}
    rows = []
    for task_id, task in tasks.items():
        seconds, _ = task_run_time(task, owner_alive, now)
        rows.append(
            (
                _fmt.one_line(task_id),
                _task_display_status(task, interrupted),
                str(task.get("attempts", 0)),
                format_duration(seconds),
                outcome(task),
                reason(task_id, tasks, memo),
            )
        )
    lines.append("")
    lines.extend(fit_table(_STATUS_COLUMNS, rows, limit, status_col=1, color=color))
    return "\n".join(lines) + "\n"


# --- orch list -----------------------------------------------------------------------------


_LIST_COLUMNS = (
    Column("RUN ID"),
    Column("STATUS"),
    Column("START", drop=4),
    Column("DURATION", right=True, drop=3),
    Column("TASKS", drop=2),
    Column("COST", right=True, drop=5),
    Column("GOAL", shrink_to=10, drop=1),
)


def render_list(
    states: Sequence[Tuple[State, bool]],
    *,
    now: Optional[datetime] = None,
    width: Optional[int] = None,
) -> str:
    """`orch list`: one line per run in the order given (the caller sorts, newest first).

    The goal comes last: it is free text (any script, any width), so nothing is aligned after
    it, and it is what gets cut first to fit ``width`` (as for render_status).
    """
    if not states:
        return "no runs\n"
    rows = []
    for state, alive in states:
        status = effective_status(state, alive)
        duration, _ = run_duration(state, status, alive, now)
        rows.append(
            (
                str(state.get("run_id", "-")),
                status,
                _fmt.local_time(state.get("started_at") or state.get("created_at"), _SHORT),
                format_duration(duration),
                count_summary(display_counts(state, status == INTERRUPTED)),
                _short_cost(state.get("metrics")),
                _fmt.one_line(state["goal"], _GOAL_MAX) if state.get("goal") else "",
            )
        )
    columns: Sequence[Column] = _LIST_COLUMNS
    if all(row[5] == "-" for row in rows):
        # No run reported a cost: no column of dashes.
        columns = [c for c in _LIST_COLUMNS if c.title != "COST"]
        rows = [row[:5] + row[6:] for row in rows]  # type: ignore[misc]
    return "\n".join(fit_table(columns, rows, _auto_width(width))) + "\n"


_SHORT = "%Y-%m-%d %H:%M:%S"


def list_entry_json(
    state: State, owner_alive: bool, *, now: Optional[datetime] = None
) -> Dict[str, Any]:
    """One run of `orch list --json`. ``counts`` has every task status, as stored."""
    status = effective_status(state, owner_alive)
    duration, _ = run_duration(state, status, owner_alive, now)
    counts = {name: 0 for name in TASK_STATUSES}
    for name, number in stored_counts(state).items():
        counts[name] = counts.get(name, 0) + number
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
        "metrics": state.get("metrics") or {},
        "sessions": len(state.get("sessions") or []),
    }


def format_cost(numbers: Any) -> str:
    """``$0.0612 (1200 in, 345 out tokens)`` from a metrics object; "" when there is none."""
    if not isinstance(numbers, dict) or not numbers:
        return ""
    parts = []
    cost = numbers.get("cost_usd")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        parts.append(f"${cost:.4f}")
    tokens = [
        f"{int(numbers[key])} {label}"
        for key, label in (("input_tokens", "in"), ("output_tokens", "out"))
        if isinstance(numbers.get(key), (int, float)) and not isinstance(numbers.get(key), bool)
    ]
    if tokens:
        parts.append(f"({', '.join(tokens)} tokens)" if parts else f"{', '.join(tokens)} tokens")
    return " ".join(parts)


def _short_cost(numbers: Any) -> str:
    cost = numbers.get("cost_usd") if isinstance(numbers, dict) else None
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        return f"${cost:.2f}"
    return "-"
