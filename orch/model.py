"""Immutable plan model and the status vocabulary shared by every module.

Every field added in Release 0.2 defaults to the 0.1 behaviour, so a plan that uses none of the
0.2 keys gives exactly the ``Task`` and ``Plan`` values it gave before.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Dict, Optional, Tuple

__all__ = [
    "RETRY_KINDS",
    "RUN_WHEN",
    "Backoff",
    "Plan",
    "RetryRule",
    "RunStatus",
    "SkipReason",
    "SlurmOptions",
    "Task",
    "TaskStatus",
]


class TaskStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELED = "CANCELED"


class RunStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    # Never stored: shown by readers when state says RUNNING but no process owns the run.
    INTERRUPTED = "INTERRUPTED"


class SkipReason(str, Enum):
    DEPENDENCY_NOT_SUCCESS = "dependency_not_success"
    FAIL_FAST = "fail_fast"
    RUN_CANCELED = "run_canceled"
    CONDITION_NOT_MET = "condition_not_met"
    BUDGET_EXCEEDED = "budget_exceeded"


# RetryRule.kind values. "exit_code" is an integer item, "exit:N" or "exit:N-M" (low..high);
# "output" is "output:REGEX" (pattern); the others are the item itself.
RETRY_KINDS = (
    "any",
    "exit",
    "exit_code",
    "timeout",
    "idle_timeout",
    "signal",
    "start_error",
    "missing_outputs",
    "output",
)
RUN_WHEN = ("success", "done", "failure")


@dataclass(frozen=True)
class RetryRule:
    """One ``retry_on`` item. ``text`` is the item as the user wrote it (``75``, ``exit:3-5``,
    ``output:rate.?limit``), for messages such as ``not retried: exit 2 is not in retry_on``;
    it takes no part in equality."""

    kind: str
    low: int = 0  # exit_code: the codes low..high (both 1..255)
    high: int = 0
    pattern: Optional[str] = None  # output: a Python regular expression (known to compile)
    text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.text:
            object.__setattr__(self, "text", self._canonical_text())

    def _canonical_text(self) -> str:
        if self.kind == "exit_code":
            return f"exit:{self.low}" if self.low == self.high else f"exit:{self.low}-{self.high}"
        if self.kind == "output":
            return f"output:{self.pattern or ''}"
        return self.kind


@dataclass(frozen=True)
class Backoff:
    """The mapping form of ``retry_backoff_sec``: ``min(max, initial * factor**i)`` seconds
    before attempt ``i + 2``, times a random factor in [0.5, 1] with ``jitter``."""

    initial: float
    factor: float = 2.0
    max: Optional[float] = None
    jitter: bool = False


@dataclass(frozen=True)
class SlurmOptions:
    """A task's ``slurm`` mapping (sbatch options); None means "not given to sbatch"."""

    partition: Optional[str] = None
    account: Optional[str] = None
    cpus: Optional[int] = None
    mem_mb: Optional[int] = None
    time_min: Optional[int] = None
    gres: Optional[str] = None
    extra_args: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    id: str
    cmd: Tuple[str, ...]
    depends_on: Tuple[str, ...] = ()
    cwd: str = "."
    env: Dict[str, str] = field(default_factory=dict)
    timeout_sec: Optional[float] = None
    retries: int = 0
    retry_backoff_sec: Tuple[float, ...] = ()  # the list or one-number form
    outputs: Tuple[str, ...] = ()
    # --- Release 0.2 -----------------------------------------------------------------------
    pool: Optional[str] = None  # a key of Plan.pools
    idle_timeout_sec: Optional[float] = None
    retry_on: Tuple[RetryRule, ...] = ()  # empty: absent, which means [any]
    backoff: Optional[Backoff] = None  # the mapping form of retry_backoff_sec
    run_when: str = "success"  # one of RUN_WHEN
    allow_failure: bool = False
    require_outputs: bool = False
    workspace: Optional[str] = None  # "worktree"
    worktree_from: Optional[str] = None  # a dependency whose workspace is "worktree"
    metrics: Optional[str] = None  # "stdout-json"
    slurm: Optional[SlurmOptions] = None

    def backoff_before(self, attempt: int, rand: Optional[Callable[[], float]] = None) -> float:
        """Seconds to wait before attempt ``attempt`` (2, 3, ...) of one execution.

        ``rand`` (default ``random.random``) draws the jitter, a number in [0, 1]; it is called
        only when ``backoff.jitter`` is set. A wait too large for a float is ``math.inf``
        (only without ``max``).
        """
        if attempt < 2:
            return 0.0
        backoff = self.backoff
        if backoff is None:
            if not self.retry_backoff_sec:
                return 0.0
            index = min(attempt - 2, len(self.retry_backoff_sec) - 1)
            return self.retry_backoff_sec[index]
        if backoff.initial == 0:
            return 0.0
        try:
            wait = backoff.initial * backoff.factor ** (attempt - 2)
        except OverflowError:
            wait = math.inf
        if backoff.max is not None:
            wait = min(backoff.max, wait)
        if backoff.jitter:
            draw = (rand or random.random)()
            wait *= 0.5 + 0.5 * min(max(draw, 0.0), 1.0)
        return wait


@dataclass(frozen=True)
class Plan:
    tasks: Tuple[Task, ...]
    goal: Optional[str] = None
    artifacts_dir: Optional[str] = None
    source: str = "<plan>"
    # --- Release 0.2 -----------------------------------------------------------------------
    pools: Dict[str, int] = field(default_factory=dict)  # pool name -> tasks at once (>= 1)
    max_cost_usd: Optional[float] = None  # budget.max_cost_usd
    executor: str = "local"  # "local" | "slurm"
