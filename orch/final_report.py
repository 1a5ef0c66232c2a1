"""report/final_report.md: what a person reads after a run, most important first.

The first screen answers "what went wrong": the run's outcome, a summary table (how many tasks
ended how, and which), then each failure with its reason (``exit 1``, ``timed out
(timeout_sec)``, ``not retried: ...``), the last lines of both stdout and stderr of the failed
attempt and the ``orch logs`` command that prints the rest. Then what did not run, grouped by
the root failure it descends from, then the full task table, artifacts, the run's details, and
Mermaid charts of the DAG and of the attempts.

Allowed failures (``allow_failure: true``) and ``condition_not_met`` skips do not make a run
fail (CONTRACT, Release 0.2 run outcome): they are shown as such, never among the failures.

The only files read are log tails: bounded reads from the end of each log, from the failed
attempt's own offset (docs/STATE.md ``history[].stdout_offset``), for at most
``_DETAILED`` tasks, so a run of 10,000 failed tasks still renders in well under a second.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from orch import _fmt, graph
from orch._fmt import format_duration, format_timestamp
from orch.report import (
    CONDITION_NOT_MET,
    DEPENDENCY_NOT_SUCCESS,
    format_cost,
    outcome,
    reason,
    root_failure,
    run_duration,
    task_run_time,
    tasks_of,
)

__all__ = ["render_final_report"]

State = Mapping[str, Any]
# (path, start offset, lines, max bytes) -> cleaned lines; may raise OSError.
ReadTail = Callable[[Optional[str], int, int, int], List[str]]

_TAIL_LINES = 10  # of each stream, per failure
_TAIL_BYTES = 64 * 1024
_LINE_MAX = 1000  # a longer output line (a JSON blob) is cut
_DETAILED = 20  # failures shown with their output; the others are named
_NAMES_MAX = 30  # task names listed in one line before "+N more"
_NOTE_MAX = 120
# Mermaid's defaults (maxTextSize, maxEdges): a bigger diagram renders as an error box on
# GitHub, so the report says why it left the diagram out instead.
_MERMAID_MAX_TEXT = 50_000
_MERMAID_MAX_EDGES = 500
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~&!])")
_BACKTICKS = re.compile(r"`+")
_GANTT_UNSAFE = re.compile(r"[^A-Za-z0-9._\- ]")


def _default_read_tail(path: Optional[str], start: int, lines: int, max_bytes: int) -> List[str]:
    return _fmt.read_tail(path, start, lines, max_bytes, tabs=True)


def render_final_report(
    state: State,
    read_tail: Optional[ReadTail] = None,
    env: Optional[Mapping[str, str]] = None,
) -> str:
    """The Markdown text of report/final_report.md.

    ``read_tail`` reads log tails (default: bounded reads of the real files). ``env`` (only
    ``ORCH_HOME`` is looked at) decides whether the ``orch logs`` hints need ``--home``; by
    default they do unless the run's home is ``.orch`` in its workdir.
    """
    reader = read_tail or _default_read_tail
    tasks = tasks_of(state)
    memo: Dict[str, Optional[str]] = {}
    failed, allowed, canceled = _ran_and_did_not_succeed(tasks)
    if env is None:
        # Read later, from anywhere: --home is left out only for the default home of a shell
        # in the run's workdir.
        env = {"ORCH_HOME": os.path.join(str(state.get("workdir") or "."), ".orch")}
    hint_env = {k: env[k] for k in ("ORCH_HOME",) if k in env}
    blocks = _TaskBlocks(state, reader, hint_env)
    sections = [
        _title(state),
        _summary_table(tasks, memo),
        blocks.section("Failures", failed, ""),
        blocks.section(
            "Canceled while running", canceled, "Stopped by the cancel; their output so far:"
        ),
        _not_run(tasks, memo),
        blocks.section(
            "Allowed failures",
            allowed,
            "These tasks have `allow_failure: true`: they FAILED, but that is not an error "
            "of the run (their dependents ran as after a success).",
        ),
        _task_table(tasks, memo),
        _artifacts(tasks),
        _workspaces(state),
        _details(state),
        _graph_section(state),
        _timeline_section(state),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


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


def _names(ids: Sequence[str], limit: int = _NAMES_MAX, in_table: bool = False) -> str:
    shown = ", ".join(_code(t, in_table) for t in ids[:limit])
    return shown + (f", +{len(ids) - limit} more" if len(ids) > limit else "")


def _rel_to_run(path: Any, run_dir: Any) -> str:
    text = str(path)
    prefix = str(run_dir).rstrip("/") + "/" if run_dir else None
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def _size(n: Any) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable: GiB ends the loop


def _yes_no(value: Any) -> str:
    return "yes" if value else "no"


def _join_cmd(cmd: Any) -> str:
    if isinstance(cmd, (list, tuple)):
        return " ".join(shlex.quote(str(arg)) for arg in cmd)
    return str(cmd)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- what ended how --------------------------------------------------------------------------


Entries = List[Tuple[str, Mapping[str, Any]]]


def _ran_and_did_not_succeed(tasks: Mapping[str, Mapping[str, Any]]) -> Tuple[Entries, ...]:
    """(failures, allowed failures, canceled while running), each first-ended first: in a
    cascade the earliest failure is the likeliest root."""
    failed: Entries = []
    allowed: Entries = []
    canceled: Entries = []
    for task_id, task in tasks.items():
        status = task.get("status")
        if status == "FAILED":
            (allowed if task.get("allowed_failure") else failed).append((task_id, task))
        elif status == "CANCELED" and task.get("history"):
            canceled.append((task_id, task))
    order = {task_id: i for i, task_id in enumerate(tasks)}

    def key(item: Tuple[str, Mapping[str, Any]]) -> Tuple[str, int]:
        return (str(item[1].get("ended_at") or "~"), order[item[0]])

    return sorted(failed, key=key), sorted(allowed, key=key), sorted(canceled, key=key)


def _title(state: State) -> List[str]:
    status = str(state.get("status") or "PENDING")
    duration, qualifier = run_duration(state, status, False, None)
    wall = format_duration(duration) + (qualifier if duration is not None else "")
    lines = [f"# Run {_code(state.get('run_id', '-'), in_table=False)}: {status}", ""]
    spent = format_cost(state.get("metrics"))
    cost = f"; cost {spent}" if spent else ""
    lines.append(f"**{status}**: {_outcome_summary(tasks_of(state))}; wall time {wall}{cost}.")
    if state.get("goal"):
        lines.extend(["", f"Goal: {_md(state['goal'])}"])
    return lines


def _outcome_summary(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """``9/200 ok, 2 failed, 186 skipped, 1 allowed failure, 1 skipped (condition not met)``:
    the counts, with what does not fail a run counted apart."""
    counts: Dict[str, int] = {}
    for task in tasks.values():
        status = str(task.get("status") or "PENDING").lower()
        if status == "failed" and task.get("allowed_failure"):
            status = "allowed failure"
        elif status == "skipped" and task.get("skip_reason") == CONDITION_NOT_MET:
            status = "skipped (condition not met)"
        counts[status] = counts.get(status, 0) + 1
    parts = [f"{counts.pop('success', 0)}/{len(tasks)} ok"]
    order = ("failed", "canceled", "skipped", "running", "pending", "interrupted")
    for name in (*order, *sorted(k for k in counts if k not in order)):
        if counts.get(name):
            parts.append(f"{counts[name]} {name}")
    return ", ".join(parts)


def _summary_table(
    tasks: Mapping[str, Mapping[str, Any]], memo: Dict[str, Optional[str]]
) -> List[str]:
    """One row per way of ending, errors first, each naming its tasks."""
    groups: Dict[str, List[str]] = {}
    by_root: Dict[str, List[str]] = {}
    for task_id, task in tasks.items():
        status = str(task.get("status") or "PENDING")
        skip = task.get("skip_reason")
        if status == "FAILED" and task.get("allowed_failure"):
            status = "FAILED (allowed: not an error)"
        elif status == "SKIPPED" and skip == CONDITION_NOT_MET:
            status = "SKIPPED (condition not met: not an error)"
        elif status == "SKIPPED" and skip == DEPENDENCY_NOT_SUCCESS:
            root = root_failure(tasks, task_id, memo)
            by_root.setdefault(root or "", []).append(task_id)
        groups.setdefault(status, []).append(task_id)
    order = [
        "FAILED",
        "CANCELED",
        "SKIPPED",
        "RUNNING",
        "PENDING",
        "FAILED (allowed: not an error)",
        "SKIPPED (condition not met: not an error)",
        "SUCCESS",
    ]
    rows = []
    for status in order + sorted(s for s in groups if s not in order):
        ids = groups.get(status)
        if not ids:
            continue
        which = "" if status == "SUCCESS" else _names(ids, 10, in_table=True)
        if status == "SKIPPED" and by_root:
            which = "; ".join(
                (f"because of {_code(root)}: " if root else "")
                + f"{len(ids_)} ({_names(ids_, 5, in_table=True)})"
                for root, ids_ in by_root.items()
            )
            rest = len(ids) - sum(len(v) for v in by_root.values())
            if rest:
                which += f"; fail-fast, budget or cancel: {rest}"
        rows.append((status, str(len(ids)), which or "-"))
    return _md_table(("Status", "Tasks", "Which"), "lrl", rows)


class _TaskBlocks:
    """A section with one block per task: its reason, attempts, output tails, logs command."""

    def __init__(self, state: State, read_tail: ReadTail, env: Mapping[str, str]) -> None:
        self._state = state
        self._read = read_tail
        self._env = env
        self._run_id = str(state.get("run_id", "RUN_ID"))
        self._blocked = _blocked_counts(tasks_of(state))

    def section(self, title: str, entries: Entries, intro: str) -> List[str]:
        if not entries:
            return []
        lines = [f"## {title}"]
        if intro:
            lines.extend(["", intro])
        for task_id, task in entries[:_DETAILED]:
            lines.extend(["", *self._block(task_id, task)])
        rest = [task_id for task_id, _ in entries[_DETAILED:]]
        if rest:
            lines.extend(["", f"And {len(rest)} more: {_names(rest)} (see the task table)."])
        return lines

    def _block(self, task_id: str, task: Mapping[str, Any]) -> List[str]:
        history = [h for h in task.get("history") or () if isinstance(h, Mapping)]
        last = history[-1] if history else {}
        why = _reason_text(task)
        lines = [f"### {_code(task_id, in_table=False)}: {_md(why)}", ""]
        seconds, count = task_run_time(task)
        if count:
            numbers = f"attempt {_md(last.get('attempt', count))}"
            if count > 1:
                first = history[0].get("attempt", 1)
                numbers = f"attempts {_md(first)}-{_md(last.get('attempt', count))}"
            lines.append(
                f"- **Ran:** {format_duration(seconds)} in {_plural(count, 'attempt')} "
                f"({numbers}; waits between attempts not counted)"
            )
        blocked = self._blocked.get(task_id)
        if blocked:
            verb = "depends" if blocked == 1 else "depend"
            lines.append(f"- **Blocked:** {_plural(blocked, 'skipped task')} {verb} on it")
        if task.get("cmd"):
            lines.append(f"- **Command:** {_code(_join_cmd(task['cmd']), in_table=False)}")
        home = self._state.get("home")
        command = _fmt.logs_command(self._run_id, task_id, str(home) if home else None, self._env)
        lines.append(f"- **All of its output:** {_code(command, in_table=False)}")
        number = last.get("attempt") if last else None
        for stream, offset in zip(("stdout", "stderr"), _fmt.attempt_offsets(task)):
            lines.extend(["", *self._tail(task, stream, offset, number)])
        if len(history) > 1:
            lines.extend(["", *_attempts_table(history)])
        return lines

    def _tail(self, task: Mapping[str, Any], stream: str, offset: int, number: Any) -> List[str]:
        path = task.get(f"{stream}_path")
        of = f"{stream} (attempt {number})" if number is not None else stream
        try:
            tail = self._read(path, offset, _TAIL_LINES, _TAIL_BYTES)
        except OSError as err:
            return [f"The {_md(of)} could not be read: {_md(err.strerror or err)}."]
        if not tail:
            return [f"Nothing on {_md(of)}."]
        shown = [_fmt.fit(line, _LINE_MAX) for line in tail]
        which = "line" if len(shown) == 1 else f"{len(shown)} lines"
        head = f"Last {which} of {_md(of)}:"
        return [head, "", *_fenced(shown, "text")]


def _reason_text(task: Mapping[str, Any]) -> str:
    """``exit 1``, ``timed out (timeout_sec)``, ``exit 2; not retried: ...``: why it ended."""
    how = outcome(task)
    error = task.get("error")
    if task.get("status") == "CANCELED" and how == "-":
        how = "canceled"
    parts = [p for p in (how if how != "-" else "", _fmt.one_line(error) if error else "") if p]
    return "; ".join(parts) or "no exit code recorded"


def _blocked_counts(tasks: Mapping[str, Mapping[str, Any]]) -> Dict[str, int]:
    memo: Dict[str, Optional[str]] = {}
    counts: Dict[str, int] = {}
    for task_id, task in tasks.items():
        if task.get("status") == "SKIPPED" and task.get("skip_reason") == DEPENDENCY_NOT_SUCCESS:
            root = root_failure(tasks, task_id, memo)
            if root is not None:
                counts[root] = counts.get(root, 0) + 1
    return counts


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
                _md(_fmt.one_line(entry["error"], _NOTE_MAX)) if entry.get("error") else "-",
            )
        )
    return _md_table(("Attempt", "Started", "Ran for", "Result", "Error"), "rlrll", rows)


def _attempt_result(entry: Mapping[str, Any]) -> str:
    if entry.get("canceled"):
        return "canceled"
    if entry.get("ended_at") is None and entry.get("exit_code") is None and not entry.get("signal"):
        return "did not finish"
    return outcome(entry)


# --- what did not run ----------------------------------------------------------------------

_NOT_RUN = {
    "fail_fast": "skipped by `--fail-fast` (never started)",
    "budget_exceeded": "skipped: the budget (`budget.max_cost_usd`) was reached",
    "run_canceled": "canceled before they started",
    CONDITION_NOT_MET: "skipped: their `run_when` condition did not hold (not an error)",
}


def _not_run(tasks: Mapping[str, Mapping[str, Any]], memo: Dict[str, Optional[str]]) -> List[str]:
    """Tasks that never ran, one line per cause: a root failure, fail-fast, a cancel, ..."""
    groups: Dict[Tuple[str, str], List[str]] = {}
    for task_id, task in tasks.items():
        status = task.get("status")
        if status not in ("SKIPPED", "CANCELED") or (status == "CANCELED" and task.get("history")):
            continue
        skip = str(task.get("skip_reason") or ("run_canceled" if status == "CANCELED" else "-"))
        root = ""
        if skip == DEPENDENCY_NOT_SUCCESS:
            root = root_failure(tasks, task_id, memo) or ""
        groups.setdefault((skip, root), []).append(task_id)
    if not groups:
        return []
    lines = ["## Not run", ""]
    for (skip, root), ids in groups.items():
        count = f"**{len(ids)}**"
        if skip == DEPENDENCY_NOT_SUCCESS and root:
            root_task = tasks.get(root) or {}
            how = "was canceled" if root_task.get("status") == "CANCELED" else "failed"
            what = f"skipped because {_code(root, in_table=False)} {how}"
        else:
            what = _NOT_RUN.get(skip, f"skipped ({_code(skip, in_table=False)})")
        lines.append(f"- {count} {what}: {_names(ids)}")
    return lines


# --- the full table, artifacts, details -----------------------------------------------------


def _task_table(
    tasks: Mapping[str, Mapping[str, Any]], memo: Dict[str, Optional[str]]
) -> List[str]:
    rows = []
    for task_id in tasks:
        task = tasks[task_id]
        seconds, _ = task_run_time(task)
        rows.append(
            (
                _code(task_id),
                str(task.get("status") or "PENDING"),
                str(task.get("attempts", 0)),
                format_duration(seconds),
                _md(outcome(task)),
                _md(reason(task_id, tasks, memo)) or "-",
            )
        )
    header = ("Task", "Status", "Attempts", "Duration", "Result", "Note")
    intro = "Duration is the time a task's attempts ran: waits before retries are not counted."
    return ["## Tasks", "", intro, "", *_md_table(header, "llrrll", rows)]


def _artifacts(tasks: Mapping[str, Mapping[str, Any]]) -> List[str]:
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


_WORKSPACES_MAX = 100


def _workspaces(state: State) -> List[str]:
    """workspace: worktree (orch/workspace.py): each task's branch, its head and its
    diffstat against the base, as recorded after the task's last attempt."""
    shown = [(tid, t) for tid, t in tasks_of(state).items() if t.get("branch")]
    if not shown:
        return []
    note = "orch never deletes these branches; `orch clean` removes the worktrees only."
    lines = ["## Workspaces", "", note]
    for task_id, task in shown[:_WORKSPACES_MAX]:
        head = _code(str(task.get("head_commit") or "-")[:12], in_table=False)
        base = _code(str(task.get("base_commit") or "-")[:12], in_table=False)
        lines.extend(["", f"### {_code(task_id, in_table=False)}", ""])
        lines.append(f"- **Branch:** {_code(task['branch'], in_table=False)}")
        lines.append(f"- **Head:** {head} (base {base})")
        if task.get("worktree"):
            where = _rel_to_run(task["worktree"], state.get("run_dir"))
            lines.append(f"- **Worktree:** {_code(where, in_table=False)}")
        if task.get("workspace_error"):
            lines.append(f"- **Workspace error:** {_md(task['workspace_error'])}")
        stat = str(task.get("diffstat") or "").splitlines()
        lines.append("")
        lines.extend(_fenced(stat, "text") if stat else ["No change against the base."])
    if len(shown) > _WORKSPACES_MAX:
        more = len(shown) - _WORKSPACES_MAX
        lines.extend(["", f"... and {more} more (see `orch status --json`)."])
    return lines


