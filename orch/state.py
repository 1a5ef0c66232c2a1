"""The run / task / attempt state: its typed shape, its initial value, its checks, its JSON.

State is kept as plain dicts (they are what ``json`` reads and writes at C speed), typed for
mypy by the TypedDicts below, and checked at the edges by ``state_problem`` (a whole loaded
state) and ``record_problem`` (one journal record before it is replayed). The schema is
documented in docs/STATE.md; a key means the same thing in state.json, ``status --json``,
``list --json`` and the ORCH_CONTEXT file.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, TypedDict

from orch.layout import RunLayout
from orch.model import Plan, RunStatus, Task, TaskStatus

__all__ = [
    "SCHEMA_VERSION",
    "AttemptState",
    "RunState",
    "TaskState",
    "apply_record",
    "encode_state",
    "initial_run_state",
    "initial_task_state",
    "no_result",
    "record_problem",
    "state_problem",
]

SCHEMA_VERSION = 1


class _Result(TypedDict, total=False):
    """How a task or one of its attempts ended: the same keys, the same meaning, in both."""

    started_at: Optional[str]
    ended_at: Optional[str]
    duration_sec: Optional[float]
    exit_code: Optional[int]
    signal: Optional[int]
    timed_out: bool
    timed_out_by: Optional[str]
    canceled: bool
    error: Optional[str]


class AttemptState(_Result, total=False):
    attempt: int
    pid: Optional[int]
    identity: Optional[str]
    stdout_offset: int
    stderr_offset: int
    job_id: Optional[str]  # executor slurm: the attempt's batch job (present once submitted)
    plan_version: int  # the run's plan version this attempt ran with (absent: 1)
    metrics: Dict[str, float]  # cost and tokens this attempt reported (absent: none)
    metrics_offset: int  # size of the task's ORCH_METRICS file when the attempt began


class TaskState(_Result, total=False):
    status: str
    depends_on: List[str]
    cmd: List[str]
    attempts: int
    skip_reason: Optional[str]
    stdout_path: Optional[str]
    stderr_path: Optional[str]
    artifact_paths: List[str]
    artifacts: List[Dict[str, Any]]
    missing_outputs: List[str]
    artifact_errors: List[str]
    history: List[AttemptState]
    metrics: Dict[str, float]  # summed over attempts: cost_usd, input_tokens, output_tokens, ...
    metrics_errors: int  # metrics lines that could not be read (never fatal)
    # workspace: worktree (present once known): the repository and base it starts from, its
    # worktree and branch, the branch's head after the last attempt, its diffstat against the
    # base, and the last workspace problem (a failed commit, ...), null when none.
    repository: Optional[str]
    base_commit: Optional[str]
    worktree: Optional[str]
    branch: Optional[str]
    head_commit: Optional[str]
    diffstat: Optional[str]
    workspace_error: Optional[str]
    job_id: Optional[str]  # executor slurm: the latest attempt's batch job
    # Never stored; added by `orch status` for a RUNNING task's job: Slurm's state (and reason).
    slurm_state: Optional[str]


class RunState(TypedDict, total=False):
    schema_version: int
    run_id: str
    run_dir: str
    status: str
    goal: Optional[str]
    created_at: str
    updated_at: str
    started_at: Optional[str]
    ended_at: Optional[str]
    home: str
    workdir: str
    plan_path: Optional[str]
    artifacts_dir: Optional[str]
    max_parallel: int
    fail_fast: bool
    journal_seq: int
    task_counts: Dict[str, int]  # tasks per stored status, as of the snapshot (for `orch list`)
    plan_version: int  # 1 + the number of `resume --plan` edits (absent: 1)
    sessions: List[Dict[str, Optional[str]]]  # each session's started_at / ended_at
    metrics: Dict[str, float]  # summed over the run's tasks
    # workspace: worktree: the repository of the worktree tasks and its HEAD when the run was
    # created (null when they span several repositories: each task names its own).
    repository: Optional[str]
    base_commit: Optional[str]
    executor: str  # local | slurm: where the run's attempts run (absent: local)
    tasks: Dict[str, TaskState]
    # Never stored; added by readers: `status --json` (effective_status: RUNNING shown as
    # INTERRUPTED when no process owns the run) and `logs --follow` (owner_alive).
    effective_status: str
    owner_alive: bool


# --------------------------------------------------------------------------- initial state


def no_result() -> Dict[str, Any]:
    """The result fields of a task or attempt that has not ended."""
    return {
        "ended_at": None,
        "duration_sec": None,
        "exit_code": None,
        "signal": None,
        "timed_out": False,
        "timed_out_by": None,
        "canceled": False,
        "error": None,
    }


def initial_task_state(task: Task, layout: RunLayout) -> TaskState:
    """A task's state before it ever ran, its logs where ``layout`` puts them."""
    entry: TaskState = {
        "status": TaskStatus.PENDING.value,
        "depends_on": list(task.depends_on),
        "cmd": list(task.cmd),
        "attempts": 0,
        "started_at": None,
        "skip_reason": None,
        "stdout_path": layout.stdout_log(task.id),
        "stderr_path": layout.stderr_log(task.id),
        "artifact_paths": [],  # artifacts, missing_outputs, artifact_errors: once collected
        "history": [],
    }
    entry.update(no_result())  # type: ignore[typeddict-item]
    return entry


