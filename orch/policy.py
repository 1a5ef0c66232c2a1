"""Pure rules about one ended attempt: did it succeed, how to say how it ended, retry or not.

``retry_on`` items are matched against the failure's kinds; ``output:REGEX`` against the tails
of the attempt's own output (bounded: the caller passes at most the last 64 KiB of each
stream's part of the log written by this attempt).
"""

from __future__ import annotations

import re
import signal
from typing import Callable, List, Optional, Sequence, Tuple

from orch.model import RetryRule, Task
from orch.runner import AttemptResult

__all__ = [
    "OUTPUT_WINDOW",
    "describe",
    "failure_kinds",
    "retry_verdict",
    "succeeded",
]

# How much of the end of each stream an ``output:`` rule searches.
OUTPUT_WINDOW = 64 * 1024


def succeeded(result: AttemptResult, missing_required: Sequence[str] = ()) -> bool:
    return (
        result.exit_code == 0
        and not result.timed_out
        and not result.canceled
        and result.error is None
        and not missing_required
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe(
    result: AttemptResult, task: Optional[Task] = None, missing_required: Sequence[str] = ()
) -> str:
    """How an attempt ended, in a few words: ``exit 1``, ``timed out after 60s
    (idle_timeout_sec)``, ``killed by SIGKILL``, ``required output missing: dist/**``."""
    if result.canceled:
        return "canceled"
    if result.timed_out:
        limit = result.timed_out_by or "timeout_sec"
        seconds = None
        if task is not None:
            seconds = task.idle_timeout_sec if limit == "idle_timeout_sec" else task.timeout_sec
        return f"timed out after {seconds:g}s ({limit})" if seconds else f"timed out ({limit})"
    if result.error:
        return result.error
    if result.signal is not None:
        return f"killed by {_signal_name(result.signal)}"
    if result.exit_code == 0 and missing_required:
        return f"required output missing: {missing_required[0]}"
    return f"exit {result.exit_code}"


def failure_kinds(result: AttemptResult, missing_required: Sequence[str] = ()) -> List[str]:
    """The ``retry_on`` kinds this failure is (``output`` rules are matched separately)."""
    if result.timed_out:
        return ["timeout" if result.timed_out_by != "idle_timeout_sec" else "idle_timeout"]
    if result.start_error:
        return ["start_error"]
    if result.signal is not None:
        return ["signal"]
    if result.exit_code not in (None, 0):
        return ["exit"]
    if missing_required:
        return ["missing_outputs"]
    return []


def _matches(rule: RetryRule, kinds: List[str], result: AttemptResult, tails: Tails) -> bool:
    if rule.kind == "any":
        return True
    if rule.kind == "exit_code":
        code = result.exit_code
        return "exit" in kinds and code is not None and rule.low <= code <= rule.high
    if rule.kind == "output":
        assert rule.pattern is not None
        found = re.compile(rule.pattern)
        return any(found.search(text) for text in tails())
    return rule.kind in kinds


# The attempt's last output: a callable, so that logs are read only when a rule needs them.
Tails = Callable[[], Tuple[str, str]]


def retry_verdict(
    task: Task,
    result: AttemptResult,
    tails: Tails,
    missing_required: Sequence[str] = (),
) -> Tuple[bool, Optional[str]]:
    """(retry?, why not) for a failed attempt, ignoring the retries left (the caller's).

    ``why not`` is the message a person reads: ``not retried: exit 2 is not in retry_on``.
    """
    if result.canceled:
        return False, None
    if not task.retry_on:
        return True, None
    kinds = failure_kinds(result, missing_required)
    if any(_matches(rule, kinds, result, tails) for rule in task.retry_on):
        return True, None
    what = describe(result, task, missing_required)
    if kinds == ["timeout"]:
        what = "timeout"
    elif kinds == ["idle_timeout"]:
        what = "idle timeout"
    elif kinds == ["missing_outputs"]:
        what = "a missing output"
    return False, f"not retried: {what} is not in retry_on"