def _details(state: State) -> List[str]:
    run_dir = state.get("run_dir")
    items = [
        ("Created", format_timestamp(state.get("created_at"))),
        ("Started", format_timestamp(state.get("started_at"))),
        ("Ended", format_timestamp(state.get("ended_at"))),
        ("Max parallel", _md(state.get("max_parallel", "-"))),
        ("Fail fast", _yes_no(state.get("fail_fast"))),
        ("Workdir", _code(state.get("workdir", "-"), in_table=False)),
        ("Plan", _code(state.get("plan_path", "-"), in_table=False)),
        ("Run directory", _code(run_dir or "-", in_table=False)),
        ("Logs", "`logs/<task>.out.log` and `logs/<task>.err.log` in the run directory"),
    ]
    if state.get("artifacts_dir"):
        items.append(("Artifacts dir", _code(state["artifacts_dir"], in_table=False)))
    if state.get("base_commit"):
        base = f"{state['base_commit']} of {state.get('repository')}"
        items.append(("Base commit", _code(base, in_table=False)))
    return ["## Run", "", *(f"- **{key}:** {value}" for key, value in items)]


# --- Mermaid -------------------------------------------------------------------------------


def _graph_section(state: State) -> List[str]:
    lines = ["## Graph", ""]
    text, edges = _flowchart_lines(tasks_of(state))
    if edges > _MERMAID_MAX_EDGES or _length(text) > _MERMAID_MAX_TEXT:
        command = _code(f"orch graph {state.get('run_id', 'RUN_ID')}", in_table=False)
        lines.append(
            f"Graph omitted: {len(tasks_of(state))} tasks and {edges} dependencies are more "
            f"than Mermaid renders; {command} prints it."
        )
        return lines
    return [*lines, *_fenced(text, "mermaid")]