def initial_run_state(
    plan: Plan,
    *,
    run_id: str,
    run_dir: str,
    home: str,
    workdir: str,
    plan_path: Optional[str],
    artifacts_dir: Optional[str],
    max_parallel: int,
    fail_fast: bool,
    now: str,
) -> RunState:
    """The state of a run that was just created in ``run_dir``."""
    layout = RunLayout(run_dir)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "run_dir": run_dir,
        "status": RunStatus.PENDING.value,
        "goal": plan.goal,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "ended_at": None,
        "home": home,
        "workdir": workdir,
        "plan_path": plan_path,
        "artifacts_dir": artifacts_dir,
        "max_parallel": max_parallel,
        "fail_fast": fail_fast,
        "journal_seq": 0,
        "tasks": {t.id: initial_task_state(t, layout) for t in plan.tasks},
    }


# --------------------------------------------------------------------------- shape checks
#
# Exact types (``type(v) in accepted``): fast, and a bool is never taken for a number.
# Keys missing from a stored state are allowed (readers use .get for every optional key);
# unknown keys are kept (an additive change of a newer orch of the same schema version).

_NONE = type(None)
_STR = (str,)
_OSTR = (str, _NONE)
_INT = (int,)
_OINT = (int, _NONE)
_ONUM = (int, float, _NONE)
_BOOL = (bool,)
_LIST = (list,)
_ODICT = (dict, _NONE)

_ATTEMPT_TYPES: Dict[str, Tuple[type, ...]] = {
    "attempt": _INT,
    "started_at": _OSTR,
    "ended_at": _OSTR,
    "duration_sec": _ONUM,
    "exit_code": _OINT,
    "signal": _OINT,
    "timed_out": _BOOL,
    "timed_out_by": _OSTR,
    "canceled": _BOOL,
    "error": _OSTR,
    "pid": _OINT,
    "identity": _OSTR,
    "stdout_offset": _INT,
    "stderr_offset": _INT,
    "job_id": _OSTR,
    "plan_version": _INT,
    "metrics": (dict,),
    "metrics_offset": _INT,
}
_TASK_TYPES: Dict[str, Tuple[type, ...]] = {
    "status": _STR,
    "depends_on": _LIST,
    "cmd": _LIST,
    "attempts": _INT,
    "started_at": _OSTR,
    "ended_at": _OSTR,
    "duration_sec": _ONUM,
    "exit_code": _OINT,
    "signal": _OINT,
    "timed_out": _BOOL,
    "timed_out_by": _OSTR,
    "canceled": _BOOL,
    "error": _OSTR,
    "skip_reason": _OSTR,
    "stdout_path": _OSTR,
    "stderr_path": _OSTR,
    "artifact_paths": _LIST,
    "artifacts": _LIST,
    "missing_outputs": _LIST,
    "artifact_errors": _LIST,
    "history": _LIST,
    "metrics": (dict,),
    "metrics_errors": _INT,
    "repository": _OSTR,
    "base_commit": _OSTR,
    "worktree": _OSTR,
    "branch": _OSTR,
    "head_commit": _OSTR,
    "diffstat": _OSTR,
    "workspace_error": _OSTR,
    "job_id": _OSTR,
}
_RUN_TYPES: Dict[str, Tuple[type, ...]] = {
    "schema_version": _INT,
    "run_id": _STR,
    "run_dir": _STR,
    "status": _STR,
    "goal": _OSTR,
    "created_at": _STR,
    "updated_at": _STR,
    "started_at": _OSTR,
    "ended_at": _OSTR,
    "home": _STR,
    "workdir": _STR,
    "plan_path": _OSTR,
    "artifacts_dir": _OSTR,
    "max_parallel": _INT,
    "fail_fast": _BOOL,
    "journal_seq": _INT,
    "task_counts": (dict,),
    "plan_version": _INT,
    "sessions": _LIST,
    "metrics": (dict,),
    "repository": _OSTR,
    "base_commit": _OSTR,
    "executor": _STR,
    "tasks": (dict,),
}


_REQUIRED_RUN = ("run_id", "status", "workdir", "tasks")
_REQUIRED_TASK = ("status", "attempts", "history")
_TASK_STATUSES = frozenset(s.value for s in TaskStatus)
_RUN_STATUSES = frozenset(s.value for s in RunStatus if s is not RunStatus.INTERRUPTED)


