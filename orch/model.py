"""Immutable plan model and the status vocabulary shared by every module."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional, Tuple

__all__ = ["Plan", "RunStatus", "SkipReason", "Task", "TaskStatus"]


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


@dataclass(frozen=True)
class Task:
    id: str
    cmd: Tuple[str, ...]
    depends_on: Tuple[str, ...] = ()
    cwd: str = "."
    env: Dict[str, str] = field(default_factory=dict)
    timeout_sec: Optional[float] = None
    retries: int = 0
    retry_backoff_sec: Tuple[float, ...] = ()
    outputs: Tuple[str, ...] = ()

    def backoff_before(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (2, 3, ...) of one execution."""
        if not self.retry_backoff_sec or attempt < 2:
            return 0.0
        index = min(attempt - 2, len(self.retry_backoff_sec) - 1)
        return self.retry_backoff_sec[index]


@dataclass(frozen=True)
class Plan:
    tasks: Tuple[Task, ...]
    goal: Optional[str] = None
    artifacts_dir: Optional[str] = None
    source: str = "<plan>"