def _timeline_section(state: State) -> List[str]:
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


def _flowchart_lines(tasks: Mapping[str, Mapping[str, Any]]) -> Tuple[List[str], int]:
    """The same drawing as `orch graph RUN_ID`, from the state alone."""
    nodes = [(task_id, task.get("depends_on") or ()) for task_id, task in tasks.items()]
    statuses = {task_id: str(task.get("status") or "PENDING") for task_id, task in tasks.items()}
    return graph.mermaid_flowchart(nodes, statuses)


def _epoch_ms(value: Any) -> Optional[int]:
    moment = _fmt.parse_time(value)
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
    first: Optional[int] = None
    last: Optional[int] = None
    for task_id, task in tasks_of(state).items():
        section: List[str] = []
        for entry in task.get("history") or ():
            start = _epoch_ms(entry.get("started_at"))
            if start is None:
                continue
            end = _epoch_ms(entry.get("ended_at"))
            running = end is None
            end = max(end if end is not None else (fallback_end or start), start)
            tag = _gantt_tag(entry, running)
            first = start if first is None else min(first, start)
            last = end if last is None else max(last, end)
            # Bar names stay fixed text: a task name may not hold ':' or '#', nor start
            # with a keyword (title, section, click, ...).
            section.append(f"    attempt {entry.get('attempt', '?')} :{tag}a{bars}, {start}, {end}")
            bars += 1
        if section:
            # Older Mermaid ends a section name at ':', '#' or ';'; ids never hold them anyway.
            lines.append(f"    section {_GANTT_UNSAFE.sub('_', str(task_id))}")
            lines.extend(section)
    if first is not None and last is not None and last - first < 60_000:
        # Ticks a fraction of a second apart would all read the same second.
        lines[2] = "    axisFormat %M:%S.%L"
    return lines, bars