def _fields_problem(fields: Any, types: Mapping[str, Tuple[type, ...]], what: str) -> Optional[str]:
    if type(fields) is not dict:
        return f"{what} is not an object"
    for key, value in fields.items():
        accepted = types.get(key)
        if accepted is not None and type(value) not in accepted:
            return f"{what}: {key} has the wrong type"
    return None


def _task_problem(task_id: str, task: Any, partial: bool) -> Optional[str]:
    what = f"task {task_id!r}"
    problem = _fields_problem(task, _TASK_TYPES, what)
    if problem:
        return problem
    if not partial and any(key not in task for key in _REQUIRED_TASK):
        return f"{what} is not a task entry"
    if "status" in task and task["status"] not in _TASK_STATUSES:
        return f"{what}: unknown status {str(task['status'])[:20]!r}"
    for entry in task.get("history", ()):
        problem = _fields_problem(entry, _ATTEMPT_TYPES, f"{what}: attempt entry")
        if problem:
            return problem
    return None


def state_problem(state: Any) -> Optional[str]:
    """What makes a decoded state.json unusable, or None: checked before any reader uses it."""
    problem = _fields_problem(state, _RUN_TYPES, "state")
    if problem:
        return problem
    for key in _REQUIRED_RUN:
        if key not in state:
            return f"no {key}"
    if state["status"] not in _RUN_STATUSES:
        return f"unknown run status {str(state['status'])[:20]!r}"
    for task_id, task in state["tasks"].items():
        problem = _task_problem(task_id, task, partial=False)
        if problem:
            return problem
    return None


def record_problem(record: Any, state: Mapping[str, Any]) -> Optional[str]:
    """What makes one journal record unfit to replay over ``state``, or None.

    A record is ``{"n": seq, "r": run fields}`` or ``{"n", "t": task, ...}`` with one or more
    of ``"h"`` (a new attempt), ``"hs"`` (fields of the latest attempt) and ``"s"`` (task
    fields), replayed in that order.
    """
    if type(record) is not dict or type(record.get("n")) is not int:
        return "not a journal record"
    if "r" in record:
        fields = record["r"]
        problem = _fields_problem(fields, _RUN_TYPES, "run fields")
        if problem:
            return problem
        if "tasks" in fields:
            return "a run record cannot replace the tasks"
        if "status" in fields and fields["status"] not in _RUN_STATUSES:
            return "unknown run status"
        return None
    task_id = record.get("t")
    tasks = state.get("tasks") or {}
    if type(task_id) is not str or task_id not in tasks:
        return "record for a task the state does not have"
    if not ("h" in record or "hs" in record or "s" in record):
        return "not a journal record"
    if "h" in record:
        problem = _fields_problem(record["h"], _ATTEMPT_TYPES, "attempt entry")
        if problem:
            return problem
    if "hs" in record:
        if "h" not in record and not tasks[task_id].get("history"):
            return "attempt update before any attempt"
        problem = _fields_problem(record["hs"], _ATTEMPT_TYPES, "attempt entry")
        if problem:
            return problem
    if "s" in record:
        return _task_problem(task_id, record["s"], partial=True)
    return None


def apply_record(state: Dict[str, Any], record: Mapping[str, Any]) -> None:
    """Replay one record checked by ``record_problem``."""
    if "r" in record:
        state.update(record["r"])
        return
    task = state["tasks"][record["t"]]
    if "h" in record:
        task["history"].append(record["h"])
    if "hs" in record:
        task["history"][-1].update(record["hs"])
    if "s" in record:
        task.update(record["s"])


# --------------------------------------------------------------------------- JSON

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_state(state: Mapping[str, Any]) -> Iterator[bytes]:
    """The snapshot a task at a time, ``tasks`` last.

    10,000 tasks make ~8 MB of JSON; encoded in one piece, its text, its bytes and the bytes
    plus newline were all alive at once (+13 MiB peak RSS). No indent: json's C encoder only
    runs without one.
    """
    head = {key: value for key, value in state.items() if key not in ("tasks", "task_counts")}
    # What `orch list` shows of the tasks, ahead of them: it reads the head alone.
    counts: Dict[str, int] = {}
    for entry in state["tasks"].values():
        status = str(entry.get("status"))
        counts[status] = counts.get(status, 0) + 1
    head["task_counts"] = counts
    encode = _ENCODER.encode
    yield encode(head)[:-1].encode() + b',"tasks":{'
    sep = b""
    for task_id, entry in state["tasks"].items():
        yield sep + f"{encode(task_id)}:{encode(entry)}".encode()
        sep = b","
    yield b"}}\n"
