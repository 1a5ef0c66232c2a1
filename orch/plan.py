"""Plan loading and validation: YAML text -> immutable ``Plan``, or every problem at once.

Validation walks the parsed document once, collecting a ``Problem`` (file, line, col, task id,
message) for everything wrong; positions come from the parser's marks and are looked up only
when a problem is reported, so a valid 10,000-task plan costs no position lookups.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import Any, Dict, List, Optional, Protocol, Tuple

from orch.errors import PlanError, Problem, YamlError
from orch.graph import find_cycles
from orch.model import Plan, Task

__all__ = ["load_plan", "parse_plan"]

_Path = Tuple[Any, ...]

_TOP_KEYS = ("goal", "artifacts_dir", "tasks")
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
)
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
    "artifacts": "outputs",
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
        data, marks = load_with_marks(text)
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


def _key_hint(key: Any, allowed: Tuple[str, ...]) -> str:
    if not isinstance(key, str):
        return f"allowed keys: {', '.join(allowed)}"
    alias = _KEY_ALIASES.get(key.lower())
    if alias in allowed:
        return f"did you mean '{alias}'?"
    if allowed is _TASK_KEYS and key in _TOP_KEYS:
        return f"'{key}' is a top-level key, not a task key"
    if allowed is _TOP_KEYS and key in _TASK_KEYS:
        return f"'{key}' belongs to a task: put it under an entry of 'tasks'"
    close = _suggest(key, list(allowed))
    if close is not None:
        return f"did you mean '{close}'?"
    return f"allowed keys: {', '.join(allowed)}"


def _check_keys(
    ctx: _Ctx, path: _Path, mapping: Dict[Any, Any], allowed: Tuple[str, ...], tid: Optional[str]
) -> None:
    what = "top-level key" if allowed is _TOP_KEYS else "key"
    for key in mapping:
        if not (isinstance(key, str) and key in allowed):
            hint = _key_hint(key, allowed)
            ctx.add((*path, key), tid, f"unknown {what} {_show_key(key)} ({hint})", key=True)


# --- top level --------------------------------------------------------------------------------


def _check_plan(ctx: _Ctx, data: Any) -> Optional[Plan]:
    if not isinstance(data, dict):
        message = f"top level must be a mapping with a 'tasks' list, {_got(ctx, (), data)}"
        ctx.add((), None, message)
        return None
    _check_keys(ctx, (), data, _TOP_KEYS, None)
    goal = data.get("goal")
    if goal is not None and not isinstance(goal, str):
        ctx.add(("goal",), None, _not_a_string(ctx, ("goal",), goal, "goal"))
    artifacts_dir = None
    if "artifacts_dir" in data:
        artifacts_dir = _check_path_string(ctx, ("artifacts_dir",), data["artifacts_dir"], None)
    if "tasks" not in data:
        ctx.add((), None, "missing required key 'tasks' (a non-empty list of tasks)")
        return None
    raw_tasks = data["tasks"]
    if not isinstance(raw_tasks, list) or not raw_tasks:
        got = "got an empty list" if raw_tasks == [] else _got(ctx, ("tasks",), raw_tasks)
        ctx.add(("tasks",), None, f"tasks must be a non-empty list of tasks, {got}")
        return None
    tasks = [_check_task(ctx, index, raw) for index, raw in enumerate(raw_tasks)]
    _check_unique_ids(ctx, raw_tasks)
    _check_references(ctx, raw_tasks)
    if ctx.problems:
        return None
    return Plan(
        tasks=tuple(t for t in tasks if t is not None),
        goal=goal,
        artifacts_dir=artifacts_dir,
        source=ctx.source,
    )


def _check_path_string(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[str]:
    name = str(path[-1])
    if not isinstance(value, str):
        ctx.add(path, tid, _not_a_string(ctx, path, value, name, "a non-empty string"))
        return None
    if not value:
        ctx.add(path, tid, f"{name} must be a non-empty string, got an empty string")
        return None
    if "\0" in value:
        ctx.add(path, tid, f"{name} must not contain a NUL character")
        return None
    return value


# --- one task ---------------------------------------------------------------------------------


def _valid_id(value: Any) -> Optional[str]:
    if isinstance(value, str) and len(value) <= _ID_MAX and _ID_RE.match(value):
        return value
    return None


def _check_task(ctx: _Ctx, index: int, raw: Any) -> Optional[Task]:
    path: _Path = ("tasks", index)
    if not isinstance(raw, dict):
        message = f"each task must be a mapping with 'id' and 'cmd', {_got(ctx, path, raw)}"
        ctx.add(path, None, message)
        return None
    tid = _valid_id(raw.get("id"))
    before = len(ctx.problems)
    _check_keys(ctx, path, raw, _TASK_KEYS, tid)
    missing = [f"'{key}'" for key in ("id", "cmd") if key not in raw]
    if missing:
        keys = "key " + missing[0] if len(missing) == 1 else "keys " + " and ".join(missing)
        ctx.add(path, tid, f"missing required {keys}")
    fields: Dict[str, Any] = {}
    for key, check in _TASK_CHECKS:
        if key in raw:
            fields[key] = check(ctx, (*path, key), raw[key], tid)
    if len(ctx.problems) > before:
        return None
    return Task(**fields)


def _check_id(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[str]:
    if not isinstance(value, str):
        ctx.add(path, None, _not_a_string(ctx, path, value, "id"))
        return None
    problem = None
    if not value:
        problem = "id must not be empty"
    elif len(value) > _ID_MAX:
        problem = f"id must be at most {_ID_MAX} characters, got {len(value)}"
    elif not _ID_RE.match(value[0]):
        problem = f"id {_quote(value)} must start with an ASCII letter or digit"
    elif tid is None:
        bad = next(c for c in value if not _ID_RE.match("a" + c))
        problem = f"id {_quote(value)} contains {bad!r}: use only {_ID_CHARS}"
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


def _check_timeout(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[float]:
    number = _finite(value)
    if number is not None and number > 0:
        return number
    if number is not None:
        ctx.add(path, tid, f"timeout_sec must be a number > 0, {_got(ctx, path, value)}")
    else:
        ctx.add(path, tid, _number_problem(ctx, path, value, "timeout_sec", "number > 0"))
    return None


def _check_retries(ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]) -> Optional[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    hint = ": remove the quotes" if isinstance(value, str) and value.isdigit() else ""
    ctx.add(path, tid, f"retries must be an integer >= 0, {_got(ctx, path, value)}{hint}")
    return None


def _backoff_item(ctx: _Ctx, path: _Path, value: Any, what: str, tid: Optional[str]) -> bool:
    number = _finite(value)
    if number is not None and number >= 0:
        return True
    if number is not None:
        ctx.add(path, tid, f"{what} must be a number >= 0, {_got(ctx, path, value)}")
    else:
        ctx.add(path, tid, _number_problem(ctx, path, value, what, "number >= 0"))
    return False


def _check_backoff(
    ctx: _Ctx, path: _Path, value: Any, tid: Optional[str]
) -> Optional[Tuple[float, ...]]:
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


_TASK_CHECKS = (
    ("id", _check_id),
    ("cmd", _check_cmd),
    ("depends_on", _check_depends_on),
    ("cwd", _check_path_string),
    ("env", _check_env),
    ("timeout_sec", _check_timeout),
    ("retries", _check_retries),
    ("retry_backoff_sec", _check_backoff),
    ("outputs", _check_outputs),
)


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
    where: Dict[Tuple[str, str], int] = {}
    for index, task_id in _string_ids(raw_tasks):
        deps = raw_tasks[index].get("depends_on")
        if not isinstance(deps, list):
            continue  # a bad depends_on is reported by _check_depends_on
        # A repeated id (reported) keeps only its first task's edges in the graph.
        first = ids[task_id] == index
        edges = graph.setdefault(task_id, [])
        for j, dep in enumerate(deps):
            if not isinstance(dep, str) or not dep:
                continue  # reported by _check_depends_on
            path = ("tasks", index, "depends_on", j)
            if dep == task_id:
                ctx.add(path, _valid_id(task_id), "a task cannot depend on itself")
            elif dep not in ids:
                ctx.add(path, _valid_id(task_id), _unknown_dep(ctx, dep, ids, folded))
            elif first and (task_id, dep) not in where:
                where[task_id, dep] = j
                edges.append(dep)
    cycles = find_cycles(graph, limit=_MAX_CYCLES)
    for number, cycle in enumerate(cycles, 1):
        start = cycle[0]
        path = ("tasks", ids[start], "depends_on", where[start, cycle[1]])
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
