"""Plan loading and validation: YAML text -> immutable ``Plan``, or every problem at once.

Validation walks the parsed document once, collecting a ``Problem`` (file, line, col, task id,
message) for everything wrong; positions come from the parser's marks and are looked up only
when a problem is reported, so a valid 10,000-task plan costs no position lookups.

``defaults`` are checked once (their problems are reported once, at the defaults) and applied
to each task that does not set the key itself; the model holds only effective values.
``describe_task`` / ``describe_plan`` render them for ``orch validate`` and ``--dry-run``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import Any, Callable, Dict, List, Optional, Protocol, Set, Tuple

from orch.errors import PlanError, Problem, YamlError
from orch.graph import find_cycles
from orch.model import RUN_WHEN, Backoff, Plan, RetryRule, SlurmOptions, Task

__all__ = ["describe_plan", "describe_task", "load_plan", "parse_plan"]

_Path = Tuple[Any, ...]

_TOP_KEYS = ("goal", "artifacts_dir", "tasks", "defaults", "pools", "budget", "executor")
_TASK_KEYS = (
    "id",
    "cmd",
    "depends_on",
    "cwd",
    "env",
    "timeout_sec",
    "retries",
    "retry_backoff_sec",
    "outputs",
    # Release 0.2
    "pool",
    "idle_timeout_sec",
    "retry_on",
    "run_when",
    "allow_failure",
    "require_outputs",
    "workspace",
    "worktree_from",
    "metrics",
    "slurm",
)
# Keys a task must set itself: what it is, where it sits in the graph, what it produces.
_NO_DEFAULT = ("id", "depends_on", "outputs")
_DEFAULT_KEYS = tuple(k for k in _TASK_KEYS if k not in _NO_DEFAULT)
_BACKOFF_KEYS = ("initial", "factor", "max", "jitter")
_SLURM_KEYS = ("partition", "account", "cpus", "mem_mb", "time_min", "gres", "extra_args")
_BUDGET_KEYS = ("max_cost_usd",)
_EXECUTORS = ("local", "slurm")
_WORKSPACES = ("worktree",)
_METRICS = ("stdout-json",)
# Names other tools use for the same idea; difflib alone would not connect them.
_KEY_ALIASES = {
    "command": "cmd",
    "run": "cmd",
    "args": "cmd",
    "argv": "cmd",
    "deps": "depends_on",
    "needs": "depends_on",
    "requires": "depends_on",
    "after": "depends_on",
    "name": "id",
    "workdir": "cwd",
    "working_dir": "cwd",
    "dir": "cwd",
    "environment": "env",
    "max_retries": "retries",
    "backoff": "retry_backoff_sec",
    "retry_backoff": "retry_backoff_sec",
    "retry_delay": "retry_backoff_sec",
    "artifacts": "outputs",
    # Release 0.2, task keys
    "pools": "pool",
    "queue": "pool",
    "resource_group": "pool",
    "concurrency_group": "pool",
    "idle_timeout": "idle_timeout_sec",
    "idle_timeout_s": "idle_timeout_sec",
    "inactivity_timeout": "idle_timeout_sec",
    "no_output_timeout": "idle_timeout_sec",
    "output_timeout": "idle_timeout_sec",
    "retry_if": "retry_on",
    "retry_when": "retry_on",
    "retry_for": "retry_on",
    "retry_policy": "retry_on",
    "retry_on_exit": "retry_on",
    "when": "run_when",
    "run_if": "run_when",
    "if": "run_when",
    "condition": "run_when",
    "trigger_rule": "run_when",
    "continue_on_error": "allow_failure",
    "allow_failures": "allow_failure",
    "allowed_failure": "allow_failure",
    "ignore_failure": "allow_failure",
    "ignore_errors": "allow_failure",
    "can_fail": "allow_failure",
    "optional": "allow_failure",
    "required_outputs": "require_outputs",
    "outputs_required": "require_outputs",
    "require_output": "require_outputs",
    "worktree": "workspace",
    "git_worktree": "workspace",
    "worktree_base": "worktree_from",
    "base_worktree": "worktree_from",
    "worktree_of": "worktree_from",
    "metric": "metrics",
    "cost": "metrics",
    "usage": "metrics",
    "sbatch": "slurm",
    # Release 0.2, top-level keys
    "default": "defaults",
    "task_defaults": "defaults",
    "concurrency": "pools",
    "limits": "pools",
    "max_cost_usd": "budget",
    "max_cost": "budget",
    "cost_limit": "budget",
    "backend": "executor",
    "runner": "executor",
}
_BACKOFF_ALIASES = {
    "base": "initial",
    "start": "initial",
    "delay": "initial",
    "first": "initial",
    "initial_sec": "initial",
    "multiplier": "factor",
    "exponent": "factor",
    "base_factor": "factor",
    "cap": "max",
    "maximum": "max",
    "max_sec": "max",
    "max_delay": "max",
    "limit": "max",
    "random": "jitter",
    "randomize": "jitter",
}
_SLURM_ALIASES = {
    "queue": "partition",
    "part": "partition",
    "project": "account",
    "cpu": "cpus",
    "ncpus": "cpus",
    "cores": "cpus",
    "cpus_per_task": "cpus",
    "mem": "mem_mb",
    "memory": "mem_mb",
    "memory_mb": "mem_mb",
    "mem_mib": "mem_mb",
    "time": "time_min",
    "time_limit": "time_min",
    "walltime": "time_min",
    "minutes": "time_min",
    "gpus": "gres",
    "gpu": "gres",
    "args": "extra_args",
    "extra": "extra_args",
    "sbatch_args": "extra_args",
    "options": "extra_args",
}
_BUDGET_ALIASES = {
    "max_cost": "max_cost_usd",
    "max_usd": "max_cost_usd",
    "cost_usd": "max_cost_usd",
    "usd": "max_cost_usd",
    "limit": "max_cost_usd",
}
_ENUM_ALIASES = {
    "always": "done",
    "finished": "done",
    "completed": "done",
    "complete": "done",
    "any": "done",
    "on_failure": "failure",
    "failed": "failure",
    "on_success": "success",
    "succeeded": "success",
    "json": "stdout-json",
    "git": "worktree",
    "git-worktree": "worktree",
    "slurm-sbatch": "slurm",
    "sbatch": "slurm",
}
# retry_on items that are the kind itself; exit codes and output:REGEX are parsed.
_RETRY_SIMPLE = (
    "any",
    "exit",
    "timeout",
    "idle_timeout",
    "signal",
    "start_error",
    "missing_outputs",
)
_RETRY_ACCEPTED = (
    "accepted: any, exit, an exit code 1..255, exit:N, exit:N-M, timeout, idle_timeout, "
    "signal, start_error, missing_outputs, output:REGEX"
)
_RETRY_ALIASES = {
    "all": "any",
    "*": "any",
    "always": "any",
    "failure": "any",
    "nonzero": "exit",
    "non_zero": "exit",
    "exit_code": "exit",
    "exitcode": "exit",
    "error": "exit",
    "timed_out": "timeout",
    "wall_timeout": "timeout",
    "timeout_sec": "timeout",
    "idle": "idle_timeout",
    "idle_timeout_sec": "idle_timeout",
    "killed": "signal",
    "signaled": "signal",
    "signalled": "signal",
    "crash": "signal",
    "not_found": "start_error",
    "spawn_error": "start_error",
    "missing_output": "missing_outputs",
    "require_outputs": "missing_outputs",
}
_EXIT_ITEM = re.compile(r"exit:([0-9]+)(?:-([0-9]+))?\Z")
# "exit=3", "exit 3", "output::x": one separator shape at a time, so no quadratic backtracking.
_EXIT_TYPO = re.compile(r"(exit|output)(?:\s*=\s*|\s+|::)(\S.*)\Z", re.S)
_MEM_WITH_UNIT = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*([MGT])i?B?\s*", re.I)
_SCOPE_ALIASES = {
    "retry_backoff_sec": _BACKOFF_ALIASES,
    "slurm": _SLURM_ALIASES,
    "budget": _BUDGET_ALIASES,
}
_ID_MAX = 128
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_ID_CHARS = "ASCII letters, digits, '.', '_' and '-'"
# difflib costs one comparison per known id for each unknown reference: bound the total, so a
# plan with thousands of bad references still fails fast (the rest get no suggestion).
_SUGGESTION_BUDGET = 20_000
# Cycle paths can add up to tasks squared in a tangled plan; fixing the first ones comes first.
_MAX_CYCLES = 100
_MAX_PLAN_BYTES = 64 * 1024 * 1024
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PLAIN_TOKEN = re.compile(r"[^\s,\[\]{}#]+")
_INT_TOKEN = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_TOKEN = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)
_SECONDS_WITH_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(s|sec|secs|second|seconds)\s*")
# One piece of a shell word (shlex.split's POSIX rules): plain run, \x, '...', "...", or a
# lone quote or backslash (an error). Matched a piece at a time, never a character at a time.
_SH_PIECE = re.compile(
    r"""([^ \t\r\n'"\\]+)|\\(.)|'([^']*)'|"([^"\\]*(?:\\.[^"\\]*)*)"|(.)""", re.S
)
_SH_DQ_ESCAPE = re.compile(r'\\([\\"])')
_SH_BLANK = " \t\r\n"


class _Marks(Protocol):
    def value(self, path: _Path) -> Tuple[int, int]: ...

    def key(self, path: _Path) -> Tuple[int, int]: ...


def load_plan(path: str) -> Tuple[Plan, bytes]:
    """Read, decode and validate the plan file at ``path``; return it with its exact bytes."""
    raw = _read(path)
    return parse_plan(_decode(raw, path), path), raw


def parse_plan(text: str, source: str) -> Plan:
    """Validate plan text; ``source`` names the file in messages. Raises ``PlanError``."""
    from orch.yamlsub import load_with_marks

    if text.startswith("\ufeff"):
        text = text[1:]  # editors hide the BOM, so columns are counted without it
    try:
        # Lazy: a valid plan looks up no position, so its marks are never built.
        data, marks = load_with_marks(text, lazy=True)
    except YamlError as err:
        raise PlanError([Problem(source, err.line, err.col, None, err.message)]) from None
    if data is None:
        empty = "plan file is empty" if not text.strip() else "plan has no content"
        message = f"{empty}: expected a mapping with a 'tasks' list"
        raise PlanError([Problem(source, None, None, None, message)])
    ctx = _Ctx(source, text, marks)
    plan = _check_plan(ctx, data)
    if ctx.problems or plan is None:
        raise PlanError(ctx.problems)
    return plan


# --- reading the file -------------------------------------------------------------------------


def _file_error(
    path: str, message: str, line: Optional[int] = None, col: Optional[int] = None
) -> PlanError:
    return PlanError([Problem(path, line, col, None, message)])


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        raise _file_error(path, "cannot read plan: no such file") from None
    except IsADirectoryError:
        raise _file_error(path, "cannot read plan: it is a directory, not a file") from None
    except PermissionError:
        raise _file_error(path, "cannot read plan: permission denied") from None
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
        raise _file_error(path, f"cannot read plan: {reason}") from None
    if len(raw) > _MAX_PLAN_BYTES:
        # A plan is text a person wrote; this also stops `orch validate /dev/zero`.
        limit = _MAX_PLAN_BYTES // (1024 * 1024)
        raise _file_error(path, f"cannot read plan: larger than {limit} MiB")
    return raw


def _decode(raw: bytes, path: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _file_error(path, "plan is UTF-16 encoded: save it as UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        lines = _LINE_BREAK.split(raw[: err.start].decode("utf-8"))
        message = f"not valid UTF-8: byte 0x{raw[err.start]:02x} at byte offset {err.start}"
        raise _file_error(path, message, len(lines), len(lines[-1]) + 1) from None


# --- context and message helpers --------------------------------------------------------------


class _Ctx:
    """Where problems accumulate; knows how to locate a path and quote its source token."""

    def __init__(self, source: str, text: str, marks: _Marks) -> None:
        self.source = source
        self.text = text
        self.marks = marks
        self.problems: List[Problem] = []
        self.suggestion_budget = _SUGGESTION_BUDGET
        # Pool names for `pool:` references; None when `pools` is not a mapping.
        self.pools: Optional[List[str]] = []
        self._lines: Optional[List[str]] = None

    def add(self, path: _Path, task_id: Optional[str], message: str, key: bool = False) -> None:
        line, col = self.marks.key(path) if key else self.marks.value(path)
        self.problems.append(Problem(self.source, line, col, task_id, message))

    def source_token(self, path: _Path) -> str:
        """The plain scalar as written at ``path`` (for `quote it ("0x1F")`), or ''."""
        if self._lines is None:
            self._lines = _LINE_BREAK.split(self.text)
        line, col = self.marks.value(path)
        if not 1 <= line <= len(self._lines):
            return ""
        match = _PLAIN_TOKEN.match(self._lines[line - 1], max(col - 1, 0))
        return match.group() if match else ""


def _scalar_text(ctx: _Ctx, path: _Path, value: Any) -> str:
    """A number or bool as the user wrote it when the source agrees, else as YAML would."""
    text = _scalar_text_full(ctx, path, value)
    return text if len(text) <= 40 else text[:40] + "..."


def _scalar_text_full(ctx: _Ctx, path: _Path, value: Any) -> str:
    token = ctx.source_token(path)
    if isinstance(value, bool):
        if token.lower() == str(value).lower():
            return token
        return "true" if value else "false"
    if isinstance(value, int) and _INT_TOKEN.fullmatch(token):
        return token
    if isinstance(value, float) and _FLOAT_TOKEN.fullmatch(token):
        return token
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    return repr(value)


def _quote(text: str, limit: int = 60) -> str:
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def _got(ctx: _Ctx, path: _Path, value: Any) -> str:
    """'got <type> <value>' for messages; never shows a container's content."""
    if value is None:
        return "got null"
    if isinstance(value, bool):
        return f"got boolean {_scalar_text(ctx, path, value)}"
    if isinstance(value, int):
        return f"got integer {_scalar_text(ctx, path, value)}"
    if isinstance(value, float):
        return f"got number {_scalar_text(ctx, path, value)}"
    if isinstance(value, str):
        return f"got string {_quote(value)}" if value else "got an empty string"
    if isinstance(value, list):
        return "got a list"
    if isinstance(value, dict):
        return "got a mapping"
    return f"got {type(value).__name__}"  # pragma: no cover - the parser returns only the above


def _is_scalar_non_string(value: Any) -> bool:
    return isinstance(value, (bool, int, float))


def _not_a_string(ctx: _Ctx, path: _Path, value: Any, what: str, expected: str = "a string") -> str:
    """Message for a non-string where a string belongs; numbers and bools get a quote hint."""
    if _is_scalar_non_string(value):
        return f'{what} must be {expected}: quote it ("{_scalar_text(ctx, path, value)}")'
    return f"{what} must be {expected}, {_got(ctx, path, value)}"


def _show_key(key: Any) -> str:
    if isinstance(key, str):
        return _quote(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return repr(key)


def _suggest(word: str, candidates: List[str]) -> Optional[str]:
    lowered = word.lower()
    for candidate in candidates:
        if candidate.lower() == lowered:
            return candidate
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


# --- keys -------------------------------------------------------------------------------------


def _key_hint(key: Any, allowed: Tuple[str, ...], scope: str) -> str:
    if not isinstance(key, str):
        return f"allowed keys: {', '.join(allowed)}"
    alias = _SCOPE_ALIASES.get(scope, _KEY_ALIASES).get(key.lower())
    if alias in allowed:
        return f"did you mean '{alias}'?"
    if scope == "defaults" and alias in _NO_DEFAULT:
        return f"did you mean '{alias}'? it cannot have a default: set it on each task"
    if scope in ("task", "defaults") and key in _TOP_KEYS:
        return f"'{key}' is a top-level key, not a task key"
    if scope == "top" and key in _DEFAULT_KEYS:
        return f"'{key}' belongs to a task: put it under an entry of 'tasks' or under 'defaults'"
    if scope == "top" and key in _TASK_KEYS:
        return f"'{key}' belongs to a task: put it under an entry of 'tasks'"
    close = _suggest(key, list(allowed))
    if close is not None:
        return f"did you mean '{close}'?"
    return f"allowed keys: {', '.join(allowed)}"


_SCOPE_WORDS = {"top": "top-level key", "task": "key", "defaults": "key"}


def _check_keys(
    ctx: _Ctx,
    path: _Path,
    mapping: Dict[Any, Any],
    allowed: Tuple[str, ...],
    tid: Optional[str],
    scope: str = "task",
) -> None:
    """Report every key of ``mapping`` not in ``allowed``; ``scope`` is "top", "task",
    "defaults", or the name of the key holding a nested mapping ("slurm", ...)."""
    what = _SCOPE_WORDS.get(scope, f"{scope} key")
    for key in mapping:
        if isinstance(key, str) and key in allowed:
            continue
        if scope == "defaults" and key in _NO_DEFAULT:
            message = f"'{key}' cannot have a default: set it on each task"
        else:
            message = f"unknown {what} {_show_key(key)} ({_key_hint(key, allowed, scope)})"
        ctx.add((*path, key), tid, message, key=True)


# --- top level --------------------------------------------------------------------------------


def _check_plan(ctx: _Ctx, data: Any) -> Optional[Plan]:
    if not isinstance(data, dict):
        message = f"top level must be a mapping with a 'tasks' list, {_got(ctx, (), data)}"
        ctx.add((), None, message)
        return None
    _check_keys(ctx, (), data, _TOP_KEYS, None, "top")
    goal = data.get("goal")
    if goal is not None and not isinstance(goal, str):
        ctx.add(("goal",), None, _not_a_string(ctx, ("goal",), goal, "goal"))
    artifacts_dir = None
    if "artifacts_dir" in data:
        artifacts_dir = _check_path_string(ctx, ("artifacts_dir",), data["artifacts_dir"], None)
    pools = _check_pools(ctx, data["pools"]) if "pools" in data else {}
    max_cost = _check_budget(ctx, data["budget"]) if "budget" in data else None
    executor = "local"
    if "executor" in data:
        executor = _check_enum(ctx, ("executor",), data["executor"], None) or executor
    defaults = _check_defaults(ctx, data["defaults"]) if "defaults" in data else _Defaults()
    if "tasks" not in data:
        ctx.add((), None, "missing required key 'tasks' (a non-empty list of tasks)")
        return None
    raw_tasks = data["tasks"]
    if not isinstance(raw_tasks, list) or not raw_tasks:
        got = "got an empty list" if raw_tasks == [] else _got(ctx, ("tasks",), raw_tasks)
        ctx.add(("tasks",), None, f"tasks must be a non-empty list of tasks, {got}")
        return None
    tasks = [_check_task(ctx, index, raw, defaults) for index, raw in enumerate(raw_tasks)]
    _check_unique_ids(ctx, raw_tasks)
    _check_references(ctx, raw_tasks)
    _check_worktrees(ctx, raw_tasks, defaults)
    if ctx.problems:
        return None
    return Plan(
        tasks=tuple(t for t in tasks if t is not None),
        goal=goal,
        artifacts_dir=artifacts_dir,
        source=ctx.source,
        pools=pools or {},
        max_cost_usd=max_cost,
        executor=executor,
    )


def _non_empty_string(
    ctx: _Ctx, path: _Path, value: Any, tid: Optional[str], name: str, what: str
) -> Optional[str]:
    """``value`` if it is a non-empty string, else None with the problem recorded."""
    if not isinstance(value, str):
        ctx.add(path, tid, _not_a_string(ctx, path, value, name, what))
        return None
    if not value:
        ctx.add(path, tid, f"{name} must be {what}, got an empty string")
        return None
    return value


def _check_path_string(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[str]:
    name = str(path[-1])
    text = _non_empty_string(ctx, path, value, tid, name, "a non-empty string")
    if text is None:
        return None
    if "\0" in text:
        ctx.add(path, tid, f"{name} must not contain a NUL character")
        return None
    return text


# --- one task ---------------------------------------------------------------------------------


def _valid_id(value: Any) -> Optional[str]:
    if isinstance(value, str) and len(value) <= _ID_MAX and _ID_RE.match(value):
        return value
    return None


class _Defaults:
    """The checked ``defaults`` mapping: ``values`` by key (each already validated);
    ``broken`` holds the keys whose value was wrong (reported once, at the defaults)."""

    def __init__(self) -> None:
        self.values: Dict[str, Any] = {}
        self.broken: Set[str] = set()


def _check_defaults(ctx: _Ctx, value: Any) -> _Defaults:
    defaults = _Defaults()
    path: _Path = ("defaults",)
    if not isinstance(value, dict):
        message = f"defaults must be a mapping of task keys to values, {_got(ctx, path, value)}"
        ctx.add(path, None, message)
        return defaults
    before = len(ctx.problems)
    _check_keys(ctx, path, value, _DEFAULT_KEYS, None, "defaults")
    for key, check in _TASK_CHECKS:
        if key in value and key not in _NO_DEFAULT:
            count = len(ctx.problems)
            checked = check(ctx, (*path, key), value[key], None)
            if len(ctx.problems) > count:
                defaults.broken.add(key)
            else:
                defaults.values[key] = checked
    # A defaults problem is the plan's, not a task's: say where it comes from.
    for i in range(before, len(ctx.problems)):
        problem = ctx.problems[i]
        ctx.problems[i] = problem._replace(message=f"defaults: {problem.message}")
    return defaults


def _check_task(ctx: _Ctx, index: int, raw: Any, defaults: _Defaults) -> Optional[Task]:
    path: _Path = ("tasks", index)
    if not isinstance(raw, dict):
        message = f"each task must be a mapping with 'id' and 'cmd', {_got(ctx, path, raw)}"
        ctx.add(path, None, message)
        return None
    tid = _valid_id(raw.get("id"))
    before = len(ctx.problems)
    _check_keys(ctx, path, raw, _TASK_KEYS, tid)
    given = ("cmd",) if "cmd" in defaults.values or "cmd" in defaults.broken else ()
    missing = [f"'{key}'" for key in ("id", "cmd") if key not in raw and key not in given]
    if missing:
        keys = "key " + missing[0] if len(missing) == 1 else "keys " + " and ".join(missing)
        ctx.add(path, tid, f"missing required {keys}")
    fields: Dict[str, Any] = {}
    for key, check in _TASK_CHECKS:
        if key in raw:
            fields[key] = check(ctx, (*path, key), raw[key], tid)
    if len(ctx.problems) > before or any(key not in raw for key in defaults.broken):
        return None
    for key, value in defaults.values.items():
        if key not in raw:
            fields[key] = dict(value) if key == "env" else value
        elif key == "env":
            fields[key] = {**value, **fields[key]}  # key by key; the task's own value wins
        # slurm (like every other key) is a whole-mapping default: a task's own `slurm`
        # replaces it entirely, so a task can drop a partition or account it does not want.
    backoff = fields.pop("retry_backoff_sec", None)
    if isinstance(backoff, Backoff):
        fields["backoff"] = backoff
    elif backoff is not None:
        fields["retry_backoff_sec"] = backoff
    return Task(**fields)


def _name_problem(value: str, what: str) -> Optional[str]:
    """The id rule (1..128 chars, alphanumeric first, then [A-Za-z0-9._-]) for a string."""
    if not value:
        return f"{what} must not be empty"
    if len(value) > _ID_MAX:
        return f"{what} must be at most {_ID_MAX} characters, got {len(value)}"
    if not _ID_RE.match(value[0]):
        return f"{what} {_quote(value)} must start with an ASCII letter or digit"
    if not _ID_RE.match(value):
        bad = next(c for c in value if not _ID_RE.match("a" + c))
        return f"{what} {_quote(value)} contains {bad!r}: use only {_ID_CHARS}"
    return None


def _check_id(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[str]:
    if not isinstance(value, str):
        ctx.add(path, None, _not_a_string(ctx, path, value, "id"))
        return None
    problem = _name_problem(value, "id")
    if problem is not None:
        ctx.add(path, None, problem)
        return None
    return value


def _check_cmd(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[Tuple[str, ...]]:
    if isinstance(value, str):
        return _split_cmd(ctx, path, value, tid)
    if not isinstance(value, list):
        if _is_scalar_non_string(value):  # `cmd: true` means the program, not a boolean
            got = f': quote it ("{_scalar_text(ctx, path, value)}")'
        else:
            got = f", {_got(ctx, path, value)}"
        ctx.add(path, tid, f"cmd must be a list of strings or a command string{got}")
        return None
    if not value:
        ctx.add(path, tid, "cmd must not be an empty list")
        return None
    ok = True
    for i, item in enumerate(value):
        message = None
        if not isinstance(item, str):
            message = _not_a_string(ctx, (*path, i), item, f"cmd[{i}]")
        elif "\0" in item:
            message = f"cmd[{i}] must not contain a NUL character"
        elif i == 0 and not item:
            message = "cmd[0] (the program) must not be empty"
        if message is not None:
            ctx.add((*path, i), tid, message)
            ok = False
    return tuple(value) if ok else None


def _split_cmd(ctx: _Ctx, path: _Path, value: str, tid: Optional[str]) -> Optional[Tuple[str, ...]]:
    if "\0" in value:
        ctx.add(path, tid, "cmd must not contain a NUL character")
        return None
    try:
        words = _posix_split(value)
    except ValueError as err:
        reason = str(err).lower()
        ctx.add(path, tid, f"cmd cannot be split like a POSIX shell command line: {reason}")
        return None
    if not words:
        ctx.add(path, tid, "cmd must not be empty")
        return None
    if not words[0]:
        ctx.add(path, tid, "cmd's first word (the program) must not be empty")
        return None
    return tuple(words)


def _posix_split(text: str) -> List[str]:
    """``shlex.split(text)`` in linear time (shlex grows a word one character at a time, which
    is quadratic: a 1 MiB argument took ~30 s); raises ``ValueError`` where shlex does."""
    words: List[str] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _SH_BLANK:
            pos += 1
        if pos == end:
            return words
        parts: List[str] = []
        while pos < end and text[pos] not in _SH_BLANK:
            m = _SH_PIECE.match(text, pos)
            assert m is not None  # the last alternative matches any character
            plain, escaped, single, double, lone = m.groups()
            if lone is not None:
                raise ValueError("no escaped character" if lone == "\\" else "no closing quotation")
            if double is not None:
                parts.append(_SH_DQ_ESCAPE.sub(r"\1", double))
            else:
                parts.append(plain or escaped or single or "")
            pos = m.end()
        words.append("".join(parts))


def _check_depends_on(
    ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]
) -> Optional[Tuple[str, ...]]:
    """Types and repeats only; existence, self-reference and cycles need the whole plan."""
    if not isinstance(value, list):
        got = _got(ctx, path, value)
        hint = f": write [{json.dumps(value)}]" if isinstance(value, str) and value else ""
        ctx.add(path, tid, f"depends_on must be a list of task ids, {got}{hint}")
        return None
    ok = True
    seen = set()
    for i, item in enumerate(value):
        if not isinstance(item, str):
            ctx.add((*path, i), tid, _not_a_string(ctx, (*path, i), item, f"depends_on[{i}]"))
            ok = False
        elif not item:
            ctx.add((*path, i), tid, f"depends_on[{i}] must not be empty")
            ok = False
        elif item in seen:
            ctx.add((*path, i), tid, f"depends_on lists {_quote(item)} more than once")
            ok = False
        else:
            seen.add(item)
    return tuple(value) if ok else None


def _env_name_problem(key: Any) -> Optional[str]:
    if key is None:
        return "env name must not be empty, got null"
    if not isinstance(key, str):
        shown = _show_key(key)
        return f'env name {shown} must be a string: quote it ("{shown}")'
    if not key:
        return "env name must not be empty"
    if "=" in key:
        return f"env name {_quote(key)} must not contain '='"
    if "\0" in key:
        return f"env name {_quote(key)} must not contain a NUL character"
    return None


def _check_env(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[Dict[str, str]]:
    if not isinstance(value, dict):
        ctx.add(path, tid, f"env must be a mapping of names to strings, {_got(ctx, path, value)}")
        return None
    ok = True
    for key, item in value.items():
        kpath = (*path, key)
        name_problem = _env_name_problem(key)
        if name_problem is not None:
            ctx.add(kpath, tid, name_problem, key=True)
            ok = False
        # Never echo a value, not even a number: a PIN or an account id is a secret too.
        if not isinstance(item, str):
            what = f"env value for {_show_key(key)} must be a string"
            if item is None:
                message = f'{what}, got null (write "" for an empty value)'
            elif _is_scalar_non_string(item):
                kind = "a boolean" if isinstance(item, bool) else "a number"
                message = f"{what}, got {kind}: quote it"
            else:
                message = f"{what}, {_got(ctx, kpath, item)}"
            ctx.add(kpath, tid, message)
            ok = False
        elif "\0" in item:
            ctx.add(kpath, tid, f"env value for {_show_key(key)} must not contain a NUL character")
            ok = False
    return dict(value) if ok else None


def _finite(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None (bool, non-number, inf, nan, a huge int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _number_problem(ctx: _Ctx, path: _Path, value: Any, what: str, expected: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{what} must be a finite {expected}, {_got(ctx, path, value)}"
    hint = ""
    if isinstance(value, str):
        if _FLOAT_TOKEN.fullmatch(value) or _INT_TOKEN.fullmatch(value):
            hint = ": remove the quotes"
        else:
            unit = _SECONDS_WITH_UNIT.fullmatch(value)
            if unit:
                hint = f": write {unit.group(1)} (seconds, without a unit)"
    return f"{what} must be a {expected}, {_got(ctx, path, value)}{hint}"


def _number_at_least(
    ctx: _Ctx,
    path: _Path,
    value: Any,
    tid: Optional[str],
    low: float,
    strict: bool,
    what: Optional[str] = None,
) -> Optional[float]:
    """A finite number > ``low`` (``strict``) or >= ``low``, as a float; else report it."""
    what = what or str(path[-1])
    number = _finite(value)
    if number is not None and (number > low if strict else number >= low):
        return number
    expected = f"number {'>' if strict else '>='} {low:g}"
    if number is not None:
        ctx.add(path, tid, f"{what} must be a {expected}, {_got(ctx, path, value)}")
    else:
        ctx.add(path, tid, _number_problem(ctx, path, value, what, expected))
    return None


def _check_timeout(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[float]:
    """timeout_sec and idle_timeout_sec: a finite number > 0."""
    return _number_at_least(ctx, path, value, tid, 0, strict=True)


def _int_at_least(
    ctx: _Ctx, path: _Path, value: Any, tid: Optional[str], low: int, what: str, hint: str = ""
) -> Optional[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return value
    if isinstance(value, str) and value.isdigit():
        hint = ": remove the quotes"
    ctx.add(path, tid, f"{what} must be an integer >= {low}, {_got(ctx, path, value)}{hint}")
    return None


def _check_retries(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[int]:
    return _int_at_least(ctx, path, value, tid, 0, "retries")


def _backoff_item(ctx: _Ctx, path: _Path, value: Any, what: str, tid: Optional[str]) -> bool:
    number = _finite(value)
    if number is not None and number >= 0:
        return True
    if number is not None:
        ctx.add(path, tid, f"{what} must be a number >= 0, {_got(ctx, path, value)}")
    else:
        ctx.add(path, tid, _number_problem(ctx, path, value, what, "number >= 0"))
    return False


def _check_backoff(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Any:
    """A list of numbers or one number (a tuple), or the mapping form (a ``Backoff``)."""
    if isinstance(value, dict):
        return _check_backoff_mapping(ctx, path, value, tid)
    if not isinstance(value, list):
        if not _backoff_item(ctx, path, value, "retry_backoff_sec", tid):
            return None
        return (float(value),)
    if not value:
        ctx.add(path, tid, "retry_backoff_sec must be a number >= 0 or a non-empty list of them")
        return None
    ok = True
    for i, item in enumerate(value):
        ok = _backoff_item(ctx, (*path, i), item, f"retry_backoff_sec[{i}]", tid) and ok
    return tuple(float(v) for v in value) if ok else None


def _check_backoff_mapping(
    ctx: _Ctx, path: _Path, value: Dict[Any, Any], tid: Optional[str]
) -> Optional[Backoff]:
    before = len(ctx.problems)
    _check_keys(ctx, path, value, _BACKOFF_KEYS, tid, "retry_backoff_sec")
    name = "retry_backoff_sec"
    fields: Dict[str, Any] = {}
    meant_initial = "did you mean 'initial'?"
    typo = any(_key_hint(k, _BACKOFF_KEYS, name) == meant_initial for k in value)
    if "initial" not in value and not typo:  # a misspelt initial is reported as such
        message = f"{name} needs 'initial' (the seconds before the first retry)"
        ctx.add(path, tid, message)
    for key, low in (("initial", 0), ("factor", 1), ("max", 0)):
        if key in value:
            what = f"{name}.{key}"
            fields[key] = _number_at_least(ctx, (*path, key), value[key], tid, low, False, what)
    if "jitter" in value:
        fields["jitter"] = _check_bool(ctx, (*path, "jitter"), value["jitter"], tid)
    if len(ctx.problems) > before:
        return None
    return Backoff(**fields)


def _check_bool(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[bool]:
    if isinstance(value, bool):
        return value
    what = ".".join(str(p) for p in path[-2:]) if path[-1] == "jitter" else str(path[-1])
    hint = ""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            hint = ": remove the quotes"
        elif lowered in ("yes", "no", "on", "off", "y", "n"):
            meant = "true" if lowered in ("yes", "on", "y") else "false"
            hint = f" (YAML 1.2 reads {value} as a string): write {meant}"
    ctx.add(path, tid, f"{what} must be true or false, {_got(ctx, path, value)}{hint}")
    return None


_ENUMS: Dict[str, Tuple[str, ...]] = {
    "run_when": RUN_WHEN,
    "workspace": _WORKSPACES,
    "metrics": _METRICS,
    "executor": _EXECUTORS,
}


def _check_enum(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[str]:
    """run_when, workspace, metrics, executor: one of a few words."""
    what = str(path[-1])
    choices = _ENUMS[what]
    if isinstance(value, str) and value in choices:
        return value
    if len(choices) == 1:
        expected = choices[0]
    else:
        expected = ", ".join(choices[:-1]) + " or " + choices[-1]
    message = f"{what} must be {expected}, {_got(ctx, path, value)}"
    if isinstance(value, str) and value:
        close = _ENUM_ALIASES.get(value.lower())
        if close not in choices:
            close = _suggest(value.replace("_", "-"), list(choices))
        if close is not None:
            message += f" (did you mean '{close}'?)"
    ctx.add(path, tid, message)
    return None


def _check_pool(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[str]:
    pool = _non_empty_string(ctx, path, value, tid, "pool", "a pool name")
    if pool is None:
        return None
    known = ctx.pools
    if known is None or pool in known:
        return pool  # a broken `pools` is reported there; do not pile on
    message = f"pool {_quote(pool)} is not defined in pools"
    if not known:
        message = f"pool {_quote(pool)} is not defined: add it to the top-level pools"
        message += f" (pools: {{{pool}: N}})" if _valid_id(pool) else ""
    else:
        close = next((name for name in known if name.lower() == pool.lower()), None)
        if close is None and ctx.suggestion_budget >= len(known):
            ctx.suggestion_budget -= len(known)
            matches = difflib.get_close_matches(pool, list(known), n=1, cutoff=0.6)
            close = matches[0] if matches else None
        if close is not None:
            message += f" (did you mean {_quote(close)}?)"
        elif len(known) <= 10:
            message += f" (defined: {', '.join(known)})"
    ctx.add(path, tid, message)
    return None


def _check_worktree_from(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[str]:
    """Type only; which task it names is checked across tasks (``_check_worktrees``)."""
    return _non_empty_string(ctx, path, value, tid, "worktree_from", "a task id")


def _check_retry_on(
    ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]
) -> Optional[Tuple[RetryRule, ...]]:
    if not isinstance(value, list):
        got = _got(ctx, path, value)
        hint = f": write [{json.dumps(value)}]" if isinstance(value, str) and value else ""
        ctx.add(path, tid, f"retry_on must be a non-empty list of retry kinds, {got}{hint}")
        return None
    if not value:
        message = "retry_on must not be an empty list (leave it out to retry any failure)"
        ctx.add(path, tid, message)
        return None
    rules = [_retry_rule(ctx, (*path, i), item, i, tid) for i, item in enumerate(value)]
    return tuple(r for r in rules if r is not None) if None not in rules else None


def _retry_rule(
    ctx: _Ctx, path: _Path, item: Any, i: int, tid: Optional[str]
) -> Optional[RetryRule]:
    what = f"retry_on[{i}]"
    if isinstance(item, int) and not isinstance(item, bool):
        if 1 <= item <= 255:
            return RetryRule("exit_code", item, item, text=_scalar_text_full(ctx, path, item))
        ctx.add(path, tid, f"{what} must be an exit code 1..255, {_got(ctx, path, item)}")
        return None
    if not isinstance(item, str):
        message = f"{what} must be a retry kind or an exit code 1..255, {_got(ctx, path, item)}"
        if isinstance(item, dict) and len(item) == 1:
            # `[exit: 3]` is a mapping in YAML; "exit:3" (no space, or quoted) is the item.
            key, inner = next(iter(item.items()))
            scalar = isinstance(inner, (str, int)) and not isinstance(inner, bool)
            if key in ("exit", "output") and scalar:
                message += f': quote it ("{key}:{inner}")'
        ctx.add(path, tid, message)
        return None
    problem = _retry_item_problem(item)
    if isinstance(problem, RetryRule):
        return problem
    ctx.add(path, tid, f"{what}{problem}")
    return None


def _retry_item_problem(item: str) -> Any:
    """The ``RetryRule`` for a string item, or the rest of the message after 'retry_on[i]'."""
    if item in _RETRY_SIMPLE:
        return RetryRule(item, text=item)
    shown = _quote(item)
    if item.startswith("exit:"):
        match = _EXIT_ITEM.match(item)
        if match is None:
            return f" {shown}: write exit:N or exit:N-M (exit codes 1..255)"
        low = _small_int(match.group(1))
        high = _small_int(match.group(2)) if match.group(2) is not None else low
        if not (1 <= low <= 255 and 1 <= high <= 255):
            return f" {shown}: exit code must be 1..255"
        if low > high:
            return f" {shown}: the range must go from low to high (exit:{high}-{low})"
        return RetryRule("exit_code", low, high, text=item)
    if item.startswith("output:"):
        pattern = item[len("output:") :]
        if not pattern:
            return f" {shown}: write a regular expression after 'output:'"
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as err:
            return f" {shown}: invalid regular expression: {err}"
        return RetryRule("output", pattern=pattern, text=item)
    if not item:
        return " must not be empty"
    if item.strip().isdigit() and len(item) <= 10:
        return f" {shown}: remove the quotes (an exit code is an integer), or write 'exit:{item}'"
    typo = _EXIT_TYPO.match(item) if len(item) <= 60 else None
    if typo is not None:
        return f": unknown item {shown} (did you mean '{typo.group(1)}:{typo.group(2)}'?)"
    close = _RETRY_ALIASES.get(item.lower()) or _suggest(item, list(_RETRY_SIMPLE))
    if close is not None:
        return f": unknown item {shown} (did you mean '{close}'?)"
    return f": unknown item {shown} ({_RETRY_ACCEPTED})"


def _small_int(digits: str) -> int:
    """``int(digits)``, except that anything over 4 digits is 10000 (int() refuses very long
    digit strings, and only 1..255 matters here)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 4 else 10_000


def _check_slurm(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[SlurmOptions]:
    if not isinstance(value, dict):
        message = f"slurm must be a mapping of sbatch options, {_got(ctx, path, value)}"
        ctx.add(path, tid, message)
        return None
    before = len(ctx.problems)
    _check_keys(ctx, path, value, _SLURM_KEYS, tid, "slurm")
    fields: Dict[str, Any] = {}
    for key in ("partition", "account", "gres"):
        if key in value:
            fields[key] = _slurm_string(ctx, (*path, key), value[key], f"slurm.{key}", tid)
    for key in ("cpus", "mem_mb", "time_min"):
        if key in value:
            item = value[key]
            hint = ""
            unit = _MEM_WITH_UNIT.fullmatch(item) if isinstance(item, str) else None
            if key == "mem_mb" and unit is not None:
                scale = {"m": 1, "g": 1024, "t": 1024 * 1024}[unit.group(2).lower()]
                hint = f": write {round(float(unit.group(1)) * scale)} (megabytes, without a unit)"
            what = f"slurm.{key}"
            fields[key] = _int_at_least(ctx, (*path, key), item, tid, 1, what, hint)
    if "extra_args" in value:
        fields["extra_args"] = _slurm_args(ctx, (*path, "extra_args"), value["extra_args"], tid)
    if len(ctx.problems) > before:
        return None
    return SlurmOptions(**fields)


def _slurm_string(
    ctx: _Ctx, path: _Path, value: Any, what: str, tid: Optional[str]
) -> Optional[str]:
    if not isinstance(value, str):
        ctx.add(path, tid, _not_a_string(ctx, path, value, what))
        return None
    if not value or "\0" in value:
        problem = "be empty" if not value else "contain a NUL character"
        ctx.add(path, tid, f"{what} must not {problem}")
        return None
    return value


def _slurm_args(
    ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]
) -> Optional[Tuple[str, ...]]:
    if not isinstance(value, list):
        got = _got(ctx, path, value)
        hint = f": write [{json.dumps(value)}]" if isinstance(value, str) and value else ""
        ctx.add(path, tid, f"slurm.extra_args must be a list of strings, {got}{hint}")
        return None
    ok = True
    for i, item in enumerate(value):
        ok = _slurm_string(ctx, (*path, i), item, f"slurm.extra_args[{i}]", tid) is not None and ok
    return tuple(value) if ok else None


def _check_outputs(
    ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]
) -> Optional[Tuple[str, ...]]:
    if not isinstance(value, list):
        got = _got(ctx, path, value)
        hint = f": write [{json.dumps(value)}]" if isinstance(value, str) and value else ""
        ctx.add(path, tid, f"outputs must be a list of glob patterns, {got}{hint}")
        return None
    ok = True
    for i, item in enumerate(value):
        ipath = (*path, i)
        message = None
        if not isinstance(item, str):
            message = _not_a_string(ctx, ipath, item, f"outputs[{i}]")
        elif not item:
            message = f"outputs[{i}] must not be empty"
        elif "\0" in item:
            message = f"outputs[{i}] must not contain a NUL character"
        elif item.startswith("/"):
            message = f"outputs[{i}] must be relative to the task's cwd, got {_quote(item)}"
        elif ".." in item.split("/"):
            message = f"outputs[{i}] must not contain a '..' path component, got {_quote(item)}"
        if message is not None:
            ctx.add(ipath, tid, message)
            ok = False
    return tuple(value) if ok else None


_Check = Callable[[_Ctx, _Path, Any, Optional[str]], Any]
_TASK_CHECKS: Tuple[Tuple[str, _Check], ...] = (
    ("id", _check_id),
    ("cmd", _check_cmd),
    ("depends_on", _check_depends_on),
    ("cwd", _check_path_string),
    ("env", _check_env),
    ("timeout_sec", _check_timeout),
    ("retries", _check_retries),
    ("retry_backoff_sec", _check_backoff),
    ("outputs", _check_outputs),
    ("pool", _check_pool),
    ("idle_timeout_sec", _check_timeout),
    ("retry_on", _check_retry_on),
    ("run_when", _check_enum),
    ("allow_failure", _check_bool),
    ("require_outputs", _check_bool),
    ("workspace", _check_enum),
    ("worktree_from", _check_worktree_from),
    ("metrics", _check_enum),
    ("slurm", _check_slurm),
)
assert tuple(key for key, _ in _TASK_CHECKS) == _TASK_KEYS


# --- plan-level keys --------------------------------------------------------------------------


def _check_pools(ctx: _Ctx, value: Any) -> Optional[Dict[str, int]]:
    path: _Path = ("pools",)
    if not isinstance(value, dict):
        message = f"pools must be a mapping of pool names to task limits, {_got(ctx, path, value)}"
        ctx.add(path, None, message)
        ctx.pools = None  # pool references cannot be checked
        return None
    pools: Dict[str, int] = {}
    known: Dict[str, str] = {}
    ok = True
    for name, limit in value.items():
        npath = (*path, name)
        problem = None
        if name is None:
            problem = "pool name must not be empty, got null"
        elif not isinstance(name, str):
            shown = _show_key(name)
            problem = f'pool name {shown} must be a string: quote it ("{shown}")'
        else:
            problem = _name_problem(name, "pool name")
            other = known.get(name.lower())
            if problem is None and other is not None:
                problem = (
                    f"pool name {_quote(name)} clashes with {_quote(other)} "
                    "(pool names must be unique ignoring case)"
                )
            known.setdefault(name.lower(), name)
        if problem is not None:
            ctx.add(npath, None, problem, key=True)
            ok = False
        what = f"pool {_show_key(name)} limit"
        count = _int_at_least(ctx, npath, limit, None, 1, what)
        if count is None:
            ok = False
        elif isinstance(name, str):
            pools[name] = count
    ctx.pools = [name for name in value if isinstance(name, str)]
    return pools if ok else None


def _check_budget(ctx: _Ctx, value: Any) -> Optional[float]:
    path: _Path = ("budget",)
    if not isinstance(value, dict):
        message = f"budget must be a mapping with max_cost_usd, {_got(ctx, path, value)}"
        ctx.add(path, None, message)
        return None
    _check_keys(ctx, path, value, _BUDGET_KEYS, None, "budget")
    if "max_cost_usd" not in value:
        return None
    key_path = (*path, "max_cost_usd")
    what = "budget.max_cost_usd"
    return _number_at_least(ctx, key_path, value["max_cost_usd"], None, 0, True, what)


# --- across tasks -----------------------------------------------------------------------------


def _string_ids(raw_tasks: List[Any]) -> List[Tuple[int, str]]:
    return [
        (i, t["id"])
        for i, t in enumerate(raw_tasks)
        if isinstance(t, dict) and isinstance(t.get("id"), str) and t["id"]
    ]


def _check_unique_ids(ctx: _Ctx, raw_tasks: List[Any]) -> None:
    first: Dict[str, Tuple[int, str]] = {}
    for index, task_id in _string_ids(raw_tasks):
        folded = task_id.lower()
        if folded not in first:
            first[folded] = (index, task_id)
            continue
        other_index, other = first[folded]
        line = ctx.marks.value(("tasks", other_index, "id"))[0]
        if other == task_id:
            message = f"duplicate id {_quote(task_id)} (first used at line {line})"
        else:
            message = (
                f"id {_quote(task_id)} clashes with id {_quote(other)} at line {line} "
                "(ids must be unique ignoring case)"
            )
        ctx.add(("tasks", index, "id"), _valid_id(task_id), message)


def _check_references(ctx: _Ctx, raw_tasks: List[Any]) -> None:
    """Unknown and self dependencies, then cycles over the edges that remain."""
    ids = dict((task_id, index) for index, task_id in reversed(_string_ids(raw_tasks)))
    folded = dict((task_id.lower(), task_id) for task_id in reversed(list(ids)))
    graph: Dict[str, List[str]] = {}
    for index, task_id in _string_ids(raw_tasks):
        deps = raw_tasks[index].get("depends_on")
        if not isinstance(deps, list):
            continue  # a bad depends_on is reported by _check_depends_on
        edges = []
        for j, dep in enumerate(deps):
            if type(dep) is str and dep in ids and dep != task_id:
                edges.append(dep)  # the common case, checked first: a dense plan has many
            elif not isinstance(dep, str) or not dep:
                continue  # reported by _check_depends_on
            elif dep == task_id:
                path = ("tasks", index, "depends_on", j)
                ctx.add(path, _valid_id(task_id), "a task cannot depend on itself")
            else:
                path = ("tasks", index, "depends_on", j)
                ctx.add(path, _valid_id(task_id), _unknown_dep(ctx, dep, ids, folded))
        # A repeated id (reported) keeps only its first task's edges in the graph.
        if ids[task_id] == index:
            graph[task_id] = list(dict.fromkeys(edges))
    cycles = find_cycles(graph, limit=_MAX_CYCLES)
    for number, cycle in enumerate(cycles, 1):
        start = cycle[0]
        where = raw_tasks[ids[start]]["depends_on"].index(cycle[1])
        path = ("tasks", ids[start], "depends_on", where)
        message = "dependency cycle: " + " -> ".join(cycle)
        if number == _MAX_CYCLES:
            message += f" (only the first {_MAX_CYCLES} cycles are listed)"
        ctx.add(path, _valid_id(start), message)


def _unknown_dep(ctx: _Ctx, dep: str, ids: Dict[str, int], folded: Dict[str, str]) -> str:
    message = f"depends_on names unknown task {_quote(dep)}"
    close = folded.get(dep.lower())
    if close is None and ctx.suggestion_budget >= len(ids):
        ctx.suggestion_budget -= len(ids)
        matches = difflib.get_close_matches(dep, list(ids), n=1, cutoff=0.6)
        close = matches[0] if matches else None
    return f"{message} (did you mean {_quote(close)}?)" if close is not None else message


def _effective(raw: Dict[Any, Any], key: str, defaults: _Defaults) -> Tuple[Any, bool]:
    """The raw value of ``key`` for a task after defaults, and whether it is the task's own."""
    if key in raw:
        return raw[key], True
    return defaults.values.get(key), False


def _check_worktrees(ctx: _Ctx, raw_tasks: List[Any], defaults: _Defaults) -> None:
    """worktree_from names a dependency with a worktree, from a task with a worktree."""
    tasks = {task_id: raw_tasks[index] for index, task_id in reversed(_string_ids(raw_tasks))}
    for index, raw in enumerate(raw_tasks):
        if not isinstance(raw, dict):
            continue
        source, own = _effective(raw, "worktree_from", defaults)
        if not isinstance(source, str) or not source:
            continue  # absent, or reported by _check_worktree_from
        tid = _valid_id(raw.get("id"))
        path: _Path = ("tasks", index, "worktree_from") if own else ("tasks", index)
        what = "worktree_from" if own else "worktree_from (from defaults)"
        workspace, _ = _effective(raw, "workspace", defaults)
        deps = raw.get("depends_on", [])
        # None: depends_on is not a list (reported), so membership cannot be judged.
        deps = [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else None
        message = None
        if workspace is None:
            message = f"{what} needs workspace: worktree on this task"
        elif source == raw.get("id"):
            message = f"{what} cannot name the task itself"
        elif source not in tasks:
            message = f"{what} names unknown task {_quote(source)}"
            close = _suggest(source, deps or []) or _suggest(source, list(tasks)[:1000])
            if close is not None:
                message += f" (did you mean {_quote(close)}?)"
        elif deps is not None and source not in deps:
            message = f"{what} names {_quote(source)}, which is not in depends_on: add it there"
        elif deps is not None:
            dep_workspace, _ = _effective(tasks[source], "workspace", defaults)
            if dep_workspace is None:
                message = (
                    f"{what} names {_quote(source)}, which has no worktree: "
                    "set workspace: worktree on it"
                )
        if message is not None:
            ctx.add(path, tid, message)


# --- the effective settings, for `orch validate` and `orch run --dry-run` ---------------------

_BARE = re.compile(r"[^\s,\[\]{}=\"'\\]+\Z")


def _show(text: str) -> str:
    return text if _BARE.match(text) else json.dumps(text, ensure_ascii=False)


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _items(values: Any) -> str:
    return "[" + ", ".join(values) + "]"


def describe_task(task: Task) -> str:
    """``key=value ...`` for every setting of ``task`` that differs from a 0.1 task's default
    (id, cmd and depends_on aside), or ''. env shows key names only: values may be secrets."""
    parts: List[str] = []
    if task.cwd != ".":
        parts.append(f"cwd={_show(task.cwd)}")
    if task.env:
        parts.append("env=" + _items(_show(name) for name in task.env))
    if task.pool is not None:
        parts.append(f"pool={task.pool}")
    if task.timeout_sec is not None:
        parts.append(f"timeout_sec={_num(task.timeout_sec)}")
    if task.idle_timeout_sec is not None:
        parts.append(f"idle_timeout_sec={_num(task.idle_timeout_sec)}")
    if task.retries:
        parts.append(f"retries={task.retries}")
    if task.retry_on:
        parts.append("retry_on=" + _items(_show(rule.text) for rule in task.retry_on))
    if task.backoff is not None:
        b = task.backoff
        fields = [f"initial: {_num(b.initial)}", f"factor: {_num(b.factor)}"]
        fields += [f"max: {_num(b.max)}"] if b.max is not None else []
        fields += ["jitter: true"] if b.jitter else []
        parts.append("retry_backoff_sec={" + ", ".join(fields) + "}")
    elif len(task.retry_backoff_sec) == 1:
        parts.append(f"retry_backoff_sec={_num(task.retry_backoff_sec[0])}")
    elif task.retry_backoff_sec:
        parts.append("retry_backoff_sec=" + _items(_num(v) for v in task.retry_backoff_sec))
    if task.run_when != "success":
        parts.append(f"run_when={task.run_when}")
    if task.allow_failure:
        parts.append("allow_failure=true")
    if task.outputs:
        parts.append("outputs=" + _items(_show(pattern) for pattern in task.outputs))
    if task.require_outputs:
        parts.append("require_outputs=true")
    if task.workspace is not None:
        parts.append(f"workspace={task.workspace}")
    if task.worktree_from is not None:
        parts.append(f"worktree_from={task.worktree_from}")
    if task.metrics is not None:
        parts.append(f"metrics={task.metrics}")
    if task.slurm is not None:
        parts.append("slurm=" + _describe_slurm(task.slurm))
    return " ".join(parts)


def _describe_slurm(slurm: SlurmOptions) -> str:
    fields: List[str] = []
    for key in ("partition", "account", "cpus", "mem_mb", "time_min", "gres"):
        value = getattr(slurm, key)
        if value is not None:
            fields.append(f"{key}: {_show(value) if isinstance(value, str) else value}")
    if slurm.extra_args:
        fields.append("extra_args: " + _items(_show(arg) for arg in slurm.extra_args))
    return "{" + ", ".join(fields) + "}"


def describe_plan(plan: Plan) -> str:
    """``key=value ...`` for the plan-level 0.2 settings that are not their defaults, or ''."""
    parts: List[str] = []
    if plan.executor != "local":
        parts.append(f"executor={plan.executor}")
    if plan.pools:
        parts.append("pools={" + ", ".join(f"{k}: {v}" for k, v in plan.pools.items()) + "}")
    if plan.max_cost_usd is not None:
        parts.append(f"max_cost_usd={_num(plan.max_cost_usd)}")
    return " ".join(parts)
