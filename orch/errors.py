"""The project's error types.

Every error a user can cause (bad plan, bad argument, unknown run, damaged file) is an
``OrchError``: the CLI prints its message, one line per problem, and exits with its
``exit_code``. Anything else that escapes is a bug, reported by the CLI as exit 1.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

__all__ = ["OrchError", "PlanError", "Problem", "StateError", "UsageError", "YamlError"]


class OrchError(Exception):
    """Bad input the user can fix. ``str(err)`` is the complete message."""

    exit_code = 2


class UsageError(OrchError):
    """Invalid arguments or an unknown run id."""


class StateError(OrchError):
    """A run directory or state file that cannot be used (damaged, newer schema, locked)."""


class YamlError(OrchError):
    """Text outside the YAML subset. ``line`` and ``col`` are 1-based."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(f"line {line}, column {col}: {message}")
        self.line = line
        self.col = col
        self.message = message


class Problem(NamedTuple):
    """One thing wrong with a plan, located as precisely as the source allows."""

    file: str
    line: Optional[int]
    col: Optional[int]
    task_id: Optional[str]
    message: str

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        task = f"task '{self.task_id}': " if self.task_id is not None else ""
        return f"{where}: {task}{self.message}"


def _position_key(p: Problem) -> tuple[int, int, str]:
    return (p.line if p.line is not None else 0, p.col if p.col is not None else 0, p.message)


class PlanError(OrchError):
    """Every problem found in a plan, sorted by position; rendered one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: List[Problem] = sorted(problems, key=_position_key)
        super().__init__("\n".join(p.render() for p in self.problems))
